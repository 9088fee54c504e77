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

/// The rows it belongs to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::webhook_endpoint::Entity",
        from = "Column::EndpointId",
        to = "super::webhook_endpoint::Column::Id"
    )]
    Endpoint,
    #[sea_orm(belongs_to = "super::business::Entity", from = "Column::BusinessId", to = "super::business::Column::Id")]
    Business,
    #[sea_orm(
        belongs_to = "super::conversation_event::Entity",
        from = "Column::EventId",
        to = "super::conversation_event::Column::Id"
    )]
    Event,
}

impl Related<super::webhook_endpoint::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Endpoint.def()
    }
}

impl Related<super::business::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Business.def()
    }
}

impl Related<super::conversation_event::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Event.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
