//! Where SQLite and PostgreSQL differ: every backend-specific statement and fragment lives in
//! [`sqlite`] or [`postgres`], and the functions here pick one by the connection's backend. The
//! modules of the aggregates call these and hold no backend branches themselves.
//!
//! The delivery journal writes groups of every size (whatever queued up while the last
//! transaction ran). A statement whose text grows with its group — `id IN ($1, …, $n)`, a
//! multi-row `VALUES` — is a new statement for every size: PostgreSQL's per-connection statement
//! cache kept churning, and each miss cost a parse, a describe round trip and a fresh plan
//! (planning alone was a sixth of the machine's CPU under dispatch load). On PostgreSQL these
//! statements take their lists as array parameters instead, so each has one text and is prepared
//! once per connection. SQLite prepares in microseconds in-process and keeps the portable forms.

mod postgres;
mod sqlite;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveEnum, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, Select, Statement, Value, sea_query::Expr,
};

use super::{
    StoreResult,
    entity::enums::JobState,
    outbox::{Accepted, Mark},
    search::{BusinessProbe, ConversationProbe, Doc, HitRow},
};

/// The two databases Omega runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The dialect of `backend` (SQLite's for anything but PostgreSQL, as before).
    pub fn of(backend: DbBackend) -> Self {
        match backend {
            DbBackend::Postgres => Dialect::Postgres,
            _ => Dialect::Sqlite,
        }
    }

    pub fn of_conn(conn: &impl ConnectionTrait) -> Self {
        Self::of(conn.get_database_backend())
    }
}

// ---- fragments ----

/// `column IN (ids)`; on PostgreSQL `column = ANY($1)` with the ids as one array.
pub fn one_of<C: ColumnTrait>(backend: DbBackend, column: C, ids: &[i64]) -> Expr {
    match Dialect::of(backend) {
        Dialect::Postgres => column.eq_any(ids.iter().copied()),
        Dialect::Sqlite => column.is_in(ids.iter().copied()),
    }
}

/// An optional id as an array element: arrays bound as parameters cannot hold NULL, so 0 (never
/// an id) stands for none and the statement turns it back with `NULLIF(…, 0)`.
pub fn id_or_zero(id: Option<i64>) -> i64 {
    id.unwrap_or(0)
}

