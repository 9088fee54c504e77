use sea_orm::entity::prelude::*;

/// A business's credentials for one provider (twilio, sendgrid, smtp), as JSON. Never returned
/// by an endpoint, never logged.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "provider_credentials")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub business_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub kind: String,
    pub config: String,
    pub updated_at: ChronoDateTimeUtc,
    /// The provider's public account id (Twilio's AC… SID), to find the credentials of a webhook.
    pub account_ref: Option<String>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderCredential")
            .field("business_id", &self.business_id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

relations! {
    belongs_to { Business: business via BusinessId }
}

impl ActiveModelBehavior for ActiveModel {}
