//! Message rows: inserts, reads (by id, public id, provider id, idempotency key, request,
//! conversation) and status changes. Changes are conditional on the status they were decided
//! from (`WHERE status = old`), so a concurrent change is detected rather than overwritten.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::Expr,
};

use super::{
    StoreResult, dialect,
    entity::{
        enums::{Channel, ConversationStatus, DeliveryStatus, Direction},
        message,
    },
};

/// The message with `public_id`: within one business when `business_id` is given, else in any
/// (the caller then checks who may see it).
pub async fn by_public_id(
    conn: &impl ConnectionTrait,
    business_id: Option<i64>,
    public_id: &str,
) -> StoreResult<Option<message::Model>> {
    let mut select = message::Entity::find().filter(message::Column::PublicId.eq(public_id));
    if let Some(business_id) = business_id {
        select = select.filter(message::Column::BusinessId.eq(business_id));
    }
    Ok(select.one(conn).await?)
}

pub async fn by_id(conn: &impl ConnectionTrait, id: i64) -> StoreResult<Option<message::Model>> {
    Ok(message::Entity::find_by_id(id).one(conn).await?)
}

/// Messages by row id, in one query (the delivery workers load a claimed batch at once).
pub async fn by_ids(conn: &impl ConnectionTrait, ids: &[i64]) -> StoreResult<Vec<message::Model>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let backend = conn.get_database_backend();
    Ok(message::Entity::find().filter(dialect::one_of(backend, message::Column::Id, ids)).all(conn).await?)
}

/// The messages a provider's id names, oldest first: within one business when `business_id` is
/// given (the id is unique there), else in every business (a webhook then checks which owner
/// signed it).
pub async fn by_provider_id(
    conn: &impl ConnectionTrait,
    business_id: Option<i64>,
    provider: Option<&str>,
    provider_message_id: &str,
) -> StoreResult<Vec<message::Model>> {
    let mut select = message::Entity::find().filter(message::Column::ProviderMessageId.eq(provider_message_id));
    if let Some(business_id) = business_id {
        select = select.filter(message::Column::BusinessId.eq(business_id));
    }
    if let Some(provider) = provider {
        select = select.filter(message::Column::Provider.eq(provider));
    }
    Ok(select.order_by_asc(message::Column::Id).limit(100).all(conn).await?)
}

pub async fn by_idempotency_keys(
    conn: &impl ConnectionTrait,
    business_id: i64,
    keys: &[String],
) -> StoreResult<Vec<message::Model>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    Ok(message::Entity::find()
        .filter(message::Column::BusinessId.eq(business_id))
        .filter(message::Column::IdempotencyKey.is_in(keys.iter().cloned()))
        .order_by_asc(message::Column::Id)
        .all(conn)
        .await?)
}

/// Every message one call created, oldest first; scoped to a business unless `None` (platform).
/// Up to `limit` messages one call created, oldest first, after the message `after`.
pub async fn by_request(
    conn: &impl ConnectionTrait,
    business_id: Option<i64>,
    request_id: &str,
    after: Option<i64>,
    limit: u64,
) -> StoreResult<Vec<message::Model>> {
    let mut select = message::Entity::find().filter(message::Column::RequestId.eq(request_id));
    if let Some(business_id) = business_id {
        select = select.filter(message::Column::BusinessId.eq(business_id));
    }
    if let Some(after) = after {
        select = select.filter(message::Column::Id.gt(after));
    }
    Ok(select.order_by_asc(message::Column::Id).limit(limit).all(conn).await?)
}

/// A status change and what goes with it.
pub struct StatusUpdate {
    pub status: DeliveryStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
}

