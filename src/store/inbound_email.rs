//! Inbound-email tokens (one per business, hashed) and the lookups that thread a reply.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, sea_query::OnConflict,
};

use super::{
    StoreResult,
    entity::{email_inbound_token as token, enums::Channel, message},
};

/// Sets business `business_id`'s token (replacing the one it had) in one statement.
pub async fn set_token(
    conn: &impl ConnectionTrait,
    business_id: i64,
    prefix: &str,
    hash_hex: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let row = token::ActiveModel {
        business_id: Set(business_id),
        token_prefix: Set(prefix.to_owned()),
        token_hash: Set(hash_hex.to_owned()),
        created_at: Set(now),
        ..Default::default()
    };
    token::Entity::insert(row)
        .on_conflict(
            OnConflict::column(token::Column::BusinessId)
                .update_columns([token::Column::TokenPrefix, token::Column::TokenHash, token::Column::CreatedAt])
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// The tokens sharing a public prefix: the candidates a presented token's hash is compared with.
pub async fn tokens_by_prefix(conn: &impl ConnectionTrait, prefix: &str) -> StoreResult<Vec<token::Model>> {
    Ok(token::Entity::find().filter(token::Column::TokenPrefix.eq(prefix)).limit(16).all(conn).await?)
}

/// Business `business_id`'s EMAIL messages with one of these public ids (Omega's own
/// `Message-ID`s and reply addresses carry them), newest first.
pub async fn email_messages_by_public_ids(
    conn: &impl ConnectionTrait,
    business_id: i64,
    public_ids: &[String],
) -> StoreResult<Vec<message::Model>> {
    if public_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(message::Entity::find()
        .filter(message::Column::BusinessId.eq(business_id))
        .filter(message::Column::Channel.eq(Channel::Email))
        .filter(message::Column::PublicId.is_in(public_ids.iter().cloned()))
        .order_by_desc(message::Column::Id)
        .all(conn)
        .await?)
}

/// Business `business_id`'s EMAIL messages with one of these provider ids (the `Message-ID`s of
/// emails received before, and of emails sent over SMTP), newest first.
pub async fn email_messages_by_provider_ids(
    conn: &impl ConnectionTrait,
    business_id: i64,
    provider_ids: &[String],
) -> StoreResult<Vec<message::Model>> {
    if provider_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(message::Entity::find()
        .filter(message::Column::BusinessId.eq(business_id))
        .filter(message::Column::Channel.eq(Channel::Email))
        .filter(message::Column::ProviderMessageId.is_in(provider_ids.iter().cloned()))
        .order_by_desc(message::Column::Id)
        .limit(100)
        .all(conn)
        .await?)
}
