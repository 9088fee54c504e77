use sea_orm::entity::prelude::*;

use super::enums::AttemptOutcome;

/// One try at handing a message to its provider, kept forever (a retry adds, never rewrites).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "message_attempts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub message_id: i64,
    pub attempt: i32,
    pub started_at: ChronoDateTimeUtc,
    pub finished_at: Option<ChronoDateTimeUtc>,
    pub outcome: AttemptOutcome,
    pub provider_message_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

relations! {
    belongs_to { Message: message via MessageId }
}

impl ActiveModelBehavior for ActiveModel {}
