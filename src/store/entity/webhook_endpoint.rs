use sea_orm::entity::prelude::*;

/// Where a business wants its events posted (outbound webhooks). `secret` is the signing
/// secret, sealed (see `crate::secrets`); never returned after it is issued, never logged.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_endpoints")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub business_id: i64,
    pub url: String,
    pub description: String,
    /// The filter as `,kind,kind,`; empty: every kind.
    pub event_types: String,
    pub enabled: bool,
    /// Why Omega disabled it (None when enabled, or disabled by the business).
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<ChronoDateTimeUtc>,
    pub secret: String,
    /// The secret before the last rotation, still signing beside the new one until
    /// `previous_secret_until`.
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<ChronoDateTimeUtc>,
    /// Deliveries that ended failed since the last one delivered.
    pub consecutive_failures: i32,
    pub created_at: ChronoDateTimeUtc,
    pub updated_at: ChronoDateTimeUtc,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("business_id", &self.business_id)
            .field("url", &self.url)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

relations! {
    belongs_to { Business: business via BusinessId }
}

impl ActiveModelBehavior for ActiveModel {}
