//! Access tokens for browsers: short-lived JWTs (HS256, signed and checked by `jsonwebtoken`)
//! exchanged for an API key, each backed by a session row so that it can be revoked at once on
//! every replica. Revocation is checked on use, cached for at most [`SESSION_CACHE`].

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{
    Error, Result,
    auth::{Caller, Scope},
    directory::Directory,
    values::now,
};
use crate::store::{Store, entity::session, sessions as db};

pub const ISSUER: &str = "omega";
pub const AUDIENCE: &str = "omega-api";
/// How long a session's liveness is trusted without asking the database again.
pub const SESSION_CACHE: Duration = Duration::from_secs(2);
/// How far ahead of this replica's clock a token's `nbf` may be (another replica signed it).
const CLOCK_SKEW_SECS: i64 = 30;

/// The claims of a session token.
#[derive(Debug, Serialize, Deserialize)]
struct SessionClaims {
    iss: String,
    aud: String,
    #[serde(default)]
    iat: i64,
    #[serde(default)]
    nbf: i64,
    exp: i64,
    /// The session row.
    jti: String,
    /// The API key the token was exchanged for.
    kid: i64,
    /// The business the token acts in; none for a platform key's token.
    bid: Option<i64>,
    /// The staff member the token acts for.
    sid: Option<i64>,
}

/// Signing secrets: tokens are signed with the current secret; those signed with the previous
/// one (before a rotation) keep working until they expire.
pub struct TokenSettings {
    signing: EncodingKey,
    /// The current secret's key first, then the previous one's.
    verifying: Vec<DecodingKey>,
    /// Whether the current secret was generated at start (tokens then die with the process).
    pub ephemeral: bool,
    /// Each session's liveness, by `jti`, as last read from the database.
    liveness: moka::sync::Cache<String, bool>,
}

impl std::fmt::Debug for TokenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSettings").field("ephemeral", &self.ephemeral).finish_non_exhaustive()
    }
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self::new(None, None)
    }
}

impl TokenSettings {
    /// With no secret configured a random one is made (fine for one process; set
    /// `OMEGA_TOKEN_SECRET` for several replicas or restarts).
    pub fn new(current: Option<String>, previous: Option<String>) -> Self {
        let ephemeral = current.is_none();
        let current = current.unwrap_or_else(super::auth::generate_key);
        let verifying = std::iter::once(&current)
            .chain(previous.as_ref())
            .map(|secret| DecodingKey::from_secret(secret.as_bytes()))
            .collect();
        Self {
            signing: EncodingKey::from_secret(current.as_bytes()),
            verifying,
            ephemeral,
            liveness: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(SESSION_CACHE).build(),
        }
    }

    /// The claims of a token signed (HS256 only) with one of the secrets, with this issuer and
    /// audience; with `check_time`, also live now.
    fn claims(&self, token: &str, check_time: bool) -> Option<SessionClaims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = 0;
        validation.validate_exp = check_time;
        // `nbf` gets the clock-skew allowance below, which `exp` does not.
        validation.validate_nbf = false;
        let claims = self
            .verifying
            .iter()
            .find_map(|key| jsonwebtoken::decode::<SessionClaims>(token, key, &validation).ok())?
            .claims;
        let now = Utc::now().timestamp();
        if check_time && (claims.exp <= now || claims.nbf > now + CLOCK_SKEW_SECS) {
            return None;
        }
        Some(claims)
    }
}

/// Access tokens and their sessions: issuing, checking, revoking.
#[derive(Clone, Debug)]
pub struct Tokens {
    store: Store,
    settings: Arc<TokenSettings>,
    directory: Directory,
}

/// A token just issued.
pub struct IssuedToken {
    pub token: String,
    pub jti: String,
    pub expires_at: DateTime<Utc>,
}

impl Tokens {
    pub(super) fn new(store: Store, settings: TokenSettings, directory: Directory) -> Self {
        Self { store, settings: Arc::new(settings), directory }
    }

