//! The typed state of the stored rows: every column that holds one of a fixed set of values is
//! one of these enums, so a value outside the set read back from the database is an error
//! (`DbErr::Type`), never quietly taken for a default. The stored spellings are the ones the
//! migrations wrote; the domain's rules for them (parsing requests, transitions) live in
//! `domain::values`, which re-exports these types.

use sea_orm::entity::prelude::*;

/// The state of a conversation (`conversations.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum ConversationStatus {
    #[sea_orm(string_value = "OPEN")]
    Open,
    #[sea_orm(string_value = "PENDING")]
    Pending,
    #[sea_orm(string_value = "SNOOZED")]
    Snoozed,
    #[sea_orm(string_value = "RESOLVED")]
    Resolved,
}

/// The channel a message travels on (`messages.channel`, `delivery_jobs.channel`,
/// `conversations.last_message_channel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum Channel {
    #[sea_orm(string_value = "SMS")]
    Sms,
    #[sea_orm(string_value = "EMAIL")]
    Email,
    #[sea_orm(string_value = "VOICE")]
    Voice,
    #[sea_orm(string_value = "CHAT")]
    Chat,
    /// Internal notes: never sent, never shown to clients.
    #[sea_orm(string_value = "NOTE")]
    Note,
}

impl Channel {
    /// The channel's bit in `conversations.channel_mask` (notes have none).
    pub fn bit(self) -> i32 {
        match self {
            Self::Sms => 1,
            Self::Email => 2,
            Self::Voice => 4,
            Self::Chat => 8,
            Self::Note => 0,
        }
    }
}

/// Which way a message went (`messages.direction`, `conversations.last_message_direction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum Direction {
    #[sea_orm(string_value = "INBOUND")]
    Inbound,
    #[sea_orm(string_value = "OUTBOUND")]
    Outbound,
    /// Notes: between staff, never to or from the client.
    #[sea_orm(string_value = "INTERNAL")]
    Internal,
}

/// Who wrote a message (`messages.sender_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum SenderType {
    #[sea_orm(string_value = "client")]
    Client,
    #[sea_orm(string_value = "staff")]
    Staff,
    /// Omega itself, or an integration sending with no staff member named.
    #[sea_orm(string_value = "system")]
    System,
}

/// Where a message is on its way (`messages.status`); the order is `DeliveryStatus::rank`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum DeliveryStatus {
    #[sea_orm(string_value = "ACCEPTED")]
    Accepted,
    #[sea_orm(string_value = "SCHEDULED")]
    Scheduled,
    #[sea_orm(string_value = "QUEUED")]
    Queued,
    #[sea_orm(string_value = "SENDING")]
    Sending,
    #[sea_orm(string_value = "SENT")]
    Sent,
    #[sea_orm(string_value = "DELIVERED")]
    Delivered,
    #[sea_orm(string_value = "UNDELIVERED")]
    Undelivered,
    #[sea_orm(string_value = "FAILED")]
    Failed,
    #[sea_orm(string_value = "PARTIALLY_DELIVERED")]
    PartiallyDelivered,
    #[sea_orm(string_value = "CANCELED")]
    Canceled,
    #[sea_orm(string_value = "READ")]
    Read,
    /// Inbound messages: arrived.
    #[sea_orm(string_value = "RECEIVED")]
    Received,
    /// Notes: written down, nothing to deliver.
    #[sea_orm(string_value = "RECORDED")]
    Recorded,
}

/// Where an outbox job is (`delivery_jobs.state`). A job moves
/// pending → running (claimed under a lease) → sending (its provider call is in flight) →
/// settling (the answer is being written) → done | failed | pending (rescheduled), or, when a
/// send's outcome is unknown, → reconcile → reconciling (being looked up at the provider) →
/// done | failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum JobState {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "running")]
    Running,
    #[sea_orm(string_value = "sending")]
    Sending,
    #[sea_orm(string_value = "settling")]
    Settling,
    #[sea_orm(string_value = "reconcile")]
    Reconcile,
    #[sea_orm(string_value = "reconciling")]
    Reconciling,
    #[sea_orm(string_value = "done")]
    Done,
    #[sea_orm(string_value = "failed")]
    Failed,
}

impl JobState {
    /// The states of a job that is not finished.
    pub const OPEN: [Self; 6] =
        [Self::Pending, Self::Running, Self::Sending, Self::Settling, Self::Reconcile, Self::Reconciling];
}

/// How one try at handing a message to its provider ended (`message_attempts.outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum AttemptOutcome {
    /// The provider took it (its id is recorded).
    #[sea_orm(string_value = "accepted")]
    Accepted,
    /// Refused for now (rate limit, outage): tried again later.
    #[sea_orm(string_value = "retryable")]
    Retryable,
    /// Refused for good.
    #[sea_orm(string_value = "rejected")]
    Rejected,
    /// No answer: it may or may not have been sent.
    #[sea_orm(string_value = "ambiguous")]
    Ambiguous,
}

/// Where one event is on its way to one webhook endpoint (`webhook_deliveries.state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum WebhookDeliveryState {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "sending")]
    Sending,
    #[sea_orm(string_value = "delivered")]
    Delivered,
    #[sea_orm(string_value = "failed")]
    Failed,
}

/// Each value serializes (JSON, logs) and displays as its stored spelling.
macro_rules! spelled_as_stored {
    ($($name:ident),*) => {$(
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.to_value())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.to_value())
            }
        }
    )*};
}

spelled_as_stored!(
    ConversationStatus,
    Channel,
    Direction,
    SenderType,
    DeliveryStatus,
    JobState,
    AttemptOutcome,
    WebhookDeliveryState
);
