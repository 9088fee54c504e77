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

/// The rows it belongs to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(belongs_to = "super::business::Entity", from = "Column::BusinessId", to = "super::business::Column::Id")]
    Business,
    #[sea_orm(belongs_to = "super::message::Entity", from = "Column::MessageId", to = "super::message::Column::Id")]
    Message,
}

impl Related<super::business::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Business.def()
    }
}

impl Related<super::message::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Message.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
