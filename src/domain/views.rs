//! What the domain answers with: its records as transports may show them, built from the
//! store's rows here so that no transport depends on how rows are stored. Fields keep the rows'
//! meanings (ids, typed states, optional text), leaving out what only the store and
//! the domain need (hashes, storage keys, idempotency keys, ordering columns).

use chrono::{DateTime, Utc};

use super::values::{AttemptOutcome, Channel, ConversationStatus, DeliveryStatus, Direction, SenderType};
use crate::store::{
    attachments::Summary,
    entity::{
        api_key, attachment, business, client, conversation, conversation_event, inbox, location, message,
        message_attempt, staff, webhook_endpoint,
    },
};

type Time = DateTime<Utc>;

/// A message (or note, or call) of a conversation.
#[derive(Clone, Debug)]
pub struct MessageView {
    pub id: i64,
    /// The id shown to callers (`msg_…`).
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
    pub status_updated_at: Option<Time>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attempt_count: i32,
    pub read_at: Option<Time>,
    pub created_at: Time,
    pub location_id: Option<i64>,
    pub from_address: Option<String>,
    pub to_address: Option<String>,
    /// The media URLs it carries (MMS: the provider's copies); none when unreadable.
    pub media_urls: Vec<String>,
    pub sent_at: Option<Time>,
    pub delivered_at: Option<Time>,
    pub failed_at: Option<Time>,
    pub duration_seconds: Option<i32>,
    /// Web chat: the widget's content attributes, as JSON text.
    pub content_attributes: Option<String>,
    /// The files it carries, as summarized when they were stored.
    pub attachments: Vec<AttachmentSummary>,
    pub answered_by_staff_id: Option<i64>,
}

impl From<message::Model> for MessageView {
    fn from(m: message::Model) -> Self {
        let attachments = Summary::of(&m).into_iter().map(AttachmentSummary::from).collect();
        let media_urls = m.media.as_deref().and_then(|json| serde_json::from_str(json).ok()).unwrap_or_default();
        Self {
            id: m.id,
            public_id: m.public_id,
            business_id: m.business_id,
            conversation_id: m.conversation_id,
            client_id: m.client_id,
            channel: m.channel,
            direction: m.direction,
            sender_type: m.sender_type,
            sender_staff_id: m.sender_staff_id,
            content: m.content,
            subject: m.subject,
            note_category: m.note_category,
            request_id: m.request_id,
            provider: m.provider,
            provider_message_id: m.provider_message_id,
            status: m.status,
            status_updated_at: m.status_updated_at,
            error_code: m.error_code,
            error_message: m.error_message,
            attempt_count: m.attempt_count,
            read_at: m.read_at,
            created_at: m.created_at,
            location_id: m.location_id,
            from_address: m.from_address,
            to_address: m.to_address,
            media_urls,
            sent_at: m.sent_at,
            delivered_at: m.delivered_at,
            failed_at: m.failed_at,
            duration_seconds: m.duration_seconds,
            content_attributes: m.content_attributes,
            attachments,
            answered_by_staff_id: m.answered_by_staff_id,
        }
    }
}

/// One file a message carries.
#[derive(Clone, Debug)]
pub struct AttachmentSummary {
    pub id: i64,
    pub file_name: String,
    pub content_type: String,
    /// Chatwoot's kind: image, audio, video or file.
    pub file_type: String,
    pub file_size: i64,
    pub width: Option<i32>,
    pub height: Option<i32>,
}

impl From<Summary> for AttachmentSummary {
    fn from(s: Summary) -> Self {
        Self {
            id: s.id,
            file_name: s.file_name,
            content_type: s.content_type,
            file_type: s.file_type,
            file_size: s.file_size,
            width: s.width,
            height: s.height,
        }
    }
}

/// A stored file's description (its bytes travel beside it).
#[derive(Clone, Debug)]
pub struct AttachmentView {
    pub id: i64,
    pub business_id: i64,
    pub message_id: i64,
    pub file_name: String,
    pub content_type: String,
    pub file_type: String,
    pub file_size: i64,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub created_at: Time,
}

impl From<attachment::Model> for AttachmentView {
    fn from(a: attachment::Model) -> Self {
        Self {
            id: a.id,
            business_id: a.business_id,
            message_id: a.message_id,
            file_name: a.file_name,
            content_type: a.content_type,
            file_type: a.file_type,
            file_size: a.file_size,
            width: a.width,
            height: a.height,
            created_at: a.created_at,
        }
    }
}

