use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "locations")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub business_id: i64,
    pub external_ref: Option<String>,
    pub name: String,
    pub time_zone: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub email_sender: Option<String>,
    pub created_at: ChronoDateTimeUtc,
    pub updated_at: ChronoDateTimeUtc,
}

relations! {
    belongs_to { Business: business via BusinessId }
}

impl ActiveModelBehavior for ActiveModel {}
