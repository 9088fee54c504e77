//! Queries for web chat: inboxes, the contacts seen through them, and what the widget shows.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::Expr,
};

use super::{
    StoreResult,
    entity::{contact_inbox, conversation, inbox, message},
};

pub struct NewInbox {
    pub business_id: i64,
    pub location_id: Option<i64>,
    pub name: String,
    pub identifier: String,
    pub hmac_token: String,
    pub hmac_mandatory: bool,
}

pub async fn insert_inbox(conn: &impl ConnectionTrait, new: NewInbox, now: DateTime<Utc>) -> StoreResult<inbox::Model> {
    Ok(inbox::ActiveModel {
        business_id: Set(new.business_id),
        location_id: Set(new.location_id),
        name: Set(new.name),
        identifier: Set(new.identifier),
        hmac_token: Set(new.hmac_token),
        hmac_mandatory: Set(new.hmac_mandatory),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(conn)
    .await?)
}

pub async fn inboxes(conn: &impl ConnectionTrait, business_id: i64) -> StoreResult<Vec<inbox::Model>> {
    Ok(inbox::Entity::find()
        .filter(inbox::Column::BusinessId.eq(business_id))
        .order_by_asc(inbox::Column::Id)
        .limit(1_000)
        .all(conn)
        .await?)
}

pub async fn inbox_by_identifier(conn: &impl ConnectionTrait, identifier: &str) -> StoreResult<Option<inbox::Model>> {
    Ok(inbox::Entity::find().filter(inbox::Column::Identifier.eq(identifier)).one(conn).await?)
}

/// The contact with this source id in this inbox (a source id of another inbox is no match).
pub async fn contact(
    conn: &impl ConnectionTrait,
    inbox_id: i64,
    source_id: &str,
) -> StoreResult<Option<contact_inbox::Model>> {
    Ok(contact_inbox::Entity::find()
        .filter(contact_inbox::Column::InboxId.eq(inbox_id))
        .filter(contact_inbox::Column::SourceId.eq(source_id))
        .one(conn)
        .await?)
}

pub async fn contact_of_client(
    conn: &impl ConnectionTrait,
    inbox_id: i64,
    client_id: i64,
) -> StoreResult<Option<contact_inbox::Model>> {
    Ok(contact_inbox::Entity::find()
        .filter(contact_inbox::Column::InboxId.eq(inbox_id))
        .filter(contact_inbox::Column::ClientId.eq(client_id))
        .one(conn)
        .await?)
}

pub async fn insert_contact(
    conn: &impl ConnectionTrait,
    inbox_id: i64,
    client_id: i64,
    source_id: &str,
    now: DateTime<Utc>,
) -> StoreResult<contact_inbox::Model> {
    Ok(contact_inbox::ActiveModel {
        inbox_id: Set(inbox_id),
        client_id: Set(client_id),
        source_id: Set(source_id.to_owned()),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(conn)
    .await?)
}

/// A conversation's client-visible messages (no internal notes), oldest first.
pub async fn visible_messages(
    conn: &impl ConnectionTrait,
    conversation_id: i64,
    limit: u64,
) -> StoreResult<Vec<message::Model>> {
    Ok(message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .filter(message::Column::Channel.ne("NOTE"))
        .order_by_asc(message::Column::CreatedAt)
        .order_by_asc(message::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

pub async fn set_contact_last_seen(
    conn: &impl ConnectionTrait,
    conversation_id: i64,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    conversation::Entity::update_many()
        .col_expr(conversation::Column::ContactLastSeenAt, Expr::value(at))
        .filter(conversation::Column::Id.eq(conversation_id))
        .exec(conn)
        .await?;
    Ok(())
}

pub async fn set_content_attributes(
    conn: &impl ConnectionTrait,
    message_id: i64,
    attributes: String,
) -> StoreResult<()> {
    message::Entity::update_many()
        .col_expr(message::Column::ContentAttributes, Expr::value(attributes))
        .filter(message::Column::Id.eq(message_id))
        .exec(conn)
        .await?;
    Ok(())
}
