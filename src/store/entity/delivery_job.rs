use sea_orm::entity::prelude::*;

use super::enums::{Channel, JobState};

/// The outbox: one job per outbound message, written in the same transaction as the message and
/// claimed by workers (`FOR UPDATE SKIP LOCKED` on PostgreSQL).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "delivery_jobs")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub message_id: i64,
    pub business_id: i64,
    pub channel: Channel,
    pub sender_key: String,
    pub state: JobState,
    pub attempts: i32,
    pub next_attempt_at: ChronoDateTimeUtc,
    pub locked_by: Option<String>,
    pub locked_until: Option<ChronoDateTimeUtc>,
    pub last_error: Option<String>,
    pub created_at: ChronoDateTimeUtc,
    pub updated_at: ChronoDateTimeUtc,
}

relations! {
    belongs_to { Message: message via MessageId, Business: business via BusinessId }
}

impl ActiveModelBehavior for ActiveModel {}
