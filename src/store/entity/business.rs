use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "businesses")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub name: String,
    pub created_at: ChronoDateTimeUtc,
    pub updated_at: ChronoDateTimeUtc,
    pub external_ref: Option<String>,
    pub time_zone: String,
    pub default_calling_code: String,
    pub sms_enabled: bool,
    pub email_enabled: bool,
    pub voice_enabled: bool,
    pub chat_enabled: bool,
    /// Whether Twilio transcribes the business's voicemail (Twilio bills each transcription).
    pub transcribe_voicemail: bool,
}

relations! {
    belongs_to {}
    has_many { Clients: client, Conversations: conversation, Staff: staff, Locations: location }
}

impl ActiveModelBehavior for ActiveModel {}