/// Sets the status if it is still `expected` (the caller decided from it); answers whether it
/// was. Timestamps and provider ids are only filled in, never cleared.
pub async fn change_delivery_status(
    conn: &impl ConnectionTrait,
    id: i64,
    expected: DeliveryStatus,
    update: StatusUpdate,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let mut query = message::Entity::update_many()
        .col_expr(message::Column::Status, Expr::value(update.status))
        .col_expr(message::Column::StatusUpdatedAt, Expr::value(now));
    if update.error_code.is_some() || update.error_message.is_some() {
        query = query
            .col_expr(message::Column::ErrorCode, Expr::value(update.error_code))
            .col_expr(message::Column::ErrorMessage, Expr::value(update.error_message));
    }
    for (column, value) in [
        (message::Column::SentAt, update.sent_at),
        (message::Column::DeliveredAt, update.delivered_at),
        (message::Column::FailedAt, update.failed_at),
    ] {
        if let Some(value) = value {
            query = query.col_expr(column, Expr::value(value));
        }
    }
    if let (Some(provider), Some(id)) = (update.provider, update.provider_message_id) {
        query = query
            .col_expr(message::Column::Provider, Expr::value(provider))
            .col_expr(message::Column::ProviderMessageId, Expr::value(id));
    }
    let result =
        query.filter(message::Column::Id.eq(id)).filter(message::Column::Status.eq(expected)).exec(conn).await?;
    Ok(result.rows_affected == 1)
}

/// A FAILED message that may be resent: not one whose outcome is unknown (`AMBIGUOUS`, until
/// reconciliation settles it) and not one its provider ever accepted.
fn certainly_unsent() -> Condition {
    Condition::all()
        .add(message::Column::Status.eq(DeliveryStatus::Failed))
        .add(Condition::any().add(message::Column::ErrorCode.is_null()).add(message::Column::ErrorCode.ne("AMBIGUOUS")))
        .add(Expr::cust(
            "NOT EXISTS (SELECT 1 FROM message_attempts a WHERE a.message_id = messages.id AND a.outcome = 'accepted')",
        ))
}

