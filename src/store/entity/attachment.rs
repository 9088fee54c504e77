use sea_orm::entity::prelude::*;

/// A file attached to a message; its bytes are in the attachment store under `storage_key`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "attachments")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub business_id: i64,
    pub message_id: i64,
    pub storage_key: String,
    pub file_name: String,
    pub content_type: String,
    /// Chatwoot's kind: image, audio, video or file.
    pub file_type: String,
    pub file_size: i64,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub created_at: ChronoDateTimeUtc,
}

relations! {
    belongs_to { Business: business via BusinessId, Message: message via MessageId }
}

impl ActiveModelBehavior for ActiveModel {}