/// A statement written with PostgreSQL's numbered placeholders (`$1`), renumbered as `?1` for
/// SQLite. The text must hold no other `$`.
pub fn statement(backend: DbBackend, sql: &str, values: impl IntoIterator<Item = Value>) -> Statement {
    let sql = match Dialect::of(backend) {
        Dialect::Postgres => sql.to_owned(),
        Dialect::Sqlite => sql.replace('$', "?"),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// Positional parameters of a hand-written statement, numbered as each backend wants.
pub struct Binds {
    backend: DbBackend,
    pub values: Vec<Value>,
}

impl Binds {
    pub fn new(backend: DbBackend) -> Self {
        Self { backend, values: Vec::new() }
    }

    /// Binds `value`; answers its placeholder.
    pub fn push(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        match Dialect::of(self.backend) {
            Dialect::Postgres => format!("${}", self.values.len()),
            Dialect::Sqlite => format!("?{}", self.values.len()),
        }
    }
}

/// What ends a claim's inner SELECT so that concurrent claimers pass over each other's rows:
/// PostgreSQL skips rows other workers hold (`FOR UPDATE [OF table] SKIP LOCKED`); SQLite needs
/// nothing, its one writer runs claims one at a time.
pub fn skip_locked(backend: DbBackend, of: Option<&str>) -> String {
    match Dialect::of(backend) {
        Dialect::Postgres => postgres::skip_locked(of),
        Dialect::Sqlite => String::new(),
    }
}

/// A read of a row that is then written from what was read: locked on PostgreSQL; SQLite's one
/// writer already keeps others out.
pub fn locked_for_update<E: EntityTrait>(backend: DbBackend, select: Select<E>) -> Select<E> {
    match Dialect::of(backend) {
        Dialect::Postgres => postgres::locked_for_update(select),
        Dialect::Sqlite => select,
    }
}

/// The condition on an event-log row (`tx_id`) that its transaction and every older one have
/// settled. PostgreSQL: older than the oldest transaction still running. SQLite: always, one
/// writer commits at a time in order.
pub fn event_settled(backend: DbBackend) -> &'static str {
    match Dialect::of(backend) {
        Dialect::Postgres => postgres::EVENT_SETTLED,
        Dialect::Sqlite => sqlite::EVENT_SETTLED,
    }
}

/// Whether other replicas can be told of commits (PostgreSQL's LISTEN/NOTIFY).
pub fn announces_commits(backend: DbBackend) -> bool {
    Dialect::of(backend) == Dialect::Postgres
}

/// PostgreSQL's NOTIFY on `channel` of each comma-separated payload (one empty payload when
/// `payloads` is empty).
pub fn announce_statement(channel: &str, payloads: String) -> Statement {
    postgres::announce(channel, payloads)
}

/// A message, what it changes on its conversation and its event, to be written together unless
/// the conversation's status (read by the write itself) is one of `unless`.
pub struct GuardedWrite {
    /// What the message changes on its conversation.
    pub summary: super::conversations::SummaryChange,
    pub target: WriteTarget,
    pub unless: Vec<super::entity::enums::ConversationStatus>,
    pub message: super::entity::message::ActiveModel,
    pub event: super::entity::conversation_event::ActiveModel,
}

/// The conversation a [`GuardedWrite`] goes to.
#[derive(Clone, Debug)]
pub enum WriteTarget {
    /// This conversation (its client is the message's).
    Conversation(i64),
    /// The conversation of the business's client whose unique identity column holds this value
    /// (the business is the event's); found by the write, not read before it.
    Client { identity: super::entity::client::Column, value: String },
}

/// PostgreSQL: one [`GuardedWrite`] as one statement of data-modifying CTEs that finds its own
/// conversation, answering the message's row when it was written.
pub fn guarded_write(write: &GuardedWrite) -> StoreResult<Statement> {
    postgres::guarded_write(write)
}

/// PostgreSQL: writes of one [`WriteShape`] as one statement of data-modifying CTEs that finds
/// each one's conversation, answering the rows of the messages written (see
/// [`postgres::guarded_writes`]).
pub fn guarded_writes(writes: &[&GuardedWrite]) -> StoreResult<Statement> {
    postgres::guarded_writes(writes)
}

/// What must be the same for writes to go in one of PostgreSQL's grouped statements: the columns
/// the message and the event set (the others take their defaults) and the statuses that refuse.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WriteShape {
    message_columns: u64,
    event_columns: u64,
    unless: Vec<super::entity::enums::ConversationStatus>,
}

impl WriteShape {
    pub fn of(write: &GuardedWrite) -> Self {
        Self {
            message_columns: set_mask(&write.message),
            event_columns: set_mask(&write.event),
            unless: write.unless.clone(),
        }
    }
}

/// Which columns of `row` are set, one bit per column in the entity's order (asked without
/// reading the values, which `get` would clone).
fn set_mask<A: sea_orm::ActiveModelTrait>(row: &A) -> u64 {
    use sea_orm::Iterable;
    <A::Entity as EntityTrait>::Column::iter()
        .enumerate()
        .filter(|(_, column)| !row.is_not_set(*column))
        .fold(0, |mask, (i, _)| mask | 1u64 << i)
}

/// The SET list of a conversation's update for one message (`summary`): its channel bit added,
/// its last message, channel, direction and times, one unread more if it is inbound. Each value
/// is bound through `bind`, in the order of the text, which answers its placeholder. The one
/// rendering of that change for a single message, whatever runs it (PostgreSQL's grouped
/// statement applies many at once, see [`postgres::guarded_writes`]).
pub fn summary_set(summary: &super::conversations::SummaryChange, mut bind: impl FnMut(Value) -> String) -> String {
    use super::entity::enums::Direction;
    use sea_orm::ActiveEnum;
    let at = Value::from(summary.at);
    format!(
        "\"channel_mask\" = \"channel_mask\" | {}, \"last_message_at\" = {}, \"last_message_preview\" = {}, \
         \"last_message_channel\" = {}, \"last_message_direction\" = {}, \"last_activity_at\" = {}, \
         \"updated_at\" = {}, \"unread_count\" = \"unread_count\" + {}",
        bind(summary.channel.bit().into()),
        bind(at.clone()),
        bind(summary.preview.as_str().into()),
        bind(summary.channel.to_value().into()),
        bind(summary.direction.to_value().into()),
        bind(at.clone()),
        bind(at),
        bind(i32::from(summary.direction == Direction::Inbound).into()),
    )
}

