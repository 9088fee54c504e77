//! Queries on `api_keys`. Rows hold only the key's public prefix and its SHA-256 hash.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    Set,
};

use super::{Store, StoreResult, entity::api_key, entity::business};

/// A key to insert; `business_id` is `None` for a platform key.
pub struct NewApiKey<'a> {
    pub prefix: &'a str,
    pub hash_hex: &'a str,
    pub label: &'a str,
    pub business_id: Option<i64>,
}

/// Inserts a key through any connection (a transaction included).
pub async fn insert(conn: &impl ConnectionTrait, key: NewApiKey<'_>) -> StoreResult<api_key::Model> {
    let row = api_key::ActiveModel {
        key_prefix: Set(key.prefix.to_owned()),
        key_hash: Set(key.hash_hex.to_owned()),
        label: Set(key.label.to_owned()),
        scope: Set(if key.business_id.is_some() { "business" } else { "platform" }.to_owned()),
        business_id: Set(key.business_id),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
        ..Default::default()
    };
    Ok(row.insert(conn).await?)
}

/// Keys that authenticated recently, by the SHA-256 of the presented key, so that a request
/// skips the database's key lookup (one of an ingest's three reads).
///
/// A key's row never changes except to be revoked, so the cache only has to forget a key the
/// moment any process revokes one. The revoking process empties its own cache before it answers,
/// and the revocation's transaction sends a NOTIFY on [`REVOCATIONS`] (PostgreSQL), which every
/// replica's listener turns into the same. A cache is used only while its listener is connected
/// (a notification sent while it was not is lost), so never on SQLite, where another process
/// (`omega keys revoke`) could revoke a key unheard. Entries also expire after [`KEY_CACHE_TTL`],
/// so that a key in use is read again, and its last use recorded, about once a minute.
pub struct KeyCache {
    entries: moka::sync::Cache<[u8; 32], api_key::Model>,
    /// Bumped by every revocation and every loss of the listener: a lookup that started before
    /// one must not keep what it read.
    generation: AtomicU64,
    trusted: AtomicBool,
}

/// The PostgreSQL channel on which a revocation is announced (payload: the key's id).
pub const REVOCATIONS: &str = "omega_key_revocations";

/// Keys kept in memory at most.
const KEYS_KEPT: u64 = 100_000;

/// How long a cached key is used before it is read again.
const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// A lookup's place in the cache's history, taken before reading the database (see
/// [`KeyCache::keep`]).
#[derive(Clone, Copy)]
pub struct Ticket(u64);

/// A cache not used until [`KeyCache::trust`] says revocations are heard.
impl Default for KeyCache {
    fn default() -> Self {
        Self {
            entries: moka::sync::Cache::builder().max_capacity(KEYS_KEPT).time_to_live(KEY_CACHE_TTL).build(),
            generation: AtomicU64::new(0),
            trusted: AtomicBool::new(false),
        }
    }
}

impl KeyCache {
    pub fn get(&self, presented_hash: &[u8; 32]) -> Option<api_key::Model> {
        if !self.trusted.load(SeqCst) {
            return None;
        }
        self.entries.get(presented_hash)
    }

    pub fn ticket(&self) -> Ticket {
        Ticket(self.generation.load(SeqCst))
    }

    /// Keeps a key read from the database under `ticket`, unless a revocation or a loss of the
    /// listener came after the ticket: what was read may then be stale. (A revocation bumps
    /// the generation before emptying the cache, so an entry inserted here either is emptied
    /// with it or sees the new generation below and is taken out again.)
    pub fn keep(&self, ticket: Ticket, presented_hash: [u8; 32], key: api_key::Model) {
        if !self.trusted.load(SeqCst) || self.generation.load(SeqCst) != ticket.0 {
            return;
        }
        self.entries.insert(presented_hash, key);
        if self.generation.load(SeqCst) != ticket.0 {
            self.entries.invalidate(&presented_hash);
        }
    }

    /// A key was revoked (here or on another replica): forget every key (revocations are rare;
    /// the others are read again at their next use).
    pub fn revoked(&self) {
        self.generation.fetch_add(1, SeqCst);
        self.entries.invalidate_all();
    }

    /// The listener is down: revocations elsewhere would go unheard, so nothing is kept or used.
    pub fn distrust(&self) {
        self.trusted.store(false, SeqCst);
        self.revoked();
    }

    /// The listener is connected again: from now on every revocation is heard.
    pub fn trust(&self) {
        self.revoked();
        self.trusted.store(true, SeqCst);
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache").field("trusted", &self.trusted.load(SeqCst)).finish_non_exhaustive()
    }
}

