//! Provider webhook events already applied (`webhook_events`), so that a provider's retry of
//! one is recognised and skipped.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, sea_query::OnConflict};

use super::{StoreResult, entity::webhook_event};

/// Records a provider event as applied; answers false when it already was (a retry).
pub async fn first_delivery_of_event(
    conn: &impl ConnectionTrait,
    provider: &str,
    event_id: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let result = webhook_event::Entity::insert(webhook_event::ActiveModel {
        provider: Set(provider.to_owned()),
        event_id: Set(event_id.to_owned()),
        received_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([webhook_event::Column::Provider, webhook_event::Column::EventId]).do_nothing().to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(result == 1)
}

/// Forgets provider events received before `before` (providers stop retrying long before);
/// answers how many.
pub async fn purge_webhook_events(conn: &impl ConnectionTrait, before: DateTime<Utc>) -> StoreResult<u64> {
    Ok(webhook_event::Entity::delete_many()
        .filter(webhook_event::Column::ReceivedAt.lt(before))
        .exec(conn)
        .await?
        .rows_affected)
}