/// SQLite: a [`GuardedWrite`] to the conversation and client found for it (its target), as one
/// command (see [`sqlite::guarded_write`]), answering the message's row when it was written.
pub fn guarded_write_to(write: &GuardedWrite, conversation_and_client: (i64, i64)) -> Statement {
    sqlite::guarded_write(write, conversation_and_client)
}

/// SQLite: the client and conversation of each business's client named by its `identity`
/// column (a unique one), `clients` being (business, value): rows of `at` (the position in
/// `clients`), `client_id` and `conversation_id`; one statement for a group of writes.
pub fn clients_conversations_statement(identity: super::entity::client::Column, clients: &[(i64, &str)]) -> Statement {
    sqlite::clients_conversations(identity, clients)
}

/// The columns an ActiveModel sets, with their values, in the entity's column order (quoted).
fn set_columns<A: sea_orm::ActiveModelTrait>(row: &A) -> (Vec<String>, Vec<Value>) {
    set_values(row, &[]).into_iter().map(|(column, value)| (format!("\"{column}\""), value)).unzip()
}

/// The columns an ActiveModel sets, but those in `skip`, with their values, in the entity's
/// column order (unquoted).
fn set_values<A: sea_orm::ActiveModelTrait>(row: &A, skip: &[&str]) -> Vec<(&'static str, Value)> {
    use sea_orm::{IdenStatic, Iterable};
    <A::Entity as EntityTrait>::Column::iter()
        .filter(|column| !skip.contains(&column.as_str()))
        .filter_map(|column| match row.get(column) {
            sea_orm::ActiveValue::Set(value) | sea_orm::ActiveValue::Unchanged(value) => Some((column.as_str(), value)),
            sea_orm::ActiveValue::NotSet => None,
        })
        .collect()
}

/// Every column of `E`, quoted and comma-separated (a RETURNING or SELECT list).
fn all_columns<E: EntityTrait>() -> String {
    use sea_orm::{IdenStatic, Iterable};
    E::Column::iter().map(|c| format!("\"{}\"", c.as_str())).collect::<Vec<_>>().join(", ")
}

/// "sqlite" or "postgresql".
pub fn engine_name(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Sqlite => "sqlite",
        DbBackend::Postgres => "postgresql",
        _ => "other",
    }
}

// ---- the outbox ----

/// Moves up to `limit` jobs waiting in `waiting` whose time has come, and jobs in `working`
/// whose claim ran out, to `working` for `worker` until `lease_until`, in one statement.
pub fn claim_jobs_statement(
    backend: DbBackend,
    (waiting, working): (JobState, JobState),
    worker: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
) -> Statement {
    let lock = skip_locked(backend, None);
    // The two states are the outbox's own constants, never input.
    let (waiting, working) = (waiting.to_value(), working.to_value());
    let sql = format!(
        "UPDATE delivery_jobs SET state = '{working}', locked_by = $1, locked_until = $2, updated_at = $3 \
         WHERE id IN (SELECT id FROM delivery_jobs \
           WHERE (state = '{waiting}' AND next_attempt_at <= $3) OR (state = '{working}' AND locked_until < $3) \
           ORDER BY next_attempt_at LIMIT $4{lock}) \
         RETURNING *"
    );
    statement(backend, &sql, [worker.into(), lease_until.into(), now.into(), (limit as i64).into()])
}

/// Moves up to `limit` sends whose worker vanished (`sending`, lease run out) to `settling` for
/// `worker`, in one statement.
pub fn claim_abandoned_sends_statement(backend: DbBackend, worker: &str, now: DateTime<Utc>, limit: u64) -> Statement {
    let lock = skip_locked(backend, None);
    let sql = format!(
        "UPDATE delivery_jobs SET state = 'settling', locked_by = $1, updated_at = $2 \
         WHERE id IN (SELECT id FROM delivery_jobs WHERE state = 'sending' AND locked_until < $2 \
           LIMIT $3{lock}) RETURNING *"
    );
    statement(backend, &sql, [worker.into(), now.into(), (limit as i64).into()])
}

