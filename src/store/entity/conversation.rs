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

relations! {
    belongs_to {
        Business: business via BusinessId,
        Client: client via ClientId,
        Location: location via LocationId,
        AssignedStaff: staff via AssignedStaffId,
    }
    has_many { Messages: message }
}

impl ActiveModelBehavior for ActiveModel {}
