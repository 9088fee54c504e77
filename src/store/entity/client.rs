use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "clients")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub business_id: i64,
    pub external_ref: Option<String>,
    pub name: String,
    pub phone_e164: Option<String>,
    pub email: Option<String>,
    pub sms_consent: bool,
    pub sms_consent_updated_at: Option<ChronoDateTimeUtc>,
    pub search_text: String,
    pub created_at: ChronoDateTimeUtc,
    pub updated_at: ChronoDateTimeUtc,
    /// Chatwoot's custom attributes: a JSON object, as text.
    pub custom_attributes: Option<String>,
}

relations! {
    belongs_to { Business: business via BusinessId }
    has_many { Conversations: conversation }
}

impl ActiveModelBehavior for ActiveModel {}
