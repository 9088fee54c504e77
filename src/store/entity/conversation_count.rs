use sea_orm::entity::prelude::*;

/// How many of a business's conversations are in each (status, assignee) bucket, kept in step
/// with every change so that inbox counts never scan the conversations.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversation_counts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub business_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub status: String,
    /// 0 for unassigned.
    #[sea_orm(primary_key, auto_increment = false)]
    pub assignee_id: i64,
    pub count: i64,
}

relations! {
    belongs_to { Business: business via BusinessId }
}

impl ActiveModelBehavior for ActiveModel {}
