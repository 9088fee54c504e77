use sea_orm::entity::prelude::*;

/// An issued access token, by its `jti`: revoking the row revokes the token everywhere.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub jti: String,
    pub api_key_id: i64,
    pub business_id: Option<i64>,
    pub staff_id: Option<i64>,
    pub issued_at: ChronoDateTimeUtc,
    pub expires_at: ChronoDateTimeUtc,
    pub revoked_at: Option<ChronoDateTimeUtc>,
}

relations! {
    belongs_to { ApiKey: api_key via ApiKeyId, Business: business via BusinessId, Staff: staff via StaffId }
}

impl ActiveModelBehavior for ActiveModel {}