/// One try at handing a message to its provider.
#[derive(Clone, Debug)]
pub struct AttemptView {
    pub attempt: i32,
    pub started_at: Time,
    pub finished_at: Option<Time>,
    pub outcome: AttemptOutcome,
    pub provider_message_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

impl From<message_attempt::Model> for AttemptView {
    fn from(a: message_attempt::Model) -> Self {
        Self {
            attempt: a.attempt,
            started_at: a.started_at,
            finished_at: a.finished_at,
            outcome: a.outcome,
            provider_message_id: a.provider_message_id,
            error_code: a.error_code,
            error_message: a.error_message,
        }
    }
}

/// A conversation with one client, as stored (names of the people in it are beside it in
/// [`super::conversations::ConversationSummary`]).
#[derive(Clone, Debug)]
pub struct ConversationView {
    pub id: i64,
    pub business_id: i64,
    pub client_id: i64,
    pub location_id: Option<i64>,
    pub status: ConversationStatus,
    pub snoozed_until: Option<Time>,
    pub assigned_staff_id: Option<i64>,
    pub resolved_at: Option<Time>,
    pub resolved_by_staff_id: Option<i64>,
    pub resolution_note: Option<String>,
    pub unread_count: i32,
    /// The channels it has used, as a mask of [`super::values::Channel`] bits.
    pub channel_mask: i32,
    pub last_message_at: Option<Time>,
    pub last_message_preview: Option<String>,
    pub last_message_channel: Option<Channel>,
    pub last_message_direction: Option<Direction>,
    pub last_activity_at: Time,
    pub created_at: Time,
    pub updated_at: Time,
    pub contact_last_seen_at: Option<Time>,
    pub agent_last_seen_at: Option<Time>,
    /// Web chat: Chatwoot's custom attributes, a JSON object as text.
    pub custom_attributes: Option<String>,
}

impl From<conversation::Model> for ConversationView {
    fn from(c: conversation::Model) -> Self {
        Self {
            id: c.id,
            business_id: c.business_id,
            client_id: c.client_id,
            location_id: c.location_id,
            status: c.status,
            snoozed_until: c.snoozed_until,
            assigned_staff_id: c.assigned_staff_id,
            resolved_at: c.resolved_at,
            resolved_by_staff_id: c.resolved_by_staff_id,
            resolution_note: c.resolution_note,
            unread_count: c.unread_count,
            channel_mask: c.channel_mask,
            last_message_at: c.last_message_at,
            last_message_preview: c.last_message_preview,
            last_message_channel: c.last_message_channel,
            last_message_direction: c.last_message_direction,
            last_activity_at: c.last_activity_at,
            created_at: c.created_at,
            updated_at: c.updated_at,
            contact_last_seen_at: c.contact_last_seen_at,
            agent_last_seen_at: c.agent_last_seen_at,
            custom_attributes: c.custom_attributes,
        }
    }
}

/// One entry of a business's event log.
#[derive(Clone, Debug)]
pub struct EventView {
    pub id: i64,
    pub business_id: i64,
    pub conversation_id: Option<i64>,
    pub kind: String,
    pub actor_key_id: Option<i64>,
    pub actor_staff_id: Option<i64>,
    /// A JSON object with the change's details.
    pub data: String,
    pub created_at: Time,
}

impl From<conversation_event::Model> for EventView {
    fn from(e: conversation_event::Model) -> Self {
        Self {
            id: e.id,
            business_id: e.business_id,
            conversation_id: e.conversation_id,
            kind: e.kind,
            actor_key_id: e.actor_key_id,
            actor_staff_id: e.actor_staff_id,
            data: e.data,
            created_at: e.created_at,
        }
    }
}

/// A business's client (a customer it messages).
#[derive(Clone, Debug)]
pub struct ClientView {
    pub id: i64,
    pub business_id: i64,
    pub external_ref: Option<String>,
    pub name: String,
    pub phone_e164: Option<String>,
    pub email: Option<String>,
    pub sms_consent: bool,
    pub sms_consent_updated_at: Option<Time>,
    pub created_at: Time,
    pub updated_at: Time,
    /// Chatwoot's custom attributes: a JSON object, as text.
    pub custom_attributes: Option<String>,
}

impl From<client::Model> for ClientView {
    fn from(c: client::Model) -> Self {
        Self {
            id: c.id,
            business_id: c.business_id,
            external_ref: c.external_ref,
            name: c.name,
            phone_e164: c.phone_e164,
            email: c.email,
            sms_consent: c.sms_consent,
            sms_consent_updated_at: c.sms_consent_updated_at,
            created_at: c.created_at,
            updated_at: c.updated_at,
            custom_attributes: c.custom_attributes,
        }
    }
}

/// A member of a business's staff.
#[derive(Clone, Debug)]
pub struct StaffView {
    pub id: i64,
    pub business_id: i64,
    pub external_ref: Option<String>,
    pub name: String,
    pub email: Option<String>,
    pub role: String,
    pub active: bool,
    pub created_at: Time,
    pub updated_at: Time,
}

impl From<staff::Model> for StaffView {
    fn from(s: staff::Model) -> Self {
        Self {
            id: s.id,
            business_id: s.business_id,
            external_ref: s.external_ref,
            name: s.name,
            email: s.email,
            role: s.role,
            active: s.active,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A business's location, with the phone numbers it sends from.
#[derive(Clone, Debug)]
pub struct LocationView {
    pub id: i64,
    pub business_id: i64,
    pub external_ref: Option<String>,
    pub name: String,
    pub time_zone: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub email_sender: Option<String>,
    pub created_at: Time,
    pub updated_at: Time,
    pub phone_numbers: Vec<String>,
}

impl LocationView {
    pub(super) fn new(l: location::Model, phone_numbers: Vec<String>) -> Self {
        Self {
            id: l.id,
            business_id: l.business_id,
            external_ref: l.external_ref,
            name: l.name,
            time_zone: l.time_zone,
            messaging_service_sid: l.messaging_service_sid,
            email_sender: l.email_sender,
            created_at: l.created_at,
            updated_at: l.updated_at,
            phone_numbers,
        }
    }
}

/// A business and what it has turned on.
#[derive(Clone, Debug)]
pub struct BusinessView {
    pub id: i64,
    pub name: String,
    pub created_at: Time,
    pub updated_at: Time,
    pub external_ref: Option<String>,
    pub time_zone: String,
    pub default_calling_code: String,
    pub sms_enabled: bool,
    pub email_enabled: bool,
    pub voice_enabled: bool,
    pub chat_enabled: bool,
    pub transcribe_voicemail: bool,
}

impl From<business::Model> for BusinessView {
    fn from(b: business::Model) -> Self {
        Self {
            id: b.id,
            name: b.name,
            created_at: b.created_at,
            updated_at: b.updated_at,
            external_ref: b.external_ref,
            time_zone: b.time_zone,
            default_calling_code: b.default_calling_code,
            sms_enabled: b.sms_enabled,
            email_enabled: b.email_enabled,
            voice_enabled: b.voice_enabled,
            chat_enabled: b.chat_enabled,
            transcribe_voicemail: b.transcribe_voicemail,
        }
    }
}

/// An API key's record (never the key: only its prefix).
#[derive(Clone, Debug)]
pub struct ApiKeyView {
    pub id: i64,
    pub key_prefix: String,
    pub label: String,
    /// "platform" or "business".
    pub scope: String,
    pub business_id: Option<i64>,
    pub created_at: Time,
    pub last_used_at: Option<Time>,
    pub revoked_at: Option<Time>,
}

impl From<api_key::Model> for ApiKeyView {
    fn from(k: api_key::Model) -> Self {
        Self {
            id: k.id,
            key_prefix: k.key_prefix,
            label: k.label,
            scope: k.scope,
            business_id: k.business_id,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// An outbound webhook endpoint (its secrets are shown only when issued).
#[derive(Clone, Debug)]
pub struct EndpointView {
    pub id: i64,
    pub business_id: i64,
    pub url: String,
    pub description: String,
    /// The event kinds it receives; empty: every kind.
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<Time>,
    /// Until when the secret before the last rotation still signs beside the new one.
    pub previous_secret_until: Option<Time>,
    pub consecutive_failures: i32,
    pub created_at: Time,
    pub updated_at: Time,
}

impl From<webhook_endpoint::Model> for EndpointView {
    fn from(e: webhook_endpoint::Model) -> Self {
        Self {
            event_types: super::webhook_endpoints::event_types_of(&e.event_types),
            id: e.id,
            business_id: e.business_id,
            url: e.url,
            description: e.description,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            disabled_at: e.disabled_at,
            previous_secret_until: e.previous_secret_until,
            consecutive_failures: e.consecutive_failures,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// A business's web-chat inbox.
#[derive(Clone, Debug)]
pub struct InboxView {
    pub id: i64,
    pub business_id: i64,
    pub location_id: Option<i64>,
    pub name: String,
    /// The public identifier widgets address it by.
    pub identifier: String,
    /// The secret identity hashes are made with (shown to the business that owns it).
    pub hmac_token: String,
    pub hmac_mandatory: bool,
    pub created_at: Time,
}

impl From<inbox::Model> for InboxView {
    fn from(i: inbox::Model) -> Self {
        Self {
            id: i.id,
            business_id: i.business_id,
            location_id: i.location_id,
            name: i.name,
            identifier: i.identifier,
            hmac_token: i.hmac_token,
            hmac_mandatory: i.hmac_mandatory,
            created_at: i.created_at,
        }
    }
}
