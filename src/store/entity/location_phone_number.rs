use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "location_phone_numbers")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub business_id: i64,
    pub location_id: i64,
    pub phone_e164: String,
    pub created_at: ChronoDateTimeUtc,
}

relations! {
    belongs_to { Business: business via BusinessId, Location: location via LocationId }
}

impl ActiveModelBehavior for ActiveModel {}