/// Sends a FAILED message back to QUEUED for a deliberate retry (conditional on it still being
/// FAILED and certainly unsent); clears its error but keeps its attempts.
pub async fn requeue_failed(conn: &impl ConnectionTrait, id: i64, now: DateTime<Utc>) -> StoreResult<bool> {
    let result = message::Entity::update_many()
        .col_expr(message::Column::Status, Expr::value(DeliveryStatus::Queued))
        .col_expr(message::Column::StatusUpdatedAt, Expr::value(now))
        .col_expr(message::Column::ErrorCode, Expr::value(Option::<String>::None))
        .col_expr(message::Column::ErrorMessage, Expr::value(Option::<String>::None))
        .col_expr(message::Column::FailedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(message::Column::Id.eq(id))
        .filter(certainly_unsent())
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Which outbound messages a retry considers; only FAILED, certainly unsent ones are taken.
pub struct RetryFilter {
    pub business_id: Option<i64>,
    pub public_ids: Vec<String>,
    pub request_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: u64,
}

impl RetryFilter {
    fn condition(&self) -> Condition {
        let mut cond = Condition::all().add(message::Column::Direction.eq(Direction::Outbound));
        if let Some(business_id) = self.business_id {
            cond = cond.add(message::Column::BusinessId.eq(business_id));
        }
        if !self.public_ids.is_empty() {
            cond = cond.add(message::Column::PublicId.is_in(self.public_ids.clone()));
        }
        if let Some(request_id) = &self.request_id {
            cond = cond.add(message::Column::RequestId.eq(request_id.clone()));
        }
        if let Some(since) = self.since {
            cond = cond.add(message::Column::CreatedAt.gte(since));
        }
        if let Some(until) = self.until {
            cond = cond.add(message::Column::CreatedAt.lt(until));
        }
        cond
    }
}

/// The oldest `limit` FAILED, certainly unsent messages matching the filter. The limit applies
/// after that choice, so that repeating the call (each retried message leaves FAILED) reaches
/// every one of them however many messages of other statuses come first.
pub async fn retry_candidates(conn: &impl ConnectionTrait, filter: &RetryFilter) -> StoreResult<Vec<message::Model>> {
    Ok(message::Entity::find()
        .filter(filter.condition())
        .filter(certainly_unsent())
        .order_by_asc(message::Column::Id)
        .limit(filter.limit)
        .all(conn)
        .await?)
}

/// How many messages the filter matches that a retry leaves alone: with explicit ids, every
/// matching one that is not FAILED and certainly unsent; otherwise the FAILED ones that may have
/// been sent (counted up to 10,000).
pub async fn retry_skipped(conn: &impl ConnectionTrait, filter: &RetryFilter) -> StoreResult<u64> {
    let select = message::Entity::find().filter(filter.condition()).filter(certainly_unsent().not());
    let select = if filter.public_ids.is_empty() {
        select.filter(message::Column::Status.eq(DeliveryStatus::Failed))
    } else {
        select
    };
    let (count, _) = super::count_capped(conn, select, 10_000).await?;
    Ok(count)
}

// ---- provider outcomes ----

/// An acceptance learnt after the message was failed as ambiguous (a send that outlived its
/// worker's claim, or one found at the provider): FAILED/AMBIGUOUS → SENT with the provider's
/// id. Recorded acceptance wins over a guess; answers whether it moved.
pub async fn settle_late_acceptance(
    conn: &impl ConnectionTrait,
    id: i64,
    provider: &str,
    provider_message_id: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let result = message::Entity::update_many()
        .col_expr(message::Column::Status, Expr::value(DeliveryStatus::Sent))
        .col_expr(message::Column::StatusUpdatedAt, Expr::value(now))
        .col_expr(message::Column::ErrorCode, Expr::value(Option::<String>::None))
        .col_expr(message::Column::ErrorMessage, Expr::value(Option::<String>::None))
        .col_expr(message::Column::FailedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(message::Column::SentAt, Expr::value(now))
        .col_expr(message::Column::Provider, Expr::value(provider))
        .col_expr(message::Column::ProviderMessageId, Expr::value(provider_message_id))
        .filter(message::Column::Id.eq(id))
        .filter(message::Column::Status.eq(DeliveryStatus::Failed))
        .filter(message::Column::ErrorCode.is_in(["AMBIGUOUS", "NOT_SENT"]))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// An ambiguous send the provider has no record of: still FAILED, now certainly unsent (and so
/// open to a deliberate retry). Answers whether it was still ambiguous.
pub async fn settle_unsent(
    conn: &impl ConnectionTrait,
    id: i64,
    code: &str,
    text: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let result = message::Entity::update_many()
        .col_expr(message::Column::ErrorCode, Expr::value(code))
        .col_expr(message::Column::ErrorMessage, Expr::value(text))
        .col_expr(message::Column::StatusUpdatedAt, Expr::value(now))
        .filter(message::Column::Id.eq(id))
        .filter(message::Column::Status.eq(DeliveryStatus::Failed))
        .filter(message::Column::ErrorCode.eq("AMBIGUOUS"))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

// ---- new messages and pages ----

/// A new message of the conversation, with a fresh public id, from `sent_by` when a staff
/// member wrote it; the caller sets the rest (its typed state always).
pub fn new_message(
    business_id: i64,
    conversation_id: i64,
    client_id: i64,
    sent_by: Option<i64>,
    content: String,
) -> message::ActiveModel {
    message::ActiveModel {
        public_id: Set(uuid::Uuid::now_v7().to_string()),
        business_id: Set(business_id),
        conversation_id: Set(conversation_id),
        client_id: Set(client_id),
        sender_staff_id: Set(sent_by),
        content: Set(content),
        ..Default::default()
    }
}

/// Inserts a message. The caller sets what it knows (its typed state always); what it leaves
/// unset starts out empty, with no attempts, its status dated `now` and, unless given, created
/// `now`.
pub async fn insert_message(
    conn: &impl ConnectionTrait,
    new: message::ActiveModel,
    now: DateTime<Utc>,
) -> StoreResult<message::Model> {
    Ok(completed(new, now).insert(conn).await?)
}

/// What [`insert_message`] fills in.
fn completed(mut new: message::ActiveModel, now: DateTime<Utc>) -> message::ActiveModel {
    // SQLite's guarded write finds the message it just stored by its public id.
    if new.public_id.is_not_set() {
        new.public_id = Set(uuid::Uuid::now_v7().to_string());
    }
    if new.created_at.is_not_set() {
        new.created_at = Set(now);
    }
    new.status_updated_at = Set(Some(now));
    new.attempt_count = Set(0);
    new
}

/// Inserts a message with its note on the conversation and its event, all or nothing, unless
/// the conversation's status is one of `unless` (an inbound message reopens a resolved or
/// snoozed one: that takes the caller's transaction); then it writes nothing and answers `None`.
/// The conversation's status is checked by the write itself, so a change between the caller's
/// read and this write is never missed. The common ingest, one round trip on PostgreSQL.
pub async fn insert_into_conversation_unless(
    store: &super::Store,
    new: message::ActiveModel,
    note: &super::conversations::MessageNote<'_>,
    unless: &[ConversationStatus],
    event: super::events::NewEvent<'_>,
    now: DateTime<Utc>,
) -> StoreResult<Option<message::Model>> {
    store.write_grouped(guarded_write(None, new, note, unless, event, now)).await
}

/// A client named by one of its identities that are unique within a business.
#[derive(Clone, Copy)]
pub enum UniqueIdentity<'a> {
    Phone(&'a str),
    Email(&'a str),
}

impl<'a> UniqueIdentity<'a> {
    /// (phone, email): the one this names.
    pub fn addresses(self) -> (Option<&'a str>, Option<&'a str>) {
        match self {
            UniqueIdentity::Phone(phone) => (Some(phone), None),
            UniqueIdentity::Email(email) => (None, Some(email)),
        }
    }
}

/// [`insert_into_conversation_unless`] into the conversation of the business's client with
/// `identity`, whichever it is: the message's, the note's and the event's conversation and
/// client are filled in from the one found. `None`, having written nothing, when the client or
/// its conversation does not exist or the guard refuses. Nothing is read before the write: on
/// PostgreSQL the write's own statement finds the conversation (the update names it by its
/// client), so the common ingest is one statement (in a transaction shared with concurrent
/// ones); on SQLite the group committer finds the conversations of its whole group in one
/// statement, in its transaction.
pub async fn insert_for_client_unless(
    store: &super::Store,
    identity: UniqueIdentity<'_>,
    new: message::ActiveModel,
    note: &super::conversations::MessageNote<'_>,
    unless: &[ConversationStatus],
    event: super::events::NewEvent<'_>,
    now: DateTime<Utc>,
) -> StoreResult<Option<message::Model>> {
    store.write_grouped(guarded_write(Some(identity), new, note, unless, event, now)).await
}

/// The write an ingest hands to the group committers: to the note's conversation, or (with
/// `identity`) to the conversation of the business's client it names.
pub(super) fn guarded_write(
    identity: Option<UniqueIdentity<'_>>,
    new: message::ActiveModel,
    note: &super::conversations::MessageNote<'_>,
    unless: &[ConversationStatus],
    event: super::events::NewEvent<'_>,
    now: DateTime<Utc>,
) -> dialect::GuardedWrite {
    use super::entity::client;
    let target = match identity {
        None => dialect::WriteTarget::Conversation(note.conversation_id),
        Some(UniqueIdentity::Phone(phone)) => {
            dialect::WriteTarget::Client { identity: client::Column::PhoneE164, value: phone.to_owned() }
        }
        Some(UniqueIdentity::Email(email)) => {
            dialect::WriteTarget::Client { identity: client::Column::Email, value: email.to_owned() }
        }
    };
    dialect::GuardedWrite {
        summary: note.summary(),
        target,
        unless: unless.to_vec(),
        message: completed(new, now),
        event: event.row(now),
    }
}

#[derive(Default)]
pub struct MessageFilter {
    pub channel: Option<Channel>,
    pub direction: Option<Direction>,
    pub status: Option<DeliveryStatus>,
    /// Some(true): read inbound messages; Some(false): unread inbound messages.
    pub read: Option<bool>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub include_notes: bool,
}

impl MessageFilter {
    fn condition(&self, conversation_id: i64) -> Condition {
        let mut cond = Condition::all().add(message::Column::ConversationId.eq(conversation_id));
        if let Some(channel) = &self.channel {
            cond = cond.add(message::Column::Channel.eq(*channel));
        }
        if !self.include_notes {
            cond = cond.add(message::Column::Channel.ne(Channel::Note));
        }
        if let Some(direction) = &self.direction {
            cond = cond.add(message::Column::Direction.eq(*direction));
        }
        if let Some(status) = &self.status {
            cond = cond.add(message::Column::Status.eq(*status));
        }
        if let Some(read) = self.read {
            cond = cond.add(message::Column::Direction.eq(Direction::Inbound)).add(if read {
                message::Column::ReadAt.is_not_null()
            } else {
                message::Column::ReadAt.is_null()
            });
        }
        if let Some(since) = self.since {
            cond = cond.add(message::Column::CreatedAt.gte(since));
        }
        if let Some(until) = self.until {
            cond = cond.add(message::Column::CreatedAt.lt(until));
        }
        cond
    }
}

/// Where the previous page of messages stopped: the last (created_at, id) shown.
pub type MessageCursor = (DateTime<Utc>, i64);

pub async fn list_messages(
    conn: &impl ConnectionTrait,
    conversation_id: i64,
    filter: &MessageFilter,
    newest_first: bool,
    after: Option<MessageCursor>,
    limit: u64,
    count_cap: u64,
) -> StoreResult<(Vec<message::Model>, (u64, bool))> {
    let select = message::Entity::find().filter(filter.condition(conversation_id));
    let total = super::count_capped(conn, select.clone(), count_cap).await?;
    let mut select = select;
    if let Some((at, id)) = after {
        let (time_past, id_past) = if newest_first {
            (message::Column::CreatedAt.lt(at), message::Column::Id.lt(id))
        } else {
            (message::Column::CreatedAt.gt(at), message::Column::Id.gt(id))
        };
        select = select.filter(
            Condition::any().add(time_past).add(Condition::all().add(message::Column::CreatedAt.eq(at)).add(id_past)),
        );
    }
    let select = if newest_first {
        select.order_by_desc(message::Column::CreatedAt).order_by_desc(message::Column::Id)
    } else {
        select.order_by_asc(message::Column::CreatedAt).order_by_asc(message::Column::Id)
    };
    Ok((select.limit(limit).all(conn).await?, total))
}

/// Which inbound messages of a conversation a read-status change applies to.
pub struct ReadScope {
    pub conversation_id: i64,
    pub channel: Option<Channel>,
    /// Up to and including this (created_at, id).
    pub up_to: Option<MessageCursor>,
    pub up_to_time: Option<DateTime<Utc>>,
}

/// Marks the scoped inbound messages read (at `read_at`) or unread (`None`); answers how many
/// changed, then recomputes the conversation's unread count and answers it too.
pub async fn set_read(
    conn: &impl ConnectionTrait,
    scope: &ReadScope,
    read_at: Option<DateTime<Utc>>,
) -> StoreResult<(u64, i64)> {
    let mut cond = Condition::all()
        .add(message::Column::ConversationId.eq(scope.conversation_id))
        .add(message::Column::Direction.eq(Direction::Inbound))
        .add(if read_at.is_some() { message::Column::ReadAt.is_null() } else { message::Column::ReadAt.is_not_null() });
    if let Some(channel) = &scope.channel {
        cond = cond.add(message::Column::Channel.eq(*channel));
    }
    if let Some((at, id)) = scope.up_to {
        cond = cond.add(
            Condition::any()
                .add(message::Column::CreatedAt.lt(at))
                .add(Condition::all().add(message::Column::CreatedAt.eq(at)).add(message::Column::Id.lte(id))),
        );
    }
    if let Some(time) = scope.up_to_time {
        cond = cond.add(message::Column::CreatedAt.lte(time));
    }
    let changed = message::Entity::update_many()
        .col_expr(message::Column::ReadAt, Expr::value(read_at))
        .filter(cond)
        .exec(conn)
        .await?
        .rows_affected;
    let unread = super::conversations::recount_unread(conn, scope.conversation_id).await?;
    Ok((changed, unread))
}
