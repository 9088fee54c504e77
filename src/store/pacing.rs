//! Per-sender pacing (`sender_pacing`): the next free send slot of each sender, shared by every
//! worker and replica.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set,
    sea_query::{Expr, OnConflict},
};

use super::{StoreResult, dialect, entity::sender_pacing};

/// Reserves the next send slot of a sender spaced `interval` apart, shared by every worker and
/// replica through the database; answers when the slot starts (now, or later when busy).
pub async fn reserve_slot(
    conn: &impl ConnectionTrait,
    sender_key: &str,
    interval: chrono::Duration,
    now: DateTime<Utc>,
) -> StoreResult<DateTime<Utc>> {
    let backend = conn.get_database_backend();
    // Make sure the row exists, then lock it (PostgreSQL) / rely on the single writer (SQLite).
    sender_pacing::Entity::insert(sender_pacing::ActiveModel {
        sender_key: Set(sender_key.to_owned()),
        next_slot_at: Set(now),
    })
    .on_conflict(OnConflict::column(sender_pacing::Column::SenderKey).do_nothing().to_owned())
    .exec_without_returning(conn)
    .await?;
    let select = dialect::locked_for_update(backend, sender_pacing::Entity::find_by_id(sender_key.to_owned()));
    let current = select.one(conn).await?.map_or(now, |row| row.next_slot_at);
    let slot = std::cmp::max(current, now);
    sender_pacing::Entity::update_many()
        .col_expr(sender_pacing::Column::NextSlotAt, Expr::value(slot + interval))
        .filter(sender_pacing::Column::SenderKey.eq(sender_key))
        .exec(conn)
        .await?;
    Ok(slot)
}
