use sea_orm::entity::prelude::*;

/// One contact create through an inbox: the source id (contact identifier) Omega issued, the
/// client it sees, and whether that binding was proven. An unproven contact always sees its own
/// visitor client; what it said about itself is kept here as its claim.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "contact_inboxes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub inbox_id: i64,
    pub client_id: i64,
    pub source_id: String,
    pub created_at: ChronoDateTimeUtc,
    /// The secret a live connection subscribes with (never the source id).
    pub pubsub_token: Option<String>,
    /// Proven by a valid `identifier_hash`, or by staff merging the visitor into a client.
    pub verified: bool,
    /// The identifier the proof was for: on an `hmac_mandatory` inbox every call's hash is
    /// checked against it.
    pub verified_identifier: Option<String>,
    pub claimed_identifier: Option<String>,
    pub claimed_email: Option<String>,
    pub claimed_phone: Option<String>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactInbox")
            .field("id", &self.id)
            .field("inbox_id", &self.inbox_id)
            .field("client_id", &self.client_id)
            .field("verified", &self.verified)
            .finish_non_exhaustive()
    }
}

relations! {
    belongs_to { Inbox: inbox via InboxId, Client: client via ClientId }
}

impl ActiveModelBehavior for ActiveModel {}
