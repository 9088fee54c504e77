use sea_orm::entity::prelude::*;

use super::enums::WebhookDeliveryState;

/// One event on its way to one endpoint: the outbox row and its log entry. Unique per
/// (endpoint, event); written by a trigger on the event log (migration 000018) or by a replay.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub endpoint_id: i64,
    pub business_id: i64,
    pub event_id: i64,
    pub state: WebhookDeliveryState,
    pub attempt_count: i32,
    pub next_attempt_at: ChronoDateTimeUtc,
    pub locked_by: Option<String>,
    pub locked_until: Option<ChronoDateTimeUtc>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<ChronoDateTimeUtc>,
    pub delivered_at: Option<ChronoDateTimeUtc>,
    pub created_at: ChronoDateTimeUtc,
    pub updated_at: ChronoDateTimeUtc,
}

relations! {
    belongs_to {
        Endpoint: webhook_endpoint via EndpointId,
        Business: business via BusinessId,
        Event: conversation_event via EventId,
    }
}

impl ActiveModelBehavior for ActiveModel {}
