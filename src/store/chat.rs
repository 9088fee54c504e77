//! Queries for web chat: inboxes, the contacts seen through them, and what the widget shows.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::Expr,
};

use super::{
    StoreResult,
    entity::{client, contact_inbox, conversation, conversation_event, enums::Channel, inbox, message},
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

/// The contact inbox whose pubsub token is `token` (unique).
pub async fn contact_by_pubsub_token(
    conn: &impl ConnectionTrait,
    token: &str,
) -> StoreResult<Option<contact_inbox::Model>> {
    Ok(contact_inbox::Entity::find().filter(contact_inbox::Column::PubsubToken.eq(token)).one(conn).await?)
}

pub async fn inbox(conn: &impl ConnectionTrait, id: i64) -> StoreResult<Option<inbox::Model>> {
    Ok(inbox::Entity::find_by_id(id).one(conn).await?)
}

/// A new contact inbox: its source id and pubsub token, the client it sees, and whether that
/// binding was proven.
pub struct NewContact {
    pub inbox_id: i64,
    pub client_id: i64,
    pub source_id: String,
    pub pubsub_token: String,
    pub verified_identifier: Option<String>,
    pub claims: Claims,
}

/// What a visitor said about itself; shown back to it, never written onto a client's record.
#[derive(Clone, Debug, Default)]
pub struct Claims {
    pub identifier: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

pub async fn insert_contact(
    conn: &impl ConnectionTrait,
    new: NewContact,
    now: DateTime<Utc>,
) -> StoreResult<contact_inbox::Model> {
    Ok(contact_inbox::ActiveModel {
        inbox_id: Set(new.inbox_id),
        client_id: Set(new.client_id),
        source_id: Set(new.source_id),
        created_at: Set(now),
        pubsub_token: Set(Some(new.pubsub_token)),
        verified: Set(new.verified_identifier.is_some()),
        verified_identifier: Set(new.verified_identifier),
        claimed_identifier: Set(new.claims.identifier),
        claimed_email: Set(new.claims.email),
        claimed_phone: Set(new.claims.phone),
        ..Default::default()
    }
    .insert(conn)
    .await?)
}

/// Replaces the claims a contact made (absent ones keep their stored values).
pub async fn update_claims(
    conn: &impl ConnectionTrait,
    contact: contact_inbox::Model,
    claims: Claims,
) -> StoreResult<contact_inbox::Model> {
    let mut row: contact_inbox::ActiveModel = contact.into();
    for (column, value) in [
        (&mut row.claimed_identifier, claims.identifier),
        (&mut row.claimed_email, claims.email),
        (&mut row.claimed_phone, claims.phone),
    ] {
        if value.is_some() {
            *column = Set(value);
        }
    }
    Ok(row.update(conn).await?)
}

/// Binds every contact inbox of `from` to `to`, as proven (staff merged them, or the contact
/// proved its identifier).
pub async fn rebind_contacts(
    conn: &impl ConnectionTrait,
    from_client: i64,
    to_client: i64,
    verified_identifier: Option<&str>,
) -> StoreResult<u64> {
    Ok(contact_inbox::Entity::update_many()
        .col_expr(contact_inbox::Column::ClientId, Expr::value(to_client))
        .col_expr(contact_inbox::Column::Verified, Expr::value(true))
        .col_expr(contact_inbox::Column::VerifiedIdentifier, Expr::value(verified_identifier.map(str::to_owned)))
        .filter(contact_inbox::Column::ClientId.eq(from_client))
        .exec(conn)
        .await?
        .rows_affected)
}

/// Binds one contact inbox to `client_id`, proven for `identifier`.
pub async fn bind_contact(
    conn: &impl ConnectionTrait,
    contact_id: i64,
    client_id: i64,
    identifier: &str,
) -> StoreResult<()> {
    contact_inbox::Entity::update_many()
        .col_expr(contact_inbox::Column::ClientId, Expr::value(client_id))
        .col_expr(contact_inbox::Column::Verified, Expr::value(true))
        .col_expr(contact_inbox::Column::VerifiedIdentifier, Expr::value(identifier))
        .filter(contact_inbox::Column::Id.eq(contact_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Moves a conversation's messages and history into another conversation of the same business
/// and folds its summary in (channels seen, latest message, activity, unread count); the emptied
/// conversation is deleted by the caller.
pub async fn absorb_conversation(
    conn: &impl ConnectionTrait,
    from: &conversation::Model,
    into: &conversation::Model,
    client_id: i64,
) -> StoreResult<()> {
    message::Entity::update_many()
        .col_expr(message::Column::ConversationId, Expr::value(into.id))
        .col_expr(message::Column::ClientId, Expr::value(client_id))
        .filter(message::Column::ConversationId.eq(from.id))
        .exec(conn)
        .await?;
    conversation_event::Entity::update_many()
        .col_expr(conversation_event::Column::ConversationId, Expr::value(into.id))
        .filter(conversation_event::Column::ConversationId.eq(from.id))
        .exec(conn)
        .await?;
    let mut row: conversation::ActiveModel = into.clone().into();
    row.channel_mask = Set(into.channel_mask | from.channel_mask);
    if from.last_message_at > into.last_message_at {
        row.last_message_at = Set(from.last_message_at);
        row.last_message_preview = Set(from.last_message_preview.clone());
        row.last_message_channel = Set(from.last_message_channel);
        row.last_message_direction = Set(from.last_message_direction);
    }
    row.last_activity_at = Set(into.last_activity_at.max(from.last_activity_at));
    row.update(conn).await?;
    super::conversations::recount_unread(conn, into.id).await?;
    conversation::Entity::delete_by_id(from.id).exec(conn).await?;
    Ok(())
}

/// Gives a conversation (and its messages) to another client of the same business.
pub async fn reassign_conversation(
    conn: &impl ConnectionTrait,
    conversation_id: i64,
    client_id: i64,
) -> StoreResult<()> {
    conversation::Entity::update_many()
        .col_expr(conversation::Column::ClientId, Expr::value(client_id))
        .filter(conversation::Column::Id.eq(conversation_id))
        .exec(conn)
        .await?;
    message::Entity::update_many()
        .col_expr(message::Column::ClientId, Expr::value(client_id))
        .filter(message::Column::ConversationId.eq(conversation_id))
        .exec(conn)
        .await?;
    Ok(())
}

pub async fn delete_client(conn: &impl ConnectionTrait, client_id: i64) -> StoreResult<()> {
    client::Entity::delete_by_id(client_id).exec(conn).await?;
    Ok(())
}

/// Which of a conversation's messages a widget asks for (Chatwoot's MessageFinder).
#[derive(Clone, Copy, Debug)]
pub enum MessagePage {
    /// The latest 20.
    Latest,
    /// The 20 before message `id`.
    Before(i64),
    /// Up to 100 after message `id`.
    After(i64),
    /// Up to 1,000 from `after` (inclusive) to `before`.
    Between { after: i64, before: i64 },
}

/// A page of a conversation's client-visible messages (no internal notes), oldest first.
pub async fn visible_messages(
    conn: &impl ConnectionTrait,
    conversation_id: i64,
    page: MessagePage,
) -> StoreResult<Vec<message::Model>> {
    let select = message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .filter(message::Column::Channel.ne(Channel::Note));
    let (select, newest_first, limit) = match page {
        MessagePage::Latest => (select, true, 20),
        MessagePage::Before(id) => (select.filter(message::Column::Id.lt(id)), true, 20),
        MessagePage::After(id) => (select.filter(message::Column::Id.gt(id)), false, 100),
        MessagePage::Between { after, before } => {
            (select.filter(message::Column::Id.gte(after)).filter(message::Column::Id.lt(before)), false, 1_000)
        }
    };
    let mut rows = if newest_first {
        select.order_by_desc(message::Column::CreatedAt).order_by_desc(message::Column::Id)
    } else {
        select.order_by_asc(message::Column::CreatedAt).order_by_asc(message::Column::Id)
    }
    .limit(limit)
    .all(conn)
    .await?;
    if newest_first {
        rows.reverse();
    }
    Ok(rows)
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

/// Replaces a client's custom attributes (JSON text, already merged and capped).
pub async fn set_client_attributes(conn: &impl ConnectionTrait, client_id: i64, attributes: &str) -> StoreResult<()> {
    client::Entity::update_many()
        .col_expr(client::Column::CustomAttributes, Expr::value(attributes))
        .filter(client::Column::Id.eq(client_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Replaces a conversation's custom attributes (JSON text, already merged and capped).
pub async fn set_conversation_attributes(
    conn: &impl ConnectionTrait,
    conversation_id: i64,
    attributes: &str,
) -> StoreResult<()> {
    conversation::Entity::update_many()
        .col_expr(conversation::Column::CustomAttributes, Expr::value(attributes))
        .filter(conversation::Column::Id.eq(conversation_id))
        .exec(conn)
        .await?;
    Ok(())
}
