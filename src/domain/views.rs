//! What the domain answers with: its records as transports may show them, built from the
//! store's rows here so that no transport depends on how rows are stored. Fields keep the rows'
//! meanings (ids, typed states, optional text), leaving out what only the store and
//! the domain need (hashes, storage keys, idempotency keys, ordering columns).

use chrono::{DateTime, Utc};

use super::values::{
    AttemptOutcome, Channel, ConversationStatus, DeliveryStatus, Direction, SenderType, WebhookDeliveryState,
};
use crate::store::{
    attachments::Summary,
    entity::{
        api_key, attachment, business, client, conversation, conversation_event, inbox, location, message,
        message_attempt, staff, webhook_endpoint,
    },
    webhook_endpoints::DeliveryRow,
};

type Time = DateTime<Utc>;

/// A view built from a stored row: each field is listed once and copied from the row's field of
/// the same name; `computed` fields are worked out from the row (borrowed) first.
macro_rules! view {
    (
        $(#[$smeta:meta])*
        $name:ident from $row:ty {
            $($(#[$meta:meta])* $field:ident: $ty:ty,)*
        }
        $(computed |$r:ident| {
            $($(#[$cmeta:meta])* $cfield:ident: $cty:ty = $cexpr:expr,)*
        })?
    ) => {
        $(#[$smeta])*
        #[derive(Clone, Debug)]
        pub struct $name {
            $($(#[$meta])* pub $field: $ty,)*
            $($($(#[$cmeta])* pub $cfield: $cty,)*)?
        }

        impl From<$row> for $name {
            fn from(row: $row) -> Self {
                $(let $r = &row; $(let $cfield: $cty = $cexpr;)*)?
                Self { $($field: row.$field,)* $($($cfield,)*)? }
            }
        }
    };
}

view! {
    /// A message (or note, or call) of a conversation.
    MessageView from message::Model {
        id: i64,
        /// The id shown to callers (`msg_…`).
        public_id: String,
        business_id: i64,
        conversation_id: i64,
        client_id: i64,
        channel: Channel,
        direction: Direction,
        sender_type: SenderType,
        sender_staff_id: Option<i64>,
        content: String,
        subject: Option<String>,
        note_category: Option<String>,
        request_id: Option<String>,
        provider: Option<String>,
        provider_message_id: Option<String>,
        status: DeliveryStatus,
        status_updated_at: Option<Time>,
        error_code: Option<String>,
        error_message: Option<String>,
        attempt_count: i32,
        read_at: Option<Time>,
        created_at: Time,
        location_id: Option<i64>,
        from_address: Option<String>,
        to_address: Option<String>,
        sent_at: Option<Time>,
        delivered_at: Option<Time>,
        failed_at: Option<Time>,
        duration_seconds: Option<i32>,
        /// Web chat: the widget's content attributes, as JSON text.
        content_attributes: Option<String>,
        answered_by_staff_id: Option<i64>,
    }
    computed |m| {
        /// The media URLs it carries (MMS: the provider's copies); none when unreadable.
        media_urls: Vec<String> =
            m.media.as_deref().and_then(|json| serde_json::from_str(json).ok()).unwrap_or_default(),
        /// The files it carries, as summarized when they were stored.
        attachments: Vec<AttachmentSummary> =
            Summary::of(m).into_iter().map(AttachmentSummary::from).collect(),
    }
}

view! {
    /// One file a message carries.
    AttachmentSummary from Summary {
        id: i64,
        file_name: String,
        content_type: String,
        /// Chatwoot's kind: image, audio, video or file.
        file_type: String,
        file_size: i64,
        width: Option<i32>,
        height: Option<i32>,
    }
}

view! {
    /// A stored file's description (its bytes travel beside it).
    AttachmentView from attachment::Model {
        id: i64,
        business_id: i64,
        message_id: i64,
        file_name: String,
        content_type: String,
        file_type: String,
        file_size: i64,
        width: Option<i32>,
        height: Option<i32>,
        created_at: Time,
    }
}

view! {
    /// One try at handing a message to its provider.
    AttemptView from message_attempt::Model {
        attempt: i32,
        started_at: Time,
        finished_at: Option<Time>,
        outcome: AttemptOutcome,
        provider_message_id: Option<String>,
        error_code: Option<String>,
        error_message: Option<String>,
    }
}

view! {
    /// A conversation with one client, as stored (names of the people in it are beside it in
    /// [`super::conversations::ConversationSummary`]).
    ConversationView from conversation::Model {
        id: i64,
        business_id: i64,
        client_id: i64,
        location_id: Option<i64>,
        status: ConversationStatus,
        snoozed_until: Option<Time>,
        assigned_staff_id: Option<i64>,
        resolved_at: Option<Time>,
        resolved_by_staff_id: Option<i64>,
        resolution_note: Option<String>,
        unread_count: i32,
        /// The channels it has used, as a mask of [`super::values::Channel`] bits.
        channel_mask: i32,
        last_message_at: Option<Time>,
        last_message_preview: Option<String>,
        last_message_channel: Option<Channel>,
        last_message_direction: Option<Direction>,
        last_activity_at: Time,
        created_at: Time,
        updated_at: Time,
        contact_last_seen_at: Option<Time>,
        agent_last_seen_at: Option<Time>,
        /// Web chat: Chatwoot's custom attributes, a JSON object as text.
        custom_attributes: Option<String>,
    }
}

view! {
    /// One entry of a business's event log.
    EventView from conversation_event::Model {
        id: i64,
        business_id: i64,
        conversation_id: Option<i64>,
        kind: String,
        actor_key_id: Option<i64>,
        actor_staff_id: Option<i64>,
        /// A JSON object with the change's details.
        data: String,
        created_at: Time,
    }
}

view! {
    /// A business's client (a customer it messages).
    ClientView from client::Model {
        id: i64,
        business_id: i64,
        external_ref: Option<String>,
        name: String,
        phone_e164: Option<String>,
        email: Option<String>,
        sms_consent: bool,
        sms_consent_updated_at: Option<Time>,
        created_at: Time,
        updated_at: Time,
        /// Chatwoot's custom attributes: a JSON object, as text.
        custom_attributes: Option<String>,
    }
}

view! {
    /// A member of a business's staff.
    StaffView from staff::Model {
        id: i64,
        business_id: i64,
        external_ref: Option<String>,
        name: String,
        email: Option<String>,
        role: String,
        active: bool,
        created_at: Time,
        updated_at: Time,
    }
}

view! {
    /// A business's location, with the phone numbers it sends from.
    LocationView from location::Model {
        id: i64,
        business_id: i64,
        external_ref: Option<String>,
        name: String,
        time_zone: Option<String>,
        messaging_service_sid: Option<String>,
        email_sender: Option<String>,
        created_at: Time,
        updated_at: Time,
    }
    computed |_row| {
        /// Filled in by [`LocationView::new`].
        phone_numbers: Vec<String> = Vec::new(),
    }
}

impl LocationView {
    pub(super) fn new(row: location::Model, phone_numbers: Vec<String>) -> Self {
        Self { phone_numbers, ..Self::from(row) }
    }
}

view! {
    /// A business and what it has turned on.
    BusinessView from business::Model {
        id: i64,
        name: String,
        created_at: Time,
        updated_at: Time,
        external_ref: Option<String>,
        time_zone: String,
        default_calling_code: String,
        sms_enabled: bool,
        email_enabled: bool,
        voice_enabled: bool,
        chat_enabled: bool,
        transcribe_voicemail: bool,
    }
}

view! {
    /// An API key's record (never the key: only its prefix).
    ApiKeyView from api_key::Model {
        id: i64,
        key_prefix: String,
        label: String,
        /// "platform" or "business".
        scope: String,
        business_id: Option<i64>,
        created_at: Time,
        last_used_at: Option<Time>,
        revoked_at: Option<Time>,
    }
}

view! {
    /// An outbound webhook endpoint (its secrets are shown only when issued).
    EndpointView from webhook_endpoint::Model {
        id: i64,
        business_id: i64,
        url: String,
        description: String,
        enabled: bool,
        disabled_reason: Option<String>,
        disabled_at: Option<Time>,
        /// Until when the secret before the last rotation still signs beside the new one.
        previous_secret_until: Option<Time>,
        consecutive_failures: i32,
        created_at: Time,
        updated_at: Time,
    }
    computed |e| {
        /// The event kinds it receives; empty: every kind.
        event_types: Vec<String> = super::webhook_endpoints::event_types_of(&e.event_types),
    }
}

view! {
    /// A business's web-chat inbox.
    InboxView from inbox::Model {
        id: i64,
        business_id: i64,
        location_id: Option<i64>,
        name: String,
        /// The public identifier widgets address it by.
        identifier: String,
        /// The secret identity hashes are made with (shown to the business that owns it).
        hmac_token: String,
        hmac_mandatory: bool,
        created_at: Time,
    }
}

view! {
    /// A webhook delivery as its endpoint's log shows it.
    DeliveryView from DeliveryRow {
        id: i64,
        endpoint_id: i64,
        event_id: i64,
        /// The event's kind.
        kind: String,
        state: WebhookDeliveryState,
        attempt_count: i32,
        next_attempt_at: Time,
        last_status_code: Option<i32>,
        last_error: Option<String>,
        last_attempt_at: Option<Time>,
        delivered_at: Option<Time>,
        created_at: Time,
    }
    computed |row| {
        /// The `webhook-id` its requests carry.
        webhook_id: String = super::webhook_endpoints::webhook_id(row.endpoint_id, row.event_id),
    }
}
