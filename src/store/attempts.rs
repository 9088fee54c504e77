//! A message's delivery attempts (`message_attempts`): one row per try at a provider, with its
//! outcome.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    sea_query::{Expr, ExprTrait},
};

use super::{
    StoreResult,
    entity::{message, message_attempt as attempt},
};

/// Appends an attempt to a message's history and counts it on the message.
pub async fn record_attempt(conn: &impl ConnectionTrait, new: attempt::ActiveModel) -> StoreResult<()> {
    let row = new.insert(conn).await?;
    message::Entity::update_many()
        .col_expr(message::Column::AttemptCount, Expr::col(message::Column::AttemptCount).add(1))
        .filter(message::Column::Id.eq(row.message_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// A message's attempts, in order.
pub async fn of_message(conn: &impl ConnectionTrait, message_id: i64) -> StoreResult<Vec<attempt::Model>> {
    Ok(attempt::Entity::find()
        .filter(attempt::Column::MessageId.eq(message_id))
        .order_by_asc(attempt::Column::Attempt)
        .order_by_asc(attempt::Column::Id)
        .all(conn)
        .await?)
}
