use sea_orm::entity::prelude::*;

use super::enums::{Channel, DeliveryStatus, Direction, SenderType};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub public_id: String,
    pub business_id: i64,
    pub conversation_id: i64,
    pub client_id: i64,
    pub channel: Channel,
    pub direction: Direction,
    pub sender_type: SenderType,
    pub sender_staff_id: Option<i64>,
    pub content: String,
    pub subject: Option<String>,
    pub note_category: Option<String>,
    pub request_id: Option<String>,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    pub status: DeliveryStatus,
    pub status_updated_at: Option<ChronoDateTimeUtc>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attempt_count: i32,
    pub read_at: Option<ChronoDateTimeUtc>,
    pub created_at: ChronoDateTimeUtc,
    pub location_id: Option<i64>,
    /// The number or address it was sent from (outbound) or arrived from (inbound).
    pub from_address: Option<String>,
    pub to_address: Option<String>,
    pub html: Option<String>,
    /// JSON array of media URLs.
    pub media: Option<String>,
    pub idempotency_key: Option<String>,
    pub sent_at: Option<ChronoDateTimeUtc>,
    pub delivered_at: Option<ChronoDateTimeUtc>,
    pub failed_at: Option<ChronoDateTimeUtc>,
    /// Calls: how long it lasted.
    pub duration_seconds: Option<i32>,
    /// Calls: the SequenceNumber of the last status callback applied (they arrive unordered).
    pub provider_sequence: Option<i32>,
    /// Web chat: the widget's content attributes (e.g. submitted form values), as JSON.
    pub content_attributes: Option<String>,
    /// A JSON array summarizing its attachments (see `store::attachments::Summary`), written
    /// with them.
    pub attachments: Option<String>,
    /// Inbound calls: the staff member whose browser answered.
    pub answered_by_staff_id: Option<i64>,
}

relations! {
    belongs_to {
        Business: business via BusinessId,
        Conversation: conversation via ConversationId,
        Client: client via ClientId,
    }
    has_many { Attempts: message_attempt }
}

impl ActiveModelBehavior for ActiveModel {}