/// The jobs of several workers marked as being sent; answers, mark by mark, the ids still held.
pub async fn start_sending_marks(conn: &impl ConnectionTrait, marks: &[Mark<'_>]) -> StoreResult<Vec<Vec<i64>>> {
    match Dialect::of_conn(conn) {
        Dialect::Postgres => postgres::start_sending_marks(conn, marks).await,
        Dialect::Sqlite => sqlite::start_sending_marks(conn, marks).await,
    }
}

/// A batch of accepted sends' attempt rows and QUEUED → SENT with the providers' ids; answers
/// the ids of the messages that moved.
pub async fn settle_accepted(
    conn: &impl ConnectionTrait,
    accepted: &[Accepted],
    now: DateTime<Utc>,
) -> StoreResult<Vec<i64>> {
    match Dialect::of_conn(conn) {
        Dialect::Postgres => postgres::settle_accepted(conn, accepted, now).await,
        Dialect::Sqlite => sqlite::settle_accepted(conn, accepted, now).await,
    }
}

// ---- the event log ----

/// Several event-log rows in one statement, in the given order.
pub async fn append_events(
    conn: &impl ConnectionTrait,
    events: Vec<super::events::NewEvent<'_>>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    match Dialect::of_conn(conn) {
        Dialect::Postgres => postgres::append_events(conn, events, now).await,
        Dialect::Sqlite => sqlite::append_events(conn, events, now).await,
    }
}

// ---- the inbox ----

/// The statement finding up to `limit` ids of the business's clients whose text contains `text`
/// through the trigram index (migration 7), or None when the text cannot use it.
pub fn clients_matching_statement(backend: DbBackend, business_id: i64, text: &str, limit: u64) -> Option<Statement> {
    match Dialect::of(backend) {
        Dialect::Postgres => Some(postgres::clients_matching(business_id, text, limit)),
        Dialect::Sqlite => sqlite::clients_matching(business_id, text, limit),
    }
}

// ---- search ----

/// One page of a conversation's matches (see [`super::search::search`]): the hits in page
/// order, and the matches counted up to [`super::search::RANKED_MATCHES`] + 1.
pub(crate) async fn conversation_hits(
    conn: &impl ConnectionTrait,
    probe: &ConversationProbe<'_>,
) -> StoreResult<(Vec<HitRow>, u64)> {
    match Dialect::of_conn(conn) {
        Dialect::Postgres => postgres::conversation_hits(conn, probe).await,
        Dialect::Sqlite => sqlite::conversation_hits(conn, probe).await,
    }
}

/// See [`super::search::business_matches`].
pub async fn business_matches(conn: &impl ConnectionTrait, probe: &BusinessProbe<'_>) -> StoreResult<Vec<Doc>> {
    match Dialect::of_conn(conn) {
        Dialect::Postgres => postgres::business_matches(conn, probe).await,
        Dialect::Sqlite => sqlite::business_matches(conn, probe).await,
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{EntityTrait, QueryFilter, QueryTrait};

    use super::*;
    use crate::store::entity::delivery_job as job;

    /// The PostgreSQL text is the same whatever the number of ids, so it is prepared once.
    #[test]
    fn postgres_statement_text_does_not_grow_with_the_list() {
        let text = |ids: &[i64]| {
            job::Entity::find().filter(one_of(DbBackend::Postgres, job::Column::Id, ids)).build(DbBackend::Postgres).sql
        };
        assert_eq!(text(&[1]), text(&[1, 2, 3, 4, 5]));
        assert!(text(&[1, 2]).contains("= ANY($1)"), "{}", text(&[1, 2]));
    }

    #[test]
    fn sqlite_keeps_in_lists() {
        let sql = job::Entity::find()
            .filter(one_of(DbBackend::Sqlite, job::Column::Id, &[7, 8]))
            .build(DbBackend::Sqlite)
            .sql;
        assert!(sql.contains("IN (?, ?)"), "{sql}");
    }

    /// Claims skip rows other workers hold on PostgreSQL only, and number their parameters as
    /// each backend wants.
    #[test]
    fn claims_skip_locked_rows_on_postgres() {
        let now = chrono::Utc::now();
        let pg =
            claim_jobs_statement(DbBackend::Postgres, (JobState::Pending, JobState::Running), "w", now, now, 5).sql;
        assert!(pg.contains("LIMIT $4 FOR UPDATE SKIP LOCKED)"), "{pg}");
        let lite =
            claim_jobs_statement(DbBackend::Sqlite, (JobState::Pending, JobState::Running), "w", now, now, 5).sql;
        assert!(lite.contains("LIMIT ?4)") && !lite.contains("FOR UPDATE") && !lite.contains('$'), "{lite}");
    }
}
