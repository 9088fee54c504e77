//! The outbox (`delivery_jobs`): a job per outbound message, claimed by delivery workers under
//! a lease, marked while its send is in flight, and finished (done, failed or rescheduled).

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter, Set,
    sea_query::{Expr, ExprTrait},
};

use super::{
    StoreResult, dialect,
    entity::{delivery_job as job, enums::JobState, message},
};

pub async fn insert_job(
    conn: &impl ConnectionTrait,
    message: &message::Model,
    sender_key: &str,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    job::ActiveModel {
        message_id: Set(message.id),
        business_id: Set(message.business_id),
        channel: Set(message.channel),
        sender_key: Set(sender_key.to_owned()),
        state: Set(JobState::Pending),
        attempts: Set(0),
        next_attempt_at: Set(at),
        locked_by: Set(None),
        locked_until: Set(None),
        last_error: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Puts a message's job back in line (a deliberate retry), or creates it if it never had one.
pub async fn reschedule_job(
    conn: &impl ConnectionTrait,
    message: &message::Model,
    sender_key: &str,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let result = job::Entity::update_many()
        .col_expr(job::Column::State, Expr::value(JobState::Pending))
        .col_expr(job::Column::NextAttemptAt, Expr::value(at))
        .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
        .col_expr(job::Column::LockedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(job::Column::UpdatedAt, Expr::value(at))
        .filter(job::Column::MessageId.eq(message.id))
        .exec(conn)
        .await?;
    if result.rows_affected == 0 {
        insert_job(conn, message, sender_key, at).await?;
    }
    Ok(())
}

/// Claims up to `limit` due jobs for `worker` until `lease_until`: pending ones whose time has
/// come, and claimed ones whose worker vanished before it started sending. One statement, so
/// no job is claimed twice: PostgreSQL skips rows other workers hold (`FOR UPDATE SKIP
/// LOCKED`), SQLite runs one writer at a time.
pub async fn claim_jobs(
    conn: &impl ConnectionTrait,
    worker: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<job::Model>> {
    claim_in_state(conn, (JobState::Pending, JobState::Running), worker, now, lease_until, limit).await
}

/// Claims up to `limit` jobs waiting in `states.0` whose time has come, and jobs in `states.1`
/// whose claim ran out, moving them to `states.1` for `worker` until `lease_until`.
async fn claim_in_state(
    conn: &impl ConnectionTrait,
    (waiting, working): (JobState, JobState),
    worker: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<job::Model>> {
    let statement =
        dialect::claim_jobs_statement(conn.get_database_backend(), (waiting, working), worker, now, lease_until, limit);
    Ok(job::Model::find_by_statement(statement).all(conn).await?)
}

/// Jobs whose worker vanished in the middle of a send: whether the provider got the message is
/// unknown. Answers them, claimed for `worker`, so that they can be failed as ambiguous.
pub async fn claim_abandoned_sends(
    conn: &impl ConnectionTrait,
    worker: &str,
    now: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<job::Model>> {
    let statement = dialect::claim_abandoned_sends_statement(conn.get_database_backend(), worker, now, limit);
    Ok(job::Model::find_by_statement(statement).all(conn).await?)
}

/// Marks jobs as being sent (the point after which a crash leaves the outcome unknown), in one
/// statement; answers the ids still held by `worker` (a job whose lease was lost is left to the
/// worker that has it).
pub async fn start_sending_many(
    conn: &impl ConnectionTrait,
    job_ids: &[i64],
    worker: &str,
    lease_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<i64>> {
    if job_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = job::Entity::update_many()
        .col_expr(job::Column::State, Expr::value(JobState::Sending))
        .col_expr(job::Column::Attempts, Expr::col(job::Column::Attempts).add(1))
        .col_expr(job::Column::LockedUntil, Expr::value(lease_until))
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .filter(dialect::one_of(conn.get_database_backend(), job::Column::Id, job_ids))
        .filter(job::Column::State.eq(JobState::Running))
        .filter(job::Column::LockedBy.eq(worker))
        .exec_with_returning(conn)
        .await?;
    Ok(rows.into_iter().map(|j| j.id).collect())
}

/// One worker's jobs about to be sent, for [`start_sending_marks`].
pub struct Mark<'a> {
    pub job_ids: &'a [i64],
    pub worker: &'a str,
    pub lease_until: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// [`start_sending_many`] for the marks of several workers; answers, mark by mark, the ids
/// still held. On PostgreSQL one statement of one text for them all (see [`dialect`]).
pub async fn start_sending_marks(conn: &impl ConnectionTrait, marks: &[Mark<'_>]) -> StoreResult<Vec<Vec<i64>>> {
    dialect::start_sending_marks(conn, marks).await
}

/// Extends `worker`'s claim on the jobs it still holds (claimed or being sent) to
/// `lease_until`; answers the ids it still holds. A live worker renews well before its lease
/// ends, so no one settles a send that is still in flight.
pub async fn renew_leases(
    conn: &impl ConnectionTrait,
    job_ids: &[i64],
    worker: &str,
    lease_until: DateTime<Utc>,
) -> StoreResult<Vec<i64>> {
    if job_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = job::Entity::update_many()
        .col_expr(job::Column::LockedUntil, Expr::value(lease_until))
        .filter(dialect::one_of(conn.get_database_backend(), job::Column::Id, job_ids))
        .filter(job::Column::State.is_in([JobState::Running, JobState::Sending]))
        .filter(job::Column::LockedBy.eq(worker))
        .exec_with_returning(conn)
        .await?;
    Ok(rows.into_iter().map(|j| j.id).collect())
}

/// Hands claimed jobs whose send never started back to the outbox (a stopping worker), so that
/// another worker takes them at once instead of after the lease.
pub async fn release_jobs(
    conn: &impl ConnectionTrait,
    job_ids: &[i64],
    worker: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    if job_ids.is_empty() {
        return Ok(());
    }
    job::Entity::update_many()
        .col_expr(job::Column::State, Expr::value(JobState::Pending))
        .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
        .col_expr(job::Column::LockedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .filter(dialect::one_of(conn.get_database_backend(), job::Column::Id, job_ids))
        .filter(job::Column::State.eq(JobState::Running))
        .filter(job::Column::LockedBy.eq(worker))
        .exec(conn)
        .await?;
    Ok(())
}

/// Claims up to `limit` ambiguous sends whose time to be looked up at the provider has come
/// (state `reconcile`), and lookups whose worker vanished (a lookup is safe to repeat).
pub async fn claim_reconciliations(
    conn: &impl ConnectionTrait,
    worker: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<job::Model>> {
    claim_in_state(conn, (JobState::Reconcile, JobState::Reconciling), worker, now, lease_until, limit).await
}

/// A message its provider accepted, to be recorded with others in one go.
pub struct Accepted {
    pub job_id: i64,
    pub message_id: i64,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub provider: String,
    pub provider_message_id: String,
}

/// Records a batch of accepted sends in a handful of statements whatever its size: the attempt
/// rows, the attempt counts, QUEUED → SENT with the provider's ids (conditional, as
/// [`super::messages::change_delivery_status`]), the jobs done. Answers the ids of the messages that moved to SENT (one
/// a status callback already moved on keeps its newer status).
pub async fn settle_accepted(
    conn: &impl ConnectionTrait,
    accepted: &[Accepted],
    now: DateTime<Utc>,
) -> StoreResult<Vec<i64>> {
    if accepted.is_empty() {
        return Ok(Vec::new());
    }
    let backend = conn.get_database_backend();
    let message_ids: Vec<i64> = accepted.iter().map(|a| a.message_id).collect();
    let moved = dialect::settle_accepted(conn, accepted, now).await?;
    message::Entity::update_many()
        .col_expr(message::Column::AttemptCount, Expr::col(message::Column::AttemptCount).add(1))
        .filter(dialect::one_of(backend, message::Column::Id, &message_ids))
        .exec(conn)
        .await?;
    let job_ids: Vec<i64> = accepted.iter().map(|a| a.job_id).collect();
    finish_jobs(conn, &job_ids, JobState::Done, None, None, now).await?;
    Ok(moved)
}

/// Ends a job's turn: `done`, `failed`, or back to `pending` at `next_attempt_at`.
pub async fn finish_job(
    conn: &impl ConnectionTrait,
    job_id: i64,
    state: JobState,
    next_attempt_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    finish_jobs(conn, &[job_id], state, next_attempt_at, last_error, now).await
}

/// [`finish_job`] for several jobs in one statement.
pub async fn finish_jobs(
    conn: &impl ConnectionTrait,
    job_ids: &[i64],
    state: JobState,
    next_attempt_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let mut query = job::Entity::update_many()
        .col_expr(job::Column::State, Expr::value(state))
        .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
        .col_expr(job::Column::LockedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(job::Column::LastError, Expr::value(last_error))
        .col_expr(job::Column::UpdatedAt, Expr::value(now));
    if let Some(at) = next_attempt_at {
        query = query.col_expr(job::Column::NextAttemptAt, Expr::value(at));
    }
    query.filter(dialect::one_of(conn.get_database_backend(), job::Column::Id, job_ids)).exec(conn).await?;
    Ok(())
}

pub async fn pending_jobs(conn: &impl ConnectionTrait) -> StoreResult<u64> {
    Ok(job::Entity::find()
        .filter(job::Column::State.is_in([JobState::Pending, JobState::Running, JobState::Sending]))
        .count(conn)
        .await?)
}