impl Store {
    /// Unrevoked keys sharing a prefix: the candidates whose hashes the caller's key is
    /// compared against (in constant time, by the domain).
    pub async fn live_api_keys_by_prefix(&self, prefix: &str) -> StoreResult<Vec<api_key::Model>> {
        Ok(api_key::Entity::find()
            .filter(api_key::Column::KeyPrefix.eq(prefix))
            .filter(api_key::Column::RevokedAt.is_null())
            .all(self.keyed())
            .await?)
    }

    /// Whether a key with this hash was ever stored (live or revoked).
    pub async fn api_key_hash_exists(&self, hash_hex: &str) -> StoreResult<bool> {
        Ok(api_key::Entity::find().filter(api_key::Column::KeyHash.eq(hash_hex)).count(self.connection()).await? > 0)
    }

    pub async fn touch_api_key(&self, id: i64, at: DateTime<Utc>) -> StoreResult<()> {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, sea_orm::sea_query::Expr::value(at))
            .filter(api_key::Column::Id.eq(id))
            .exec(self.writer())
            .await?;
        Ok(())
    }

    /// Keys, newest first, optionally of one business: up to `limit` rows with an id below
    /// `before_id` (keyset pagination), and the number of keys matching the filter.
    pub async fn list_api_keys(
        &self,
        business_id: Option<i64>,
        before_id: Option<i64>,
        limit: u64,
    ) -> StoreResult<(Vec<api_key::Model>, u64)> {
        let mut query = api_key::Entity::find();
        if let Some(business_id) = business_id {
            query = query.filter(api_key::Column::BusinessId.eq(business_id));
        }
        let total = query.clone().count(self.connection()).await?;
        if let Some(before_id) = before_id {
            query = query.filter(api_key::Column::Id.lt(before_id));
        }
        let rows = query.order_by_desc(api_key::Column::Id).limit(limit).all(self.connection()).await?;
        Ok((rows, total))
    }

    /// Revokes a key; answers whether a live key was revoked. Every replica's [`KeyCache`]
    /// forgets its keys: this one's before answering, the others' through a NOTIFY sent by the
    /// revocation's own transaction (so it is sent if and only if the revocation commits).
    pub async fn revoke_api_key(&self, id: i64, at: DateTime<Utc>) -> StoreResult<bool> {
        let txn = self.begin().await?;
        let result = api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, sea_orm::sea_query::Expr::value(at))
            .filter(api_key::Column::Id.eq(id))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        if result.rows_affected == 1 && super::dialect::announces_commits(txn.get_database_backend()) {
            txn.execute_raw(super::dialect::announce_statement(REVOCATIONS, id.to_string())).await?;
        }
        txn.commit().await?;
        self.key_cache().revoked();
        Ok(result.rows_affected == 1)
    }

    pub async fn business_exists(&self, business_id: i64) -> StoreResult<bool> {
        Ok(business::Entity::find_by_id(business_id).count(self.connection()).await? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: i64) -> api_key::Model {
        api_key::Model {
            id,
            key_prefix: "omk_test".into(),
            key_hash: String::new(),
            label: "test".into(),
            scope: "platform".into(),
            business_id: None,
            created_at: Utc::now(),
            last_used_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn a_kept_key_is_answered_until_any_revocation() {
        let cache = KeyCache::default();
        cache.trust();
        let ticket = cache.ticket();
        cache.keep(ticket, [1; 32], key(1));
        cache.keep(ticket, [2; 32], key(2));
        assert_eq!(cache.get(&[1; 32]).map(|k| k.id), Some(1));
        cache.revoked();
        assert!(cache.get(&[1; 32]).is_none() && cache.get(&[2; 32]).is_none());
    }

    #[test]
    fn a_lookup_that_began_before_a_revocation_keeps_nothing() {
        let cache = KeyCache::default();
        cache.trust();
        let ticket = cache.ticket();
        // The row was read (live) before the revocation committed and was heard…
        cache.revoked();
        // …so what that read found is not kept.
        cache.keep(ticket, [1; 32], key(1));
        assert!(cache.get(&[1; 32]).is_none());
        // A lookup after it is.
        cache.keep(cache.ticket(), [1; 32], key(1));
        assert!(cache.get(&[1; 32]).is_some());
    }

    #[test]
    fn without_a_listener_nothing_is_kept_or_answered() {
        let cache = KeyCache::default();
        cache.keep(cache.ticket(), [1; 32], key(1));
        assert!(cache.get(&[1; 32]).is_none());
        cache.trust();
        cache.keep(cache.ticket(), [1; 32], key(1));
        assert!(cache.get(&[1; 32]).is_some());
        // The listener is lost: what was kept is not answered, even once it is back.
        let before_loss = cache.ticket();
        cache.distrust();
        assert!(cache.get(&[1; 32]).is_none());
        cache.keep(before_loss, [2; 32], key(2));
        cache.trust();
        assert!(cache.get(&[1; 32]).is_none() && cache.get(&[2; 32]).is_none());
    }
}
