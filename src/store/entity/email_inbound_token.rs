use sea_orm::entity::prelude::*;

/// A business's inbound-email token: its public prefix and SHA-256 hash, never the token.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "email_inbound_tokens")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub business_id: i64,
    pub token_prefix: String,
    pub token_hash: String,
    pub created_at: ChronoDateTimeUtc,
}

relations! {
    belongs_to { Business: business via BusinessId }
}

impl ActiveModelBehavior for ActiveModel {}
