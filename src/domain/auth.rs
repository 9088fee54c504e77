//! API keys and the caller they identify.
//!
//! A key is `omk_` followed by 40 random alphanumerics (~238 bits). Only its first
//! [`PREFIX_LEN`] characters (to find candidate rows, and to name the key in listings) and its
//! SHA-256 hash are stored; hashes are compared in constant time. A fast hash is right here:
//! the keys are random, not passwords, so there is nothing to brute-force.

use std::time::Duration;

use chrono::Utc;
use rand::{Rng, distr::Alphanumeric};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{
    Error, Omega, Result,
    pagination::{Page, PageRequest},
    views::ApiKeyView,
};
use sea_orm::ConnectionTrait;

use crate::store::{
    Store, StoreError,
    api_keys::{self, NewApiKey},
    entity::api_key,
};

pub const KEY_TAG: &str = "omk_";
const SECRET_LEN: usize = 40;
/// Characters of a key stored in clear to find it: the tag plus 8 random characters.
pub const PREFIX_LEN: usize = 12;
/// Shortest key accepted at all (bootstrap keys chosen by an operator included).
pub const MIN_KEY_LEN: usize = 32;
const MAX_KEY_LEN: usize = 256;
/// `last_used_at` is refreshed at most this often per key, so that reads stay reads.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// What a caller may see: everything (operators, internal services) or one business.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Platform,
    Business(i64),
}

/// The authenticated caller of a request, available to every handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The API key behind the call (directly, or the key a token was issued for).
    pub key_id: i64,
    pub scope: Scope,
    /// The staff member a token acts for: their identity comes from here, not request bodies.
    pub staff_id: Option<i64>,
    /// The session (token id) when the call came with a token rather than an API key.
    pub session: Option<String>,
}

impl Caller {
    /// A caller that is no API key: a provider webhook (authenticated by its signature) or a
    /// web-chat contact (by its inbox and source id), acting within `scope`.
    pub fn without_key(scope: Scope) -> Self {
        Self { key_id: 0, scope, staff_id: None, session: None }
    }

    /// The API key to credit a change to in the event log; none for a provider webhook
    /// (authenticated by its signature, `key_id` 0).
    pub fn actor_key(&self) -> Option<i64> {
        (self.key_id != 0).then_some(self.key_id)
    }

    /// Platform-only operations (onboarding, key management across businesses).
    pub fn require_platform(&self) -> Result<()> {
        match self.scope {
            Scope::Platform => Ok(()),
            Scope::Business(_) => Err(Error::PermissionDenied("this operation needs a platform key".into())),
        }
    }

    /// Checks that the caller may act on `business_id`. Another business's id answers
    /// NOT_FOUND, so that a business key cannot probe which businesses exist.
    pub fn require_business(&self, business_id: i64) -> Result<i64> {
        match self.scope {
            Scope::Platform => Ok(business_id),
            Scope::Business(own) if own == business_id => Ok(business_id),
            Scope::Business(_) => Err(Error::NotFound("business".into())),
        }
    }
}

/// A freshly created key: the plaintext is shown once and never stored.
pub struct IssuedKey {
    pub plaintext: String,
    pub record: ApiKeyView,
}

fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn prefix_of(key: &str) -> &str {
    // Keys are ASCII (checked before this is called), so byte slicing is safe.
    &key[..PREFIX_LEN.min(key.len())]
}

