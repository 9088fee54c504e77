use sea_orm::entity::prelude::*;

/// When each sender (a number, a messaging service, an email address) may next send, shared by
/// every worker and replica.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sender_pacing")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub sender_key: String,
    pub next_slot_at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
