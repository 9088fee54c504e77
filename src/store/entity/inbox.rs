use sea_orm::entity::prelude::*;

/// A business's web-chat channel, addressed by an unguessable identifier.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "inboxes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub business_id: i64,
    pub location_id: Option<i64>,
    pub name: String,
    pub identifier: String,
    pub hmac_token: String,
    pub hmac_mandatory: bool,
    pub created_at: ChronoDateTimeUtc,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("id", &self.id).field("business_id", &self.business_id).finish_non_exhaustive()
    }
}

relations! {
    belongs_to { Business: business via BusinessId, Location: location via LocationId }
}

impl ActiveModelBehavior for ActiveModel {}
