//! Queries on sessions (issued access tokens) and the keys behind them.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, sea_query::Expr};

use super::{
    StoreResult,
    entity::{api_key, session},
};

pub async fn insert(conn: &impl ConnectionTrait, row: session::Model) -> StoreResult<()> {
    session::ActiveModel {
        jti: Set(row.jti),
        api_key_id: Set(row.api_key_id),
        business_id: Set(row.business_id),
        staff_id: Set(row.staff_id),
        issued_at: Set(row.issued_at),
        expires_at: Set(row.expires_at),
        revoked_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Whether a session is usable: not revoked, and issued by a key that is not revoked either.
pub async fn is_live(conn: &impl ConnectionTrait, jti: &str) -> StoreResult<bool> {
    let Some(session) = session::Entity::find_by_id(jti.to_owned()).one(conn).await? else { return Ok(false) };
    if session.revoked_at.is_some() {
        return Ok(false);
    }
    let key = api_key::Entity::find_by_id(session.api_key_id).one(conn).await?;
    Ok(key.is_some_and(|k| k.revoked_at.is_none()))
}

/// Revokes a session if it exists and is live; revoking twice or an unknown one is not an error.
pub async fn revoke(conn: &impl ConnectionTrait, jti: &str, at: DateTime<Utc>) -> StoreResult<bool> {
    let result = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(at))
        .filter(session::Column::Jti.eq(jti))
        .filter(session::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Deletes sessions that expired before `before` (their tokens can no longer be used anyway);
/// answers how many.
pub async fn purge_expired(conn: &impl ConnectionTrait, before: DateTime<Utc>) -> StoreResult<u64> {
    Ok(session::Entity::delete_many().filter(session::Column::ExpiresAt.lt(before)).exec(conn).await?.rows_affected)
}
