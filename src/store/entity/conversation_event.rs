use sea_orm::entity::prelude::*;

/// The ordered log of changes in a business's inbox, appended in the same transaction as the
/// change itself.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversation_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub business_id: i64,
    pub conversation_id: Option<i64>,
    pub kind: String,
    pub actor_key_id: Option<i64>,
    pub actor_staff_id: Option<i64>,
    /// JSON object with the change's details.
    pub data: String,
    pub created_at: ChronoDateTimeUtc,
    /// PostgreSQL: the writing transaction's id, which orders the log for readers (see the
    /// store's `events` module). SQLite: 0.
    pub tx_id: i64,
}

relations! {
    belongs_to { Business: business via BusinessId, Conversation: conversation via ConversationId }
}

impl ActiveModelBehavior for ActiveModel {}
