//! Queries on a business's inbox: conversations, their bucket counters, messages and the event
//! log. Changes are conditional on the state they were decided from (`WHERE status = old`), so a
//! concurrent change is detected rather than overwritten.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, Set, Statement,
    sea_query::{Expr, ExprTrait, OnConflict, Query},
};

use super::{
    StoreResult, dialect,
    entity::{client, conversation, conversation_count as counts, conversation_event as event, message},
};

// ---- conversations ----

pub async fn conversation(
    conn: &impl ConnectionTrait,
    business_id: i64,
    id: i64,
) -> StoreResult<Option<conversation::Model>> {
    Ok(conversation::Entity::find_by_id(id).filter(conversation::Column::BusinessId.eq(business_id)).one(conn).await?)
}

pub async fn conversation_of_client(
    conn: &impl ConnectionTrait,
    business_id: i64,
    client_id: i64,
) -> StoreResult<Option<conversation::Model>> {
    Ok(conversation::Entity::find()
        .filter(conversation::Column::BusinessId.eq(business_id))
        .filter(conversation::Column::ClientId.eq(client_id))
        .one(conn)
        .await?)
}

/// Inserts the client's conversation unless one exists (the unique index on (business,
/// client) decides, without aborting the transaction); answers it when this call created it.
pub async fn insert_conversation_if_absent(
    conn: &impl ConnectionTrait,
    business_id: i64,
    client_id: i64,
    location_id: Option<i64>,
    status: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<conversation::Model>> {
    let row = conversation::ActiveModel {
        business_id: Set(business_id),
        client_id: Set(client_id),
        location_id: Set(location_id),
        status: Set(status.to_owned()),
        snoozed_until: Set(None),
        assigned_staff_id: Set(None),
        resolved_at: Set(None),
        resolved_by_staff_id: Set(None),
        resolution_note: Set(None),
        unread_count: Set(0),
        channel_mask: Set(0),
        last_message_at: Set(None),
        last_message_preview: Set(None),
        last_message_channel: Set(None),
        last_message_direction: Set(None),
        last_activity_at: Set(now),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    };
    let inserted = conversation::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([conversation::Column::BusinessId, conversation::Column::ClientId])
                .do_nothing()
                .to_owned(),
        )
        .exec_with_returning(conn)
        .await;
    match inserted {
        Ok(model) => Ok(Some(model)),
        // ON CONFLICT DO NOTHING returned no row (sea-orm reports it either way).
        Err(sea_orm::DbErr::RecordNotInserted | sea_orm::DbErr::RecordNotFound(_)) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// The new status and what goes with it.
pub struct StatusChange {
    pub status: String,
    pub snoozed_until: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by_staff_id: Option<i64>,
    pub resolution_note: Option<String>,
}

/// Sets the status if it is still `expected`; answers whether it was.
pub async fn change_status(
    conn: &impl ConnectionTrait,
    id: i64,
    expected: &str,
    change: StatusChange,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let result = conversation::Entity::update_many()
        .col_expr(conversation::Column::Status, Expr::value(change.status))
        .col_expr(conversation::Column::SnoozedUntil, Expr::value(change.snoozed_until))
        .col_expr(conversation::Column::ResolvedAt, Expr::value(change.resolved_at))
        .col_expr(conversation::Column::ResolvedByStaffId, Expr::value(change.resolved_by_staff_id))
        .col_expr(conversation::Column::ResolutionNote, Expr::value(change.resolution_note))
        .col_expr(conversation::Column::LastActivityAt, Expr::value(now))
        .col_expr(conversation::Column::UpdatedAt, Expr::value(now))
        .filter(conversation::Column::Id.eq(id))
        .filter(conversation::Column::Status.eq(expected))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Sets a conversation back to OPEN (clearing snooze and resolution) if it is still `expected`
/// and, with `snooze_due_by`, still snoozed until no later than that; answers whether it was.
pub async fn reopen_conversation(
    conn: &impl ConnectionTrait,
    id: i64,
    expected: &str,
    snooze_due_by: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let mut query = conversation::Entity::update_many()
        .col_expr(conversation::Column::Status, Expr::value("OPEN"))
        .col_expr(conversation::Column::SnoozedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(conversation::Column::ResolvedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(conversation::Column::ResolvedByStaffId, Expr::value(Option::<i64>::None))
        .col_expr(conversation::Column::ResolutionNote, Expr::value(Option::<String>::None))
        .col_expr(conversation::Column::LastActivityAt, Expr::value(now))
        .col_expr(conversation::Column::UpdatedAt, Expr::value(now))
        .filter(conversation::Column::Id.eq(id))
        .filter(conversation::Column::Status.eq(expected));
    if let Some(due_by) = snooze_due_by {
        query = query.filter(conversation::Column::SnoozedUntil.lte(due_by));
    }
    Ok(query.exec(conn).await?.rows_affected == 1)
}

/// Sets the assignee if it is still `expected`; answers whether it was.
pub async fn change_assignee(
    conn: &impl ConnectionTrait,
    id: i64,
    expected: Option<i64>,
    assignee: Option<i64>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let expected = match expected {
        Some(staff) => conversation::Column::AssignedStaffId.eq(staff),
        None => conversation::Column::AssignedStaffId.is_null(),
    };
    let result = conversation::Entity::update_many()
        .col_expr(conversation::Column::AssignedStaffId, Expr::value(assignee))
        .col_expr(conversation::Column::LastActivityAt, Expr::value(now))
        .col_expr(conversation::Column::UpdatedAt, Expr::value(now))
        .filter(conversation::Column::Id.eq(id))
        .filter(expected)
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

pub async fn touch_activity(conn: &impl ConnectionTrait, id: i64, now: DateTime<Utc>) -> StoreResult<()> {
    conversation::Entity::update_many()
        .col_expr(conversation::Column::LastActivityAt, Expr::value(now))
        .col_expr(conversation::Column::UpdatedAt, Expr::value(now))
        .filter(conversation::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Snoozed conversations whose time has come, oldest first.
pub async fn expired_snoozes(
    conn: &impl ConnectionTrait,
    now: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<conversation::Model>> {
    Ok(conversation::Entity::find()
        .filter(conversation::Column::Status.eq("SNOOZED"))
        .filter(conversation::Column::SnoozedUntil.lte(now))
        .order_by_asc(conversation::Column::SnoozedUntil)
        .limit(limit)
        .all(conn)
        .await?)
}

/// Inbox filters; every one is optional.
#[derive(Default, Clone)]
pub struct ConversationFilter {
    pub statuses: Vec<String>,
    pub assignee: AssigneeFilter,
    pub location_id: Option<i64>,
    pub channel_bit: Option<i32>,
    pub unread_only: bool,
    /// Lower-cased text matched against the client's name, phone and email.
    pub client_text: Option<String>,
    /// The clients matching `client_text`, when looked up first (see [`clients_matching`]):
    /// the conversations of these clients instead of a per-row text test.
    pub client_ids: Option<Vec<i64>>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub enum AssigneeFilter {
    #[default]
    Any,
    Unassigned,
    Assigned,
    Staff(i64),
}

impl ConversationFilter {
    /// Whether the counters alone can answer the total (no filter beyond status and assignee).
    pub fn countable_from_buckets(&self) -> bool {
        self.location_id.is_none() && self.channel_bit.is_none() && !self.unread_only && self.client_text.is_none()
    }

    fn condition(&self, business_id: i64) -> Condition {
        let mut cond = Condition::all().add(conversation::Column::BusinessId.eq(business_id));
        if !self.statuses.is_empty() {
            cond = cond.add(conversation::Column::Status.is_in(self.statuses.clone()));
        }
        cond = match self.assignee {
            AssigneeFilter::Any => cond,
            AssigneeFilter::Unassigned => cond.add(conversation::Column::AssignedStaffId.is_null()),
            AssigneeFilter::Assigned => cond.add(conversation::Column::AssignedStaffId.is_not_null()),
            AssigneeFilter::Staff(id) => cond.add(conversation::Column::AssignedStaffId.eq(id)),
        };
        if let Some(location) = self.location_id {
            cond = cond.add(conversation::Column::LocationId.eq(location));
        }
        if let Some(bit) = self.channel_bit {
            cond = cond.add(Expr::col(conversation::Column::ChannelMask).bit_and(bit).ne(0));
        }
        if self.unread_only {
            cond = cond.add(conversation::Column::UnreadCount.gt(0));
        }
        if let Some(ids) = &self.client_ids {
            cond = cond.add(conversation::Column::ClientId.is_in(ids.iter().copied()));
        } else if let Some(text) = &self.client_text {
            // The client must be of the same business as the conversation (belt and braces:
            // conversations only ever point at their own business's clients).
            let matching_client = Query::select()
                .expr(Expr::val(1))
                .from(client::Entity)
                .and_where(
                    Expr::col((client::Entity, client::Column::Id))
                        .equals((conversation::Entity, conversation::Column::ClientId)),
                )
                .and_where(
                    Expr::col((client::Entity, client::Column::BusinessId))
                        .equals((conversation::Entity, conversation::Column::BusinessId)),
                )
                .and_where(Expr::col((client::Entity, client::Column::SearchText)).like(super::contains_pattern(text)))
                .to_owned();
            cond = cond.add(Expr::exists(matching_client));
        }
        cond
    }
}

/// Where the previous page of the inbox stopped: the last (last_activity_at, id) shown.
pub type ActivityCursor = (DateTime<Utc>, i64);

/// One page of the inbox, newest activity first; `limit` rows after `after`.
pub async fn list_conversations(
    conn: &impl ConnectionTrait,
    business_id: i64,
    filter: &ConversationFilter,
    after: Option<ActivityCursor>,
    limit: u64,
) -> StoreResult<Vec<conversation::Model>> {
    let mut select = conversation::Entity::find().filter(filter.condition(business_id));
    if let Some((at, id)) = after {
        select = select.filter(Condition::any().add(conversation::Column::LastActivityAt.lt(at)).add(
            Condition::all().add(conversation::Column::LastActivityAt.eq(at)).add(conversation::Column::Id.lt(id)),
        ));
    }
    Ok(select
        .order_by_desc(conversation::Column::LastActivityAt)
        .order_by_desc(conversation::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// How many conversations match, counting no further than `cap`: (count, whether it stopped at
/// the cap). Filters the bucket counters cannot answer would otherwise count every match, which
/// at a million conversations costs more than the page itself.
pub async fn count_conversations_capped(
    conn: &impl ConnectionTrait,
    business_id: i64,
    filter: &ConversationFilter,
    cap: u64,
) -> StoreResult<(u64, bool)> {
    super::count_capped(conn, conversation::Entity::find().filter(filter.condition(business_id)), cap).await
}

/// Up to `limit` ids of the business's clients whose name, phone or email contains `text`
/// (lower-case), found through the trigram index (migration 7). None when the text cannot use
/// it (LIKE wildcards in it): the caller then tests each conversation's client instead.
pub async fn clients_matching(
    conn: &impl ConnectionTrait,
    business_id: i64,
    text: &str,
    limit: u64,
) -> StoreResult<Option<Vec<i64>>> {
    #[derive(FromQueryResult)]
    struct Id {
        id: i64,
    }
    let backend = conn.get_database_backend();
    let statement = match backend {
        DbBackend::Postgres => Statement::from_sql_and_values(
            backend,
            "SELECT id FROM clients WHERE business_id = $1 AND search_text LIKE $2 ESCAPE '!' LIMIT $3",
            [
                business_id.into(),
                format!("%{}%", text.replace('!', "!!").replace('%', "!%").replace('_', "!_")).into(),
                (limit as i64).into(),
            ],
        ),
        _ => {
            // A trigram phrase query is a substring match that needs no second look at the
            // text (LIKE through the same index re-reads every candidate). Under three
            // characters there are no trigrams to look up.
            if text.chars().count() < 3 {
                return Ok(None);
            }
            // CROSS JOIN: the index drives, rather than probing it once per client.
            Statement::from_sql_and_values(
                backend,
                "SELECT c.id FROM clients_trgm t CROSS JOIN clients c ON c.id = t.rowid \
                 WHERE clients_trgm MATCH ?1 AND c.business_id = ?2 LIMIT ?3",
                [format!("\"{}\"", text.replace('"', "\"\"")).into(), business_id.into(), (limit as i64).into()],
            )
        }
    };
    let rows = Id::find_by_statement(statement).all(conn).await?;
    Ok(Some(rows.into_iter().map(|r| r.id).collect()))
}

/// Conversations per location (None: no location), for the filter list.
pub async fn count_by_location(conn: &impl ConnectionTrait, business_id: i64) -> StoreResult<Vec<(Option<i64>, i64)>> {
    #[derive(FromQueryResult)]
    struct Row {
        location_id: Option<i64>,
        n: i64,
    }
    let rows = conversation::Entity::find()
        .select_only()
        .column(conversation::Column::LocationId)
        .column_as(conversation::Column::Id.count(), "n")
        .filter(conversation::Column::BusinessId.eq(business_id))
        .group_by(conversation::Column::LocationId)
        .into_model::<Row>()
        .all(conn)
        .await?;
    Ok(rows.into_iter().map(|r| (r.location_id, r.n)).collect())
}

// ---- bucket counters ----

/// Moves one conversation between (status, assignee) buckets: out of `from`, into `to`.
pub async fn shift_count(
    conn: &impl ConnectionTrait,
    business_id: i64,
    from: Option<(&str, Option<i64>)>,
    to: Option<(&str, Option<i64>)>,
) -> StoreResult<()> {
    for (bucket, delta) in [(from, -1_i64), (to, 1)] {
        let Some((status, assignee)) = bucket else {
            continue;
        };
        counts::Entity::insert(counts::ActiveModel {
            business_id: Set(business_id),
            status: Set(status.to_owned()),
            assignee_id: Set(assignee.unwrap_or(0)),
            count: Set(delta),
        })
        .on_conflict(
            OnConflict::columns([counts::Column::BusinessId, counts::Column::Status, counts::Column::AssigneeId])
                .value(counts::Column::Count, Expr::col((counts::Entity, counts::Column::Count)).add(delta))
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    }
    Ok(())
}

/// The business's non-empty buckets: (status, assignee id or 0, count).
pub async fn bucket_counts(conn: &impl ConnectionTrait, business_id: i64) -> StoreResult<Vec<counts::Model>> {
    Ok(counts::Entity::find()
        .filter(counts::Column::BusinessId.eq(business_id))
        .filter(counts::Column::Count.gt(0))
        .all(conn)
        .await?)
}

// ---- messages ----

#[derive(Default)]
pub struct NewMessage {
    pub public_id: String,
    pub business_id: i64,
    pub conversation_id: i64,
    pub client_id: i64,
    pub channel: String,
    pub direction: String,
    pub sender_type: String,
    pub sender_staff_id: Option<i64>,
    pub content: String,
    pub subject: Option<String>,
    pub html: Option<String>,
    /// JSON array of media URLs.
    pub media: Option<String>,
    pub note_category: Option<String>,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    pub location_id: Option<i64>,
    pub from_address: Option<String>,
    pub to_address: Option<String>,
    pub status: String,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
}

/// The messages a provider's id names: within one business when `business_id` is given (the id
/// is unique there), else in every business (a webhook then checks which owner signed it).
pub async fn messages_by_provider_id(
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

pub async fn insert_message(
    conn: &impl ConnectionTrait,
    new: NewMessage,
    now: DateTime<Utc>,
) -> StoreResult<message::Model> {
    Ok(message::ActiveModel {
        public_id: Set(new.public_id),
        business_id: Set(new.business_id),
        conversation_id: Set(new.conversation_id),
        client_id: Set(new.client_id),
        channel: Set(new.channel),
        direction: Set(new.direction),
        sender_type: Set(new.sender_type),
        sender_staff_id: Set(new.sender_staff_id),
        content: Set(new.content),
        subject: Set(new.subject),
        note_category: Set(new.note_category),
        request_id: Set(new.request_id),
        provider: Set(new.provider),
        provider_message_id: Set(new.provider_message_id),
        status: Set(new.status),
        status_updated_at: Set(Some(now)),
        error_code: Set(None),
        error_message: Set(None),
        attempt_count: Set(0),
        read_at: Set(None),
        created_at: Set(new.created_at.unwrap_or(now)),
        location_id: Set(new.location_id),
        from_address: Set(new.from_address),
        to_address: Set(new.to_address),
        html: Set(new.html),
        media: Set(new.media),
        idempotency_key: Set(new.idempotency_key),
        sent_at: Set(new.sent_at),
        delivered_at: Set(new.delivered_at),
        failed_at: Set(None),
        ..Default::default()
    }
    .insert(conn)
    .await?)
}

#[derive(Default)]
pub struct MessageFilter {
    pub channel: Option<String>,
    pub direction: Option<String>,
    pub status: Option<String>,
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
            cond = cond.add(message::Column::Channel.eq(channel.clone()));
        }
        if !self.include_notes {
            cond = cond.add(message::Column::Channel.ne("NOTE"));
        }
        if let Some(direction) = &self.direction {
            cond = cond.add(message::Column::Direction.eq(direction.clone()));
        }
        if let Some(status) = &self.status {
            cond = cond.add(message::Column::Status.eq(status.clone()));
        }
        if let Some(read) = self.read {
            cond = cond.add(message::Column::Direction.eq("INBOUND")).add(if read {
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

pub async fn message_by_public_id(
    conn: &impl ConnectionTrait,
    business_id: i64,
    public_id: &str,
) -> StoreResult<Option<message::Model>> {
    Ok(message::Entity::find()
        .filter(message::Column::BusinessId.eq(business_id))
        .filter(message::Column::PublicId.eq(public_id))
        .one(conn)
        .await?)
}

/// Which inbound messages of a conversation a read-status change applies to.
pub struct ReadScope {
    pub conversation_id: i64,
    pub channel: Option<String>,
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
        .add(message::Column::Direction.eq("INBOUND"))
        .add(if read_at.is_some() { message::Column::ReadAt.is_null() } else { message::Column::ReadAt.is_not_null() });
    if let Some(channel) = &scope.channel {
        cond = cond.add(message::Column::Channel.eq(channel.clone()));
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
    let unread = recount_unread(conn, scope.conversation_id).await?;
    Ok((changed, unread))
}

/// Recomputes a conversation's unread count from its messages and answers it.
pub async fn recount_unread(conn: &impl ConnectionTrait, conversation_id: i64) -> StoreResult<i64> {
    let backend = conn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "UPDATE conversations SET unread_count = (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = $1 AND m.direction = 'INBOUND' AND m.read_at IS NULL) WHERE id = $1"
        }
        _ => {
            "UPDATE conversations SET unread_count = (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = ?1 AND m.direction = 'INBOUND' AND m.read_at IS NULL) WHERE id = ?1"
        }
    };
    conn.execute_raw(Statement::from_sql_and_values(backend, sql, [conversation_id.into()])).await?;
    let row = conversation::Entity::find_by_id(conversation_id).one(conn).await?;
    Ok(row.map_or(0, |c| i64::from(c.unread_count)))
}

// ---- events ----

pub struct NewEvent<'a> {
    pub business_id: i64,
    pub conversation_id: Option<i64>,
    pub kind: &'a str,
    pub actor_key_id: Option<i64>,
    pub actor_staff_id: Option<i64>,
    pub data: serde_json::Value,
}

pub async fn append_event(conn: &impl ConnectionTrait, new: NewEvent<'_>, now: DateTime<Utc>) -> StoreResult<()> {
    event_row(new, now).insert(conn).await?;
    Ok(())
}

fn event_row(new: NewEvent<'_>, now: DateTime<Utc>) -> event::ActiveModel {
    event::ActiveModel {
        business_id: Set(new.business_id),
        conversation_id: Set(new.conversation_id),
        kind: Set(new.kind.to_owned()),
        actor_key_id: Set(new.actor_key_id),
        actor_staff_id: Set(new.actor_staff_id),
        data: Set(new.data.to_string()),
        created_at: Set(now),
        ..Default::default()
    }
}

/// Several events in one INSERT.
pub async fn append_events(
    conn: &impl ConnectionTrait,
    events: Vec<NewEvent<'_>>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    if conn.get_database_backend() != DbBackend::Postgres {
        event::Entity::insert_many(events.into_iter().map(|new| event_row(new, now)))
            .exec_without_returning(conn)
            .await?;
        return Ok(());
    }
    // One statement text whatever the number of events (see `dialect`); ids in the given order.
    let sql = "INSERT INTO conversation_events (business_id, conversation_id, kind, actor_key_id, actor_staff_id, data, created_at) \
         SELECT business_id, NULLIF(conversation_id, 0), kind, NULLIF(actor_key_id, 0), NULLIF(actor_staff_id, 0), data, $1 \
         FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::text[]) WITH ORDINALITY \
           AS e(business_id, conversation_id, kind, actor_key_id, actor_staff_id, data, position) \
         ORDER BY position";
    let column = |f: &dyn Fn(&NewEvent) -> sea_orm::Value| -> sea_orm::Value {
        sea_orm::Value::Array(f(&events[0]).array_type(), Some(Box::new(events.iter().map(f).collect())))
    };
    let values = [
        now.into(),
        column(&|e| e.business_id.into()),
        column(&|e| dialect::id_or_zero(e.conversation_id).into()),
        column(&|e| e.kind.to_owned().into()),
        column(&|e| dialect::id_or_zero(e.actor_key_id).into()),
        column(&|e| dialect::id_or_zero(e.actor_staff_id).into()),
        column(&|e| e.data.to_string().into()),
    ];
    conn.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).await?;
    Ok(())
}

/// A page of a conversation's events, oldest first (its history), and how many it has.
pub async fn conversation_events(
    conn: &impl ConnectionTrait,
    business_id: i64,
    conversation_id: i64,
    after_id: Option<i64>,
    limit: u64,
) -> StoreResult<(Vec<event::Model>, u64)> {
    let select = event::Entity::find()
        .filter(event::Column::BusinessId.eq(business_id))
        .filter(event::Column::ConversationId.eq(conversation_id));
    super::directory::page_by_id(conn, select, event::Column::Id, after_id, limit).await
}
