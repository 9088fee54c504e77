use sea_orm::entity::prelude::*;

/// A client seen through an inbox, and the source id (contact identifier) Omega issued for it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "contact_inboxes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub inbox_id: i64,
    pub client_id: i64,
    pub source_id: String,
    pub created_at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
