//! A business's provider credentials (`provider_credentials`), one row per kind, and the shapes
//! of their `config`. `config` is sealed at rest (see `crate::secrets`): these functions seal
//! what they store and answer rows whose `config` is opened again.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    sea_query::{Expr, OnConflict},
};
use serde::{Deserialize, Serialize};

use super::{StoreError, StoreResult, entity::provider_credential as credential};
use crate::secrets::SecretKeys;

/// The `config` of a `twilio` row (and the platform's own account).
#[derive(Clone, Serialize, Deserialize)]
pub struct TwilioCredentials {
    pub account_sid: String,
    pub auth_token: String,
}

impl std::fmt::Debug for TwilioCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioCredentials").field("account_sid", &self.account_sid).finish_non_exhaustive()
    }
}

/// The `config` of a `sendgrid` row.
#[derive(Clone, Serialize, Deserialize)]
pub struct SendGridCredentials {
    pub api_key: String,
}

/// The `config` of an `smtp` row.
#[derive(Clone, Serialize, Deserialize)]
pub struct SmtpCredentials {
    pub host: String,
    pub port: u16,
    /// "none", "starttls" or "tls".
    pub tls: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// What binds a sealed value to its row.
fn credential_context(business_id: i64, kind: &str) -> String {
    format!("provider_credentials/{business_id}/{kind}")
}

fn opened(keys: &SecretKeys, mut row: credential::Model) -> StoreResult<credential::Model> {
    row.config = keys
        .open(&row.config, &credential_context(row.business_id, &row.kind))
        .map_err(|e| StoreError::Config(format!("provider credentials of business {}: {e:#}", row.business_id)))?;
    Ok(row)
}

pub async fn credentials(
    conn: &impl ConnectionTrait,
    keys: &SecretKeys,
    business_id: i64,
) -> StoreResult<Vec<credential::Model>> {
    credential::Entity::find()
        .filter(credential::Column::BusinessId.eq(business_id))
        .order_by_asc(credential::Column::UpdatedAt)
        .all(conn)
        .await?
        .into_iter()
        .map(|row| opened(keys, row))
        .collect()
}

/// Stores a business's credentials for `kind`, sealed. A Twilio account another business holds
/// is a `UniqueViolation` (the database enforces one owner per account).
#[allow(clippy::too_many_arguments)]
pub async fn set_credentials(
    conn: &impl ConnectionTrait,
    keys: &SecretKeys,
    business_id: i64,
    kind: &str,
    config: String,
    account_ref: Option<String>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let sealed =
        keys.seal(&config, &credential_context(business_id, kind)).map_err(|e| StoreError::Config(format!("{e:#}")))?;
    credential::Entity::insert(credential::ActiveModel {
        business_id: Set(business_id),
        kind: Set(kind.to_owned()),
        config: Set(sealed),
        updated_at: Set(now),
        account_ref: Set(account_ref),
    })
    .on_conflict(
        OnConflict::columns([credential::Column::BusinessId, credential::Column::Kind])
            .update_columns([credential::Column::Config, credential::Column::UpdatedAt, credential::Column::AccountRef])
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// The credentials stored for a provider account (one business at most: the index is unique).
pub async fn credentials_by_account(
    conn: &impl ConnectionTrait,
    keys: &SecretKeys,
    kind: &str,
    account_ref: &str,
) -> StoreResult<Vec<credential::Model>> {
    credential::Entity::find()
        .filter(credential::Column::Kind.eq(kind))
        .filter(credential::Column::AccountRef.eq(account_ref))
        .all(conn)
        .await?
        .into_iter()
        .map(|row| opened(keys, row))
        .collect()
}

/// Seals every credential row not sealed with the current key (older keys, plaintext from
/// before encryption) again with it. Every row is opened before any is written, so a missing key
/// changes nothing; each row changes only if it is still what was read, so a credential set
/// meanwhile is not overwritten. Answers (rows sealed again, rows in all).
pub async fn reseal_credentials(conn: &impl ConnectionTrait, keys: &SecretKeys) -> StoreResult<(u64, u64)> {
    let rows = credential::Entity::find().all(conn).await?;
    let total = rows.len() as u64;
    let mut resealed_rows = Vec::new();
    for row in rows {
        if crate::secrets::sealed_with(&row.config) != crate::secrets::Sealed::With(keys.current_id()) {
            let config = opened(keys, row.clone())?.config;
            let sealed = keys
                .seal(&config, &credential_context(row.business_id, &row.kind))
                .map_err(|e| StoreError::Config(format!("{e:#}")))?;
            resealed_rows.push((row, sealed));
        }
    }
    let mut resealed = 0;
    for (row, sealed) in resealed_rows {
        let changed = credential::Entity::update_many()
            .col_expr(credential::Column::Config, Expr::value(sealed))
            .filter(credential::Column::BusinessId.eq(row.business_id))
            .filter(credential::Column::Kind.eq(row.kind))
            .filter(credential::Column::Config.eq(row.config))
            .exec(conn)
            .await?;
        resealed += changed.rows_affected;
    }
    Ok((resealed, total))
}