    /// Whether the signing secret was generated at start (tokens then die with the process).
    pub fn ephemeral(&self) -> bool {
        self.settings.ephemeral
    }

    /// Issues a token for an API-key caller, optionally acting for a staff member.
    pub async fn issue_token(
        &self,
        caller: &Caller,
        staff_id: Option<i64>,
        business_id: Option<i64>,
        ttl_seconds: u32,
    ) -> Result<IssuedToken> {
        if caller.session.is_some() {
            return Err(Error::PermissionDenied("a token cannot issue tokens: exchange an API key".into()));
        }
        let ttl = match ttl_seconds {
            0 => 3_600,
            60..=86_400 => ttl_seconds,
            _ => return Err(Error::invalid("ttl_seconds", "must be between 60 and 86400")),
        };
        let business = match (caller.scope, business_id) {
            (Scope::Business(own), None) => Some(own),
            (_, Some(id)) => Some(self.directory.business(caller, id).await?.id),
            (Scope::Platform, None) => None,
        };
        if let Some(staff_id) = staff_id {
            let business = business
                .ok_or_else(|| Error::invalid("business_id", "is required with staff_id and a platform key"))?;
            self.directory.active_staff(business, "staff_id", staff_id).await?;
        }
        let now = now();
        let expires_at = now + chrono::Duration::seconds(i64::from(ttl));
        let jti = uuid::Uuid::new_v4().to_string();
        db::insert(
            self.store.writer(),
            session::Model {
                jti: jti.clone(),
                api_key_id: caller.key_id,
                business_id: business,
                staff_id,
                issued_at: now,
                expires_at,
                revoked_at: None,
            },
        )
        .await?;
        let claims = SessionClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires_at.timestamp(),
            jti: jti.clone(),
            kid: caller.key_id,
            bid: business,
            sid: staff_id,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.settings.signing)
            .map_err(|e| Error::Internal(e.into()))?;
        Ok(IssuedToken { token, jti, expires_at })
    }

    /// Resolves a token to its caller; UNAUTHENTICATED for anything not a live token of ours.
    pub async fn authenticate_token(&self, token: &str) -> Result<Caller> {
        let claims = self.settings.claims(token, true).ok_or(Error::Unauthenticated)?;
        if !self.session_live(&claims.jti).await? {
            return Err(Error::Unauthenticated);
        }
        let scope = match claims.bid {
            Some(business) => Scope::Business(business),
            None => Scope::Platform,
        };
        Ok(Caller { key_id: claims.kid, scope, staff_id: claims.sid, session: Some(claims.jti) })
    }

    async fn session_live(&self, jti: &str) -> Result<bool> {
        if let Some(live) = self.settings.liveness.get(jti) {
            return Ok(live);
        }
        let live = db::is_live(self.store.connection(), jti).await?;
        self.settings.liveness.insert(jti.to_owned(), live);
        Ok(live)
    }

    /// Deletes sessions a day past expiry; answers how many went.
    pub(super) async fn purge_expired_sessions(&self) -> Result<u64> {
        Ok(db::purge_expired(self.store.writer(), now() - chrono::Duration::days(1)).await?)
    }

    /// Revokes the session of `token` (signed by us; expired or not). Unknown, forged, expired
    /// or already revoked tokens are not errors: there is nothing left to revoke.
    pub async fn expire_session(&self, token: &str) -> Result<bool> {
        // Far above any token this API signs (a few hundred bytes): not one of ours.
        if token.len() > 8 * 1024 {
            return Err(Error::invalid("token", "is not a token this API issued (too long)"));
        }
        let Some(claims) = self.settings.claims(token, false) else { return Ok(false) };
        let revoked = db::revoke(self.store.writer(), &claims.jti, now()).await?;
        self.settings.liveness.insert(claims.jti, false);
        Ok(revoked)
    }
}
