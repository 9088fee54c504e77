use sea_orm::entity::prelude::*;

use super::enums::{Channel, ConversationStatus, Direction};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversations")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub business_id: i64,
    pub client_id: i64,
    pub location_id: Option<i64>,
    pub status: ConversationStatus,
    pub snoozed_until: Option<ChronoDateTimeUtc>,
    pub assigned_staff_id: Option<i64>,
    pub resolved_at: Option<ChronoDateTimeUtc>,
    pub resolved_by_staff_id: Option<i64>,
    pub resolution_note: Option<String>,
    pub unread_count: i32,
    pub channel_mask: i32,
    pub last_message_at: Option<ChronoDateTimeUtc>,
    pub last_message_preview: Option<String>,
    pub last_message_channel: Option<Channel>,
    pub last_message_direction: Option<Direction>,
    pub last_activity_at: ChronoDateTimeUtc,
    pub created_at: ChronoDateTimeUtc,
    pub updated_at: ChronoDateTimeUtc,
    /// When the contact last looked at it (web chat).
    pub contact_last_seen_at: Option<ChronoDateTimeUtc>,
    pub agent_last_seen_at: Option<ChronoDateTimeUtc>,
    /// Web chat: Chatwoot's custom attributes, a JSON object as text.
    pub custom_attributes: Option<String>,
}

/// The rows it belongs to and the rows that belong to it.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(belongs_to = "super::business::Entity", from = "Column::BusinessId", to = "super::business::Column::Id")]
    Business,
    #[sea_orm(belongs_to = "super::client::Entity", from = "Column::ClientId", to = "super::client::Column::Id")]
    Client,
    #[sea_orm(belongs_to = "super::location::Entity", from = "Column::LocationId", to = "super::location::Column::Id")]
    Location,
    #[sea_orm(belongs_to = "super::staff::Entity", from = "Column::AssignedStaffId", to = "super::staff::Column::Id")]
    AssignedStaff,
    #[sea_orm(has_many = "super::message::Entity")]
    Messages,
}

impl Related<super::business::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Business.def()
    }
}

impl Related<super::client::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Client.def()
    }
}

impl Related<super::location::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Location.def()
    }
}

impl Related<super::staff::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::AssignedStaff.def()
    }
}

impl Related<super::message::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Messages.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
