//! Queries on a business's inbox: conversations, their bucket counters and the summary each
//! keeps of its messages (last message, unread count). Changes are conditional on the state they were decided from (`WHERE status = old`), so a
//! concurrent change is detected rather than overwritten.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::{Expr, ExprTrait, OnConflict, Query},
};

use super::{
    StoreResult, dialect,
    entity::{
        client, conversation, conversation_count as counts,
        enums::{Channel, ConversationStatus, Direction},
    },
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
    status: ConversationStatus,
    now: DateTime<Utc>,
) -> StoreResult<Option<conversation::Model>> {
    let row = conversation::ActiveModel {
        business_id: Set(business_id),
        client_id: Set(client_id),
        location_id: Set(location_id),
        status: Set(status),
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
    pub status: ConversationStatus,
    pub snoozed_until: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by_staff_id: Option<i64>,
    pub resolution_note: Option<String>,
}

/// Sets the status if it is still `expected`; answers whether it was.
pub async fn change_conversation_status(
    conn: &impl ConnectionTrait,
    id: i64,
    expected: ConversationStatus,
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
    expected: ConversationStatus,
    snooze_due_by: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let mut query = conversation::Entity::update_many()
        .col_expr(conversation::Column::Status, Expr::value(ConversationStatus::Open))
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
        .filter(conversation::Column::Status.eq(ConversationStatus::Snoozed))
        .filter(conversation::Column::SnoozedUntil.lte(now))
        .order_by_asc(conversation::Column::SnoozedUntil)
        .limit(limit)
        .all(conn)
        .await?)
}

/// Inbox filters; every one is optional.
#[derive(Default, Clone)]
pub struct ConversationFilter {
    pub statuses: Vec<ConversationStatus>,
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
/// it (too short for trigrams on SQLite): the caller then tests each conversation's client
/// instead.
pub async fn clients_matching(
    conn: &impl ConnectionTrait,
    business_id: i64,
    text: &str,
    limit: u64,
) -> StoreResult<Option<Vec<i64>>> {
    let Some(statement) = dialect::clients_matching_statement(conn.get_database_backend(), business_id, text, limit)
    else {
        return Ok(None);
    };
    Ok(Some(super::ids_of(conn, statement).await?))
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

// ---- the summary of its messages ----

/// Recomputes a conversation's unread count from its messages and answers it.
pub async fn recount_unread(conn: &impl ConnectionTrait, conversation_id: i64) -> StoreResult<i64> {
    let sql = "UPDATE conversations SET unread_count = (SELECT COUNT(*) FROM messages m \
               WHERE m.conversation_id = $1 AND m.direction = 'INBOUND' AND m.read_at IS NULL) WHERE id = $1";
    conn.execute_raw(dialect::statement(conn.get_database_backend(), sql, [conversation_id.into()])).await?;
    let row = conversation::Entity::find_by_id(conversation_id).one(conn).await?;
    Ok(row.map_or(0, |c| i64::from(c.unread_count)))
}

/// What a new message changes on its conversation: its channel bit, last message, activity
/// time and, for inbound messages, the unread count.
pub struct MessageNote<'a> {
    pub conversation_id: i64,
    pub channel: Channel,
    pub direction: Direction,
    pub preview: &'a str,
    pub at: DateTime<Utc>,
}

impl MessageNote<'_> {
    /// The same change, owning its preview: what a grouped write carries to its committer.
    pub(crate) fn summary(&self) -> SummaryChange {
        SummaryChange {
            channel: self.channel,
            direction: self.direction,
            preview: self.preview.to_owned(),
            at: self.at,
        }
    }
}

/// A [`MessageNote`]'s change without its conversation, owned: what every write of a message
/// applies to its conversation (`dialect::summary_set`). PostgreSQL's grouped writes apply many
/// in one statement (`dialect`'s `guarded_writes`), where several messages of a group may go to
/// one conversation: the channel bits of all of them, the last one's message and time, one
/// unread more for each inbound one, as the same notes applied one after another would leave it.
#[derive(Clone, Debug)]
pub struct SummaryChange {
    pub channel: Channel,
    pub direction: Direction,
    pub preview: String,
    pub at: DateTime<Utc>,
}

/// Keeps a conversation's summary in step with a new message.
pub async fn note_message_in_conversation(conn: &impl ConnectionTrait, note: &MessageNote<'_>) -> StoreResult<()> {
    let backend = conn.get_database_backend();
    let mut binds = dialect::Binds::new(backend);
    let set = dialect::summary_set(&note.summary(), |value| binds.push(value));
    let id = binds.push(note.conversation_id);
    let sql = format!("UPDATE \"conversations\" SET {set} WHERE \"id\" = {id}");
    conn.execute_raw(sea_orm::Statement::from_sql_and_values(backend, sql, binds.values)).await?;
    Ok(())
}