fn well_formed(key: &str) -> bool {
    (MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

pub fn generate_key() -> String {
    let secret: String = rand::rng().sample_iter(Alphanumeric).take(SECRET_LEN).map(char::from).collect();
    format!("{KEY_TAG}{secret}")
}

/// Resolves a presented key to its caller. Unknown, revoked and malformed keys all answer the
/// same UNAUTHENTICATED, so that responses never tell whether a key exists.
pub async fn authenticate(store: &Store, presented: &str) -> Result<Caller> {
    if !well_formed(presented) {
        return Err(Error::Unauthenticated);
    }
    let presented_hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let cache = store.key_cache();
    let key = match cache.get(&presented_hash) {
        Some(key) => {
            metrics::counter!(crate::metrics::KEY_LOOKUPS, "source" => "cache").increment(1);
            key
        }
        None => {
            metrics::counter!(crate::metrics::KEY_LOOKUPS, "source" => "database").increment(1);
            let ticket = cache.ticket();
            let key = live_key(store, presented, &presented_hash).await?;
            // Only here: a cached key is read again once its entry expires, so its use is
            // still recorded about once a [`TOUCH_INTERVAL`] (its cached copy never is).
            touch_if_stale(store, &key);
            cache.keep(ticket, presented_hash, key.clone());
            key
        }
    };
    caller_of(&key)
}

/// The live key whose hash is `presented_hash`, from the database.
async fn live_key(store: &Store, presented: &str, presented_hash: &[u8; 32]) -> Result<api_key::Model> {
    let candidates = store.live_api_keys_by_prefix(prefix_of(presented)).await?;
    let mut matched: Option<api_key::Model> = None;
    // Every candidate is compared, so timing does not depend on which one matches.
    for candidate in candidates {
        let stored = hex::decode(&candidate.key_hash).unwrap_or_default();
        if bool::from(stored.as_slice().ct_eq(&presented_hash[..])) {
            matched = Some(candidate);
        }
    }
    matched.ok_or(Error::Unauthenticated)
}

/// The caller a live key stands for.
fn caller_of(key: &api_key::Model) -> Result<Caller> {
    let scope = match (key.scope.as_str(), key.business_id) {
        ("platform", None) => Scope::Platform,
        ("business", Some(id)) => Scope::Business(id),
        (scope, business_id) => {
            return Err(Error::Internal(anyhow::anyhow!(
                "api key {} has an inconsistent scope {scope:?} / {business_id:?}",
                key.id
            )));
        }
    };
    Ok(Caller { key_id: key.id, scope, staff_id: None, session: None })
}

/// Records the key's use unless it was recorded less than a [`TOUCH_INTERVAL`] ago.
fn touch_if_stale(store: &Store, key: &api_key::Model) {
    let now = Utc::now();
    let stale = key.last_used_at.is_none_or(|at| (now - at).to_std().unwrap_or_default() >= TOUCH_INTERVAL);
    if stale {
        // Bookkeeping only: it must not slow down or fail the caller's request.
        let (store, id) = (store.clone(), key.id);
        tokio::spawn(async move {
            if let Err(err) = store.touch_api_key(id, now).await {
                tracing::warn!(key_id = id, error = %err, "could not record api key use");
            }
        });
    }
}

/// Creates a key for the platform (`business_id = None`) or for one existing business.
pub async fn create_key(store: &Store, label: &str, business_id: Option<i64>) -> Result<IssuedKey> {
    let label = label.trim();
    if label.is_empty() || label.len() > 200 {
        return Err(Error::invalid("label", "must be 1 to 200 characters"));
    }
    if let Some(id) = business_id
        && !store.business_exists(id).await?
    {
        return Err(Error::NotFound(format!("business {id}")));
    }
    issue_key(store.writer(), label, business_id).await
}

/// Generates and stores a key through `conn` (a transaction, when it is part of a larger change).
pub async fn issue_key(conn: &impl ConnectionTrait, label: &str, business_id: Option<i64>) -> Result<IssuedKey> {
    let plaintext = generate_key();
    let record = api_keys::insert(
        conn,
        NewApiKey { prefix: prefix_of(&plaintext), hash_hex: &sha256_hex(&plaintext), label, business_id },
    )
    .await?;
    Ok(IssuedKey { plaintext, record: record.into() })
}

/// Makes an operator-chosen key (`OMEGA_BOOTSTRAP_API_KEY`) a platform key, once: if its hash
/// was ever stored, even as a since-revoked key, nothing happens, so that a revoked bootstrap
/// key does not come back on the next restart. Safe when several replicas start at once.
/// Answers whether the key was added.
pub async fn ensure_bootstrap_key(store: &Store, key: &str) -> Result<bool> {
    if !well_formed(key) {
        return Err(Error::invalid(
            "OMEGA_BOOTSTRAP_API_KEY",
            format!("must be {MIN_KEY_LEN} to {MAX_KEY_LEN} printable ASCII characters"),
        ));
    }
    let hash_hex = sha256_hex(key);
    if store.api_key_hash_exists(&hash_hex).await? {
        return Ok(false);
    }
    let inserted = api_keys::insert(
        store.writer(),
        NewApiKey { prefix: prefix_of(key), hash_hex: &hash_hex, label: "bootstrap", business_id: None },
    )
    .await;
    match inserted {
        Ok(_) => Ok(true),
        // Another replica inserted it first.
        Err(StoreError::UniqueViolation(_)) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// One page of keys, newest first, optionally of one business.
pub async fn list_keys(store: &Store, business_id: Option<i64>, page: PageRequest<i64>) -> Result<Page<ApiKeyView>> {
    let (rows, total) = store.list_api_keys(business_id, page.after, page.size + 1).await?;
    Ok(Page::from_rows(rows, page.size, total, |key: &api_key::Model| key.id).into_views())
}

pub async fn revoke_key(store: &Store, key_id: i64) -> Result<()> {
    if store.revoke_api_key(key_id, Utc::now()).await? {
        Ok(())
    } else {
        Err(Error::NotFound(format!("live api key {key_id}")))
    }
}

impl Omega {
    /// Creates a key (platform callers only; the api checks the caller's scope).
    pub async fn create_api_key(&self, label: &str, business_id: Option<i64>) -> Result<IssuedKey> {
        create_key(&self.store, label, business_id).await
    }

    pub async fn api_keys(&self, business_id: Option<i64>, page: PageRequest<i64>) -> Result<Page<ApiKeyView>> {
        list_keys(&self.store, business_id, page).await
    }

    pub async fn revoke_api_key(&self, key_id: i64) -> Result<()> {
        revoke_key(&self.store, key_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_long_random_and_well_formed() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_TAG));
        assert_eq!(a.len(), KEY_TAG.len() + SECRET_LEN);
        assert!(well_formed(&a));
        assert_eq!(prefix_of(&a).len(), PREFIX_LEN);
    }

    #[test]
    fn short_or_binary_keys_are_rejected_before_any_lookup() {
        assert!(!well_formed("short"));
        assert!(!well_formed(&"x".repeat(MAX_KEY_LEN + 1)));
        assert!(!well_formed(&format!("{}\u{e9}", "a".repeat(40))));
        assert!(!well_formed(&format!("{} b", "a".repeat(40))));
    }

    #[test]
    fn business_keys_see_only_their_business() {
        let caller = Caller { key_id: 1, scope: Scope::Business(7), staff_id: None, session: None };
        assert_eq!(caller.require_business(7).unwrap(), 7);
        assert!(matches!(caller.require_business(8), Err(Error::NotFound(_))));
        assert!(matches!(caller.require_platform(), Err(Error::PermissionDenied(_))));
        let platform = Caller { key_id: 2, scope: Scope::Platform, staff_id: None, session: None };
        assert_eq!(platform.require_business(8).unwrap(), 8);
        assert!(platform.require_platform().is_ok());
    }
}
