//! Access tokens for browsers: short-lived JWTs exchanged for an API key, each backed by a
//! session row so that it can be revoked at once on every replica. Revocation is checked on
//! use, cached for at most [`SESSION_CACHE`].

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{
    Error, Omega, Result,
    auth::{Caller, Scope},
    jwt,
    values::now,
};
use crate::store::{entity::session, sessions as db};

pub const ISSUER: &str = "omega";
pub const AUDIENCE: &str = "omega-api";
/// How long a session's liveness is trusted without asking the database again.
pub const SESSION_CACHE: Duration = Duration::from_secs(2);

/// Signing secrets: tokens are signed with `current`; those signed with `previous` (before a
/// rotation) keep working until they expire.
pub struct TokenSettings {
    pub current: Vec<u8>,
    pub previous: Option<Vec<u8>>,
    /// Whether `current` was generated at start (tokens then die with the process).
    pub ephemeral: bool,
    liveness: Mutex<HashMap<String, (bool, Instant)>>,
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
        let current = current.map(String::into_bytes).unwrap_or_else(|| super::auth::generate_key().into_bytes());
        Self { current, previous: previous.map(String::into_bytes), ephemeral, liveness: Mutex::new(HashMap::new()) }
    }
}

/// A token just issued.
pub struct IssuedToken {
    pub token: String,
    pub jti: String,
    pub expires_at: DateTime<Utc>,
}

impl Omega {
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
            (_, Some(id)) => Some(self.business(caller, id).await?.id),
            (Scope::Platform, None) => None,
        };
        if let Some(staff_id) = staff_id {
            let business = business
                .ok_or_else(|| Error::invalid("business_id", "is required with staff_id and a platform key"))?;
            self.active_staff(business, "staff_id", staff_id).await?;
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
        let claims = json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now.timestamp(),
            "nbf": now.timestamp(),
            "exp": expires_at.timestamp(),
            "jti": jti,
            "kid": caller.key_id,
            "bid": business,
            "sid": staff_id,
        });
        let token = jwt::sign(&json!({ "alg": "HS256", "typ": "JWT" }), &claims, &self.tokens.current);
        Ok(IssuedToken { token, jti, expires_at })
    }

    /// The claims of a token this deployment signed and that has not expired.
    fn token_claims(&self, token: &str, check_time: bool) -> Option<serde_json::Value> {
        let mut secrets: Vec<&[u8]> = vec![&self.tokens.current];
        if let Some(previous) = &self.tokens.previous {
            secrets.push(previous);
        }
        let claims = jwt::verify(token, &secrets)?;
        if claims["iss"] != ISSUER || claims["aud"] != AUDIENCE {
            return None;
        }
        let now = Utc::now().timestamp();
        if check_time && (claims["exp"].as_i64()? <= now || claims["nbf"].as_i64().unwrap_or(0) > now + 30) {
            return None;
        }
        Some(claims)
    }

    /// Resolves a token to its caller; UNAUTHENTICATED for anything not a live token of ours.
    pub async fn authenticate_token(&self, token: &str) -> Result<Caller> {
        let claims = self.token_claims(token, true).ok_or(Error::Unauthenticated)?;
        let jti = claims["jti"].as_str().ok_or(Error::Unauthenticated)?.to_owned();
        if !self.session_live(&jti).await? {
            return Err(Error::Unauthenticated);
        }
        let key_id = claims["kid"].as_i64().ok_or(Error::Unauthenticated)?;
        let scope = match claims["bid"].as_i64() {
            Some(business) => Scope::Business(business),
            None => Scope::Platform,
        };
        Ok(Caller { key_id, scope, staff_id: claims["sid"].as_i64(), session: Some(jti) })
    }

    async fn session_live(&self, jti: &str) -> Result<bool> {
        if let Some((live, at)) = self.tokens.liveness.lock().expect("not poisoned").get(jti)
            && at.elapsed() < SESSION_CACHE
        {
            return Ok(*live);
        }
        let live = db::is_live(self.store.connection(), jti).await?;
        let mut cache = self.tokens.liveness.lock().expect("not poisoned");
        if cache.len() > 100_000 {
            cache.retain(|_, (_, at)| at.elapsed() < SESSION_CACHE);
        }
        cache.insert(jti.to_owned(), (live, Instant::now()));
        Ok(live)
    }

    /// Housekeeping: sessions a day past expiry and provider events a week old are deleted
    /// (every replica may run it; deletes are idempotent). Answers how many rows went.
    pub async fn purge_stale_records(&self) -> Result<u64> {
        let now = now();
        let sessions = db::purge_expired(self.store.writer(), now - chrono::Duration::days(1)).await?;
        let events =
            crate::store::messages::purge_webhook_events(self.store.writer(), now - chrono::Duration::days(7)).await?;
        Ok(sessions + events)
    }

    /// Revokes the session of `token` (signed by us; expired or not). Unknown, forged, expired
    /// or already revoked tokens are not errors: there is nothing left to revoke.
    pub async fn expire_session(&self, token: &str) -> Result<bool> {
        // Far above any token this API signs (a few hundred bytes): not one of ours.
        if token.len() > 8 * 1024 {
            return Err(Error::invalid("token", "is not a token this API issued (too long)"));
        }
        let Some(claims) = self.token_claims(token, false) else { return Ok(false) };
        let Some(jti) = claims["jti"].as_str() else { return Ok(false) };
        let revoked = db::revoke(self.store.writer(), jti, now()).await?;
        self.tokens.liveness.lock().expect("not poisoned").insert(jti.to_owned(), (false, Instant::now()));
        Ok(revoked)
    }
}
