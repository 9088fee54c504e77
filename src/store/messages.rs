//! Queries on messages in flight: idempotency and provider-id lookups, conditional status
//! changes, the outbox (`delivery_jobs`), attempts, per-sender pacing, provider credentials and
//! full-text search.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, Statement,
    sea_query::{Expr, ExprTrait, OnConflict},
};

use super::{
    StoreResult, dialect,
    entity::{
        conversation, delivery_job as job, message, message_attempt as attempt, provider_credential as credential,
        sender_pacing, webhook_event,
    },
};

// ---- messages ----

pub async fn by_public_id(conn: &impl ConnectionTrait, public_id: &str) -> StoreResult<Option<message::Model>> {
    Ok(message::Entity::find().filter(message::Column::PublicId.eq(public_id)).one(conn).await?)
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

/// The message a provider knows by `provider_message_id` (unique per provider).
pub async fn by_provider_id(
    conn: &impl ConnectionTrait,
    provider: Option<&str>,
    provider_message_id: &str,
) -> StoreResult<Option<message::Model>> {
    let mut select = message::Entity::find().filter(message::Column::ProviderMessageId.eq(provider_message_id));
    if let Some(provider) = provider {
        select = select.filter(message::Column::Provider.eq(provider));
    }
    Ok(select.one(conn).await?)
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
pub struct StatusUpdate<'a> {
    pub status: &'a str,
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
pub async fn change_status(
    conn: &impl ConnectionTrait,
    id: i64,
    expected: &str,
    update: StatusUpdate<'_>,
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
        .add(message::Column::Status.eq("FAILED"))
        .add(Condition::any().add(message::Column::ErrorCode.is_null()).add(message::Column::ErrorCode.ne("AMBIGUOUS")))
        .add(Expr::cust(
            "NOT EXISTS (SELECT 1 FROM message_attempts a WHERE a.message_id = messages.id AND a.outcome = 'accepted')",
        ))
}

/// Sends a FAILED message back to QUEUED for a deliberate retry (conditional on it still being
/// FAILED and certainly unsent); clears its error but keeps its attempts.
pub async fn requeue_failed(conn: &impl ConnectionTrait, id: i64, now: DateTime<Utc>) -> StoreResult<bool> {
    let result = message::Entity::update_many()
        .col_expr(message::Column::Status, Expr::value("QUEUED"))
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
        let mut cond = Condition::all().add(message::Column::Direction.eq("OUTBOUND"));
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
    let select =
        if filter.public_ids.is_empty() { select.filter(message::Column::Status.eq("FAILED")) } else { select };
    let (count, _) = super::count_capped(conn, select, 10_000).await?;
    Ok(count)
}

/// Keeps a conversation's summary in step with a new message: its channel bit, last message,
/// activity time and, for inbound messages, the unread count.
pub async fn note_message_in_conversation(
    conn: &impl ConnectionTrait,
    conversation_id: i64,
    channel_bit: i32,
    preview: &str,
    channel: &str,
    direction: &str,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let mut query = conversation::Entity::update_many()
        .col_expr(conversation::Column::ChannelMask, Expr::col(conversation::Column::ChannelMask).bit_or(channel_bit))
        .col_expr(conversation::Column::LastMessageAt, Expr::value(at))
        .col_expr(conversation::Column::LastMessagePreview, Expr::value(preview))
        .col_expr(conversation::Column::LastMessageChannel, Expr::value(channel))
        .col_expr(conversation::Column::LastMessageDirection, Expr::value(direction))
        .col_expr(conversation::Column::LastActivityAt, Expr::value(at))
        .col_expr(conversation::Column::UpdatedAt, Expr::value(at));
    if direction == "INBOUND" {
        query = query.col_expr(conversation::Column::UnreadCount, Expr::col(conversation::Column::UnreadCount).add(1));
    }
    query.filter(conversation::Column::Id.eq(conversation_id)).exec(conn).await?;
    Ok(())
}

// ---- the outbox ----

pub async fn insert_job(
    conn: &impl ConnectionTrait,
    message: &message::Model,
    sender_key: &str,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    job::ActiveModel {
        message_id: Set(message.id),
        business_id: Set(message.business_id),
        channel: Set(message.channel.clone()),
        sender_key: Set(sender_key.to_owned()),
        state: Set("pending".into()),
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
        .col_expr(job::Column::State, Expr::value("pending"))
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
    claim_in_state(conn, ("pending", "running"), worker, now, lease_until, limit).await
}

/// Claims up to `limit` jobs waiting in `states.0` whose time has come, and jobs in `states.1`
/// whose claim ran out, moving them to `states.1` for `worker` until `lease_until`.
async fn claim_in_state(
    conn: &impl ConnectionTrait,
    (waiting, working): (&'static str, &'static str),
    worker: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<job::Model>> {
    let backend = conn.get_database_backend();
    // The two states are this module's own constants, never input.
    let sql = match backend {
        DbBackend::Postgres => format!(
            "UPDATE delivery_jobs SET state = '{working}', locked_by = $1, locked_until = $2, updated_at = $3 \
             WHERE id IN (SELECT id FROM delivery_jobs \
               WHERE (state = '{waiting}' AND next_attempt_at <= $3) OR (state = '{working}' AND locked_until < $3) \
               ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING *"
        ),
        _ => format!(
            "UPDATE delivery_jobs SET state = '{working}', locked_by = ?1, locked_until = ?2, updated_at = ?3 \
             WHERE id IN (SELECT id FROM delivery_jobs \
               WHERE (state = '{waiting}' AND next_attempt_at <= ?3) OR (state = '{working}' AND locked_until < ?3) \
               ORDER BY next_attempt_at LIMIT ?4) \
             RETURNING *"
        ),
    };
    Ok(job::Model::find_by_statement(Statement::from_sql_and_values(
        backend,
        sql,
        [worker.into(), lease_until.into(), now.into(), (limit as i64).into()],
    ))
    .all(conn)
    .await?)
}

/// Jobs whose worker vanished in the middle of a send: whether the provider got the message is
/// unknown. Answers them, claimed for `worker`, so that they can be failed as ambiguous.
pub async fn claim_abandoned_sends(
    conn: &impl ConnectionTrait,
    worker: &str,
    now: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<job::Model>> {
    let backend = conn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "UPDATE delivery_jobs SET state = 'settling', locked_by = $1, updated_at = $2 \
             WHERE id IN (SELECT id FROM delivery_jobs WHERE state = 'sending' AND locked_until < $2 \
               LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING *"
        }
        _ => {
            "UPDATE delivery_jobs SET state = 'settling', locked_by = ?1, updated_at = ?2 \
             WHERE id IN (SELECT id FROM delivery_jobs WHERE state = 'sending' AND locked_until < ?2 LIMIT ?3) RETURNING *"
        }
    };
    Ok(job::Model::find_by_statement(Statement::from_sql_and_values(
        backend,
        sql,
        [worker.into(), now.into(), (limit as i64).into()],
    ))
    .all(conn)
    .await?)
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
        .col_expr(job::Column::State, Expr::value("sending"))
        .col_expr(job::Column::Attempts, Expr::col(job::Column::Attempts).add(1))
        .col_expr(job::Column::LockedUntil, Expr::value(lease_until))
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .filter(dialect::one_of(conn.get_database_backend(), job::Column::Id, job_ids))
        .filter(job::Column::State.eq("running"))
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
    if conn.get_database_backend() != DbBackend::Postgres {
        let mut held = Vec::with_capacity(marks.len());
        for mark in marks {
            held.push(start_sending_many(conn, mark.job_ids, mark.worker, mark.lease_until, mark.now).await?);
        }
        return Ok(held);
    }
    let mut owner: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    let (mut ids, mut workers, mut leases, mut times) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (index, mark) in marks.iter().enumerate() {
        for &id in mark.job_ids {
            owner.insert(id, index);
            ids.push(id);
            workers.push(mark.worker.to_owned());
            leases.push(mark.lease_until);
            times.push(mark.now);
        }
    }
    let sql = "UPDATE delivery_jobs AS j SET state = 'sending', attempts = j.attempts + 1, \
           locked_until = m.lease_until, updated_at = m.at \
         FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS m(id, worker, lease_until, at) \
         WHERE j.id = m.id AND j.state = 'running' AND j.locked_by = m.worker \
         RETURNING j.id";
    let rows = Moved::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        [ids.into(), workers.into(), leases.into(), times.into()],
    ))
    .all(conn)
    .await?;
    let mut held = vec![Vec::new(); marks.len()];
    for row in rows {
        if let Some(&index) = owner.get(&row.id) {
            held[index].push(row.id);
        }
    }
    Ok(held)
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
        .filter(job::Column::State.is_in(["running", "sending"]))
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
        .col_expr(job::Column::State, Expr::value("pending"))
        .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
        .col_expr(job::Column::LockedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .filter(dialect::one_of(conn.get_database_backend(), job::Column::Id, job_ids))
        .filter(job::Column::State.eq("running"))
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
    claim_in_state(conn, ("reconcile", "reconciling"), worker, now, lease_until, limit).await
}

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
        .col_expr(message::Column::Status, Expr::value("SENT"))
        .col_expr(message::Column::StatusUpdatedAt, Expr::value(now))
        .col_expr(message::Column::ErrorCode, Expr::value(Option::<String>::None))
        .col_expr(message::Column::ErrorMessage, Expr::value(Option::<String>::None))
        .col_expr(message::Column::FailedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(message::Column::SentAt, Expr::value(now))
        .col_expr(message::Column::Provider, Expr::value(provider))
        .col_expr(message::Column::ProviderMessageId, Expr::value(provider_message_id))
        .filter(message::Column::Id.eq(id))
        .filter(message::Column::Status.eq("FAILED"))
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
        .filter(message::Column::Status.eq("FAILED"))
        .filter(message::Column::ErrorCode.eq("AMBIGUOUS"))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
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
/// [`change_status`]), the jobs done. Answers the ids of the messages that moved to SENT (one
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
    let moved = match backend {
        DbBackend::Postgres => settle_accepted_postgres(conn, accepted, &message_ids, now).await?,
        _ => settle_accepted_portable(conn, accepted, now).await?,
    };
    message::Entity::update_many()
        .col_expr(message::Column::AttemptCount, Expr::col(message::Column::AttemptCount).add(1))
        .filter(dialect::one_of(backend, message::Column::Id, &message_ids))
        .exec(conn)
        .await?;
    let job_ids: Vec<i64> = accepted.iter().map(|a| a.job_id).collect();
    finish_jobs(conn, &job_ids, "done", None, None, now).await?;
    Ok(moved)
}

#[derive(FromQueryResult)]
struct Moved {
    id: i64,
}

/// [`settle_accepted`]'s attempt rows and QUEUED → SENT with the batch as array parameters:
/// statements of one text whatever the batch's size (see [`dialect`]).
async fn settle_accepted_postgres(
    conn: &impl ConnectionTrait,
    accepted: &[Accepted],
    message_ids: &[i64],
    now: DateTime<Utc>,
) -> StoreResult<Vec<i64>> {
    let attempts: Vec<i32> = accepted.iter().map(|a| a.attempt).collect();
    let started: Vec<DateTime<Utc>> = accepted.iter().map(|a| a.started_at).collect();
    let providers: Vec<String> = accepted.iter().map(|a| a.provider.clone()).collect();
    let provider_ids: Vec<String> = accepted.iter().map(|a| a.provider_message_id.clone()).collect();
    let insert = "INSERT INTO message_attempts (message_id, attempt, started_at, finished_at, outcome, provider_message_id) \
         SELECT message_id, attempt, started_at, $1, 'accepted', provider_message_id \
         FROM unnest($2::bigint[], $3::integer[], $4::timestamptz[], $5::text[]) \
           AS a(message_id, attempt, started_at, provider_message_id)";
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        insert,
        [now.into(), message_ids.to_vec().into(), attempts.into(), started.into(), provider_ids.clone().into()],
    ))
    .await?;
    let moved_sql = "WITH v(id, provider, provider_message_id) AS \
           (SELECT * FROM unnest($2::bigint[], $3::text[], $4::text[])) \
         UPDATE messages SET status = 'SENT', status_updated_at = $1, sent_at = COALESCE(messages.sent_at, $1), \
           provider = v.provider, provider_message_id = v.provider_message_id \
         FROM v WHERE messages.id = v.id AND messages.status = 'QUEUED' RETURNING messages.id";
    let moved = Moved::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        moved_sql,
        [now.into(), message_ids.to_vec().into(), providers.into(), provider_ids.into()],
    ))
    .all(conn)
    .await?;
    Ok(moved.into_iter().map(|m| m.id).collect())
}

/// [`settle_accepted`]'s attempt rows and QUEUED → SENT in portable SQL: a multi-row insert and
/// one UPDATE over a VALUES list of (id, provider, provider id).
async fn settle_accepted_portable(
    conn: &impl ConnectionTrait,
    accepted: &[Accepted],
    now: DateTime<Utc>,
) -> StoreResult<Vec<i64>> {
    let backend = conn.get_database_backend();
    attempt::Entity::insert_many(accepted.iter().map(|a| attempt::ActiveModel {
        message_id: Set(a.message_id),
        attempt: Set(a.attempt),
        started_at: Set(a.started_at),
        finished_at: Set(Some(now)),
        outcome: Set("accepted".into()),
        provider_message_id: Set(Some(a.provider_message_id.clone())),
        ..Default::default()
    }))
    .exec_without_returning(conn)
    .await?;
    let mut values: Vec<sea_orm::Value> = vec![now.into()];
    let rows = accepted
        .iter()
        .map(|a| {
            values.extend([a.message_id.into(), a.provider.clone().into(), a.provider_message_id.clone().into()]);
            let n = values.len();
            format!("(?{}, ?{}, ?{n})", n - 2, n - 1)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH v(id, provider, provider_message_id) AS (VALUES {rows}) \
         UPDATE messages SET status = 'SENT', status_updated_at = ?1, sent_at = COALESCE(messages.sent_at, ?1), \
         provider = v.provider, provider_message_id = v.provider_message_id \
         FROM v WHERE messages.id = v.id AND messages.status = 'QUEUED' RETURNING messages.id"
    );
    let moved = Moved::find_by_statement(Statement::from_sql_and_values(backend, &sql, values)).all(conn).await?;
    Ok(moved.into_iter().map(|m| m.id).collect())
}

/// Ends a job's turn: `done`, `failed`, or back to `pending` at `next_attempt_at`.
pub async fn finish_job(
    conn: &impl ConnectionTrait,
    job_id: i64,
    state: &str,
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
    state: &str,
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
    Ok(job::Entity::find().filter(job::Column::State.is_in(["pending", "running", "sending"])).count(conn).await?)
}

// ---- attempts ----

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

pub async fn attempts(conn: &impl ConnectionTrait, message_id: i64) -> StoreResult<Vec<attempt::Model>> {
    Ok(attempt::Entity::find()
        .filter(attempt::Column::MessageId.eq(message_id))
        .order_by_asc(attempt::Column::Attempt)
        .order_by_asc(attempt::Column::Id)
        .all(conn)
        .await?)
}

// ---- pacing ----

/// Reserves the next send slot of a sender spaced `interval` apart, shared by every worker and
/// replica through the database; answers when the slot starts (now, or later when busy).
pub async fn reserve_slot(
    conn: &impl ConnectionTrait,
    sender_key: &str,
    interval: chrono::Duration,
    now: DateTime<Utc>,
) -> StoreResult<DateTime<Utc>> {
    let backend = conn.get_database_backend();
    // Make sure the row exists, then lock it (PostgreSQL) / rely on the single writer (SQLite).
    sender_pacing::Entity::insert(sender_pacing::ActiveModel {
        sender_key: Set(sender_key.to_owned()),
        next_slot_at: Set(now),
    })
    .on_conflict(OnConflict::column(sender_pacing::Column::SenderKey).do_nothing().to_owned())
    .exec_without_returning(conn)
    .await?;
    let mut select = sender_pacing::Entity::find_by_id(sender_key.to_owned());
    if backend == DbBackend::Postgres {
        select = select.lock_exclusive();
    }
    let current = select.one(conn).await?.map_or(now, |row| row.next_slot_at);
    let slot = std::cmp::max(current, now);
    sender_pacing::Entity::update_many()
        .col_expr(sender_pacing::Column::NextSlotAt, Expr::value(slot + interval))
        .filter(sender_pacing::Column::SenderKey.eq(sender_key))
        .exec(conn)
        .await?;
    Ok(slot)
}

// ---- provider credentials ----
//
// `config` is sealed at rest (see `crate::secrets`): these functions seal what they store and
// answer rows whose `config` is opened again.

use super::StoreError;
use crate::secrets::SecretKeys;

/// What binds a sealed value to its row.
fn credential_context(business_id: i64, kind: &str) -> String {
    format!("provider_credentials/{business_id}/{kind}")
}

fn opened(keys: &SecretKeys, mut row: credential::Model) -> StoreResult<credential::Model> {
    row.config = keys
        .open(&row.config, &credential_context(row.business_id, &row.kind))
        .map_err(|e| StoreError::Config(format!("provider credentials of business {}: {e:#}", row.business_id)))?;
    Ok(row)
}

pub async fn credentials(
    conn: &impl ConnectionTrait,
    keys: &SecretKeys,
    business_id: i64,
) -> StoreResult<Vec<credential::Model>> {
    credential::Entity::find()
        .filter(credential::Column::BusinessId.eq(business_id))
        .order_by_asc(credential::Column::UpdatedAt)
        .all(conn)
        .await?
        .into_iter()
        .map(|row| opened(keys, row))
        .collect()
}

/// Stores a business's credentials for `kind`, sealed. A Twilio account another business holds
/// is a `UniqueViolation` (the database enforces one owner per account).
#[allow(clippy::too_many_arguments)]
pub async fn set_credentials(
    conn: &impl ConnectionTrait,
    keys: &SecretKeys,
    business_id: i64,
    kind: &str,
    config: String,
    account_ref: Option<String>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let sealed =
        keys.seal(&config, &credential_context(business_id, kind)).map_err(|e| StoreError::Config(format!("{e:#}")))?;
    credential::Entity::insert(credential::ActiveModel {
        business_id: Set(business_id),
        kind: Set(kind.to_owned()),
        config: Set(sealed),
        updated_at: Set(now),
        account_ref: Set(account_ref),
    })
    .on_conflict(
        OnConflict::columns([credential::Column::BusinessId, credential::Column::Kind])
            .update_columns([credential::Column::Config, credential::Column::UpdatedAt, credential::Column::AccountRef])
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// The credentials stored for a provider account (one business at most: the index is unique).
pub async fn credentials_by_account(
    conn: &impl ConnectionTrait,
    keys: &SecretKeys,
    kind: &str,
    account_ref: &str,
) -> StoreResult<Vec<credential::Model>> {
    credential::Entity::find()
        .filter(credential::Column::Kind.eq(kind))
        .filter(credential::Column::AccountRef.eq(account_ref))
        .all(conn)
        .await?
        .into_iter()
        .map(|row| opened(keys, row))
        .collect()
}

/// Seals every credential row not sealed with the current key (older keys, plaintext from
/// before encryption) again with it. Every row is opened before any is written, so a missing key
/// changes nothing; each row changes only if it is still what was read, so a credential set
/// meanwhile is not overwritten. Answers (rows sealed again, rows in all).
pub async fn reseal_credentials(conn: &impl ConnectionTrait, keys: &SecretKeys) -> StoreResult<(u64, u64)> {
    let rows = credential::Entity::find().all(conn).await?;
    let total = rows.len() as u64;
    let mut resealed_rows = Vec::new();
    for row in rows {
        if crate::secrets::sealed_with(&row.config) != crate::secrets::Sealed::With(keys.current_id()) {
            let config = opened(keys, row.clone())?.config;
            let sealed = keys
                .seal(&config, &credential_context(row.business_id, &row.kind))
                .map_err(|e| StoreError::Config(format!("{e:#}")))?;
            resealed_rows.push((row, sealed));
        }
    }
    let mut resealed = 0;
    for (row, sealed) in resealed_rows {
        let changed = credential::Entity::update_many()
            .col_expr(credential::Column::Config, Expr::value(sealed))
            .filter(credential::Column::BusinessId.eq(row.business_id))
            .filter(credential::Column::Kind.eq(row.kind))
            .filter(credential::Column::Config.eq(row.config))
            .exec(conn)
            .await?;
        resealed += changed.rows_affected;
    }
    Ok((resealed, total))
}

/// Records a provider event as applied; answers false when it already was (a retry).
pub async fn first_delivery_of_event(
    conn: &impl ConnectionTrait,
    provider: &str,
    event_id: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let result = webhook_event::Entity::insert(webhook_event::ActiveModel {
        provider: Set(provider.to_owned()),
        event_id: Set(event_id.to_owned()),
        received_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([webhook_event::Column::Provider, webhook_event::Column::EventId]).do_nothing().to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(result == 1)
}

/// Forgets provider events received before `before` (providers stop retrying long before);
/// answers how many.
pub async fn purge_webhook_events(conn: &impl ConnectionTrait, before: DateTime<Utc>) -> StoreResult<u64> {
    Ok(webhook_event::Entity::delete_many()
        .filter(webhook_event::Column::ReceivedAt.lt(before))
        .exec(conn)
        .await?
        .rows_affected)
}

/// Records a call's progress: its duration and the sequence number of the callback applied.
pub async fn set_call_progress(
    conn: &impl ConnectionTrait,
    id: i64,
    duration: Option<i32>,
    sequence: Option<i32>,
) -> StoreResult<()> {
    let mut query = message::Entity::update_many().filter(message::Column::Id.eq(id));
    if let Some(duration) = duration {
        query = query.col_expr(message::Column::DurationSeconds, Expr::value(duration));
    }
    if let Some(sequence) = sequence {
        query = query.col_expr(message::Column::ProviderSequence, Expr::value(sequence));
    }
    query.exec(conn).await?;
    Ok(())
}

/// What an inbound call's record (or a voicemail's) says: the text staff see, the talk time,
/// why it was missed, who answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    pub content: String,
    pub duration_seconds: Option<i32>,
    pub error_code: Option<String>,
    pub answered_by_staff_id: Option<i64>,
}

impl CallRecord {
    pub fn of(message: &message::Model) -> Self {
        Self {
            content: message.content.clone(),
            duration_seconds: message.duration_seconds,
            error_code: message.error_code.clone(),
            answered_by_staff_id: message.answered_by_staff_id,
        }
    }
}

/// Rewrites a call's record to `new` if it still reads `old` (callbacks arrive concurrently and
/// out of order: a loser decides again from what is stored). Answers whether it changed.
pub async fn rewrite_call_record(
    conn: &impl ConnectionTrait,
    id: i64,
    old: &CallRecord,
    new: &CallRecord,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let mut query = message::Entity::update_many()
        .col_expr(message::Column::Content, Expr::value(new.content.clone()))
        .col_expr(message::Column::DurationSeconds, Expr::value(new.duration_seconds))
        .col_expr(message::Column::ErrorCode, Expr::value(new.error_code.clone()))
        .col_expr(message::Column::AnsweredByStaffId, Expr::value(new.answered_by_staff_id))
        .col_expr(message::Column::StatusUpdatedAt, Expr::value(now))
        .filter(message::Column::Id.eq(id))
        .filter(message::Column::Content.eq(old.content.clone()));
    query = match old.duration_seconds {
        Some(d) => query.filter(message::Column::DurationSeconds.eq(d)),
        None => query.filter(message::Column::DurationSeconds.is_null()),
    };
    query = match &old.error_code {
        Some(code) => query.filter(message::Column::ErrorCode.eq(code.clone())),
        None => query.filter(message::Column::ErrorCode.is_null()),
    };
    query = match old.answered_by_staff_id {
        Some(staff) => query.filter(message::Column::AnsweredByStaffId.eq(staff)),
        None => query.filter(message::Column::AnsweredByStaffId.is_null()),
    };
    Ok(query.exec(conn).await?.rows_affected == 1)
}

// ---- search ----

#[derive(Debug, FromQueryResult)]
struct HitRow {
    id: i64,
    rank: f64,
    highlight: String,
}

/// A matching message's text, for ranking.
#[derive(FromQueryResult)]
pub struct Doc {
    pub id: i64,
    pub subject: String,
    pub content: String,
}

/// Up to `limit` of the conversation's matching messages' texts (SQLite).
async fn matching_docs(
    conn: &impl ConnectionTrait,
    matches: &str,
    query: &str,
    conversation_id: i64,
    limit: u64,
) -> StoreResult<Vec<Doc>> {
    Ok(Doc::find_by_statement(Statement::from_sql_and_values(
        conn.get_database_backend(),
        format!("SELECT m.id, coalesce(m.subject, '') AS subject, m.content {matches} LIMIT {limit}"),
        [conversation_id.into(), query.into()],
    ))
    .all(conn)
    .await?)
}

/// SQLite's ranked page: every match of the conversation (at most [`RANKED_MATCHES`]) scored
/// with BM25's term-frequency saturation and length normalisation over the conversation's own
/// matches (every word is required, so a corpus-wide IDF would only scale the scores), then
/// the page's highlights from FTS5.
async fn rank_in_conversation(
    conn: &impl ConnectionTrait,
    docs: Vec<Doc>,
    query: &str,
    terms: &[String],
    offset: u64,
    limit: u64,
) -> StoreResult<Vec<HitRow>> {
    let scores = bm25_scores(terms, docs.iter().map(|d| (d.id, format!("{} {}", d.subject, d.content))));
    let page: Vec<(i64, f64)> = scores.into_iter().skip(offset as usize).take(limit as usize).collect();
    if page.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = page.iter().map(|(id, _)| *id).collect();
    let mut highlights = highlights(conn, query, &ids).await?;
    Ok(page
        .into_iter()
        .map(|(id, rank)| HitRow { id, rank, highlight: highlights.remove(&id).unwrap_or_default() })
        .collect())
}

/// BM25 without IDF over `docs` (id, text): best first, ties newest (highest id) first.
fn bm25_scores(terms: &[String], docs: impl Iterator<Item = (i64, String)>) -> Vec<(i64, f64)> {
    const K1: f64 = 1.2;
    const B: f64 = 0.75;
    let tokenized: Vec<(i64, Vec<String>)> = docs
        .map(|(id, text)| {
            let tokens = text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase);
            (id, tokens.collect())
        })
        .collect();
    let average = tokenized.iter().map(|(_, t)| t.len() as f64).sum::<f64>() / tokenized.len().max(1) as f64;
    let mut scores: Vec<(i64, f64)> = tokenized
        .iter()
        .map(|(id, tokens)| {
            let norm = K1 * (1.0 - B + B * tokens.len() as f64 / average.max(1.0));
            let score = terms
                .iter()
                .map(|term| {
                    let tf = tokens.iter().filter(|t| *t == term).count() as f64;
                    tf * (K1 + 1.0) / (tf + norm)
                })
                .sum();
            (*id, score)
        })
        .collect();
    scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    scores
}

/// Matches ranked by relevance up to this many; a search matching more lists them newest first
/// (ranking every one of tens of thousands of matches would cost more than the page is worth).
pub const RANKED_MATCHES: u64 = 1_000;

/// One page of a search within a conversation.
pub struct SearchPage {
    /// (message, rank, highlighted passage), in page order.
    pub hits: Vec<(message::Model, f64, String)>,
    /// Matches, counted up to [`RANKED_MATCHES`].
    pub total: u64,
    /// Whether there were more than [`RANKED_MATCHES`]: then `total` is that cap and the hits
    /// are newest first instead of best first.
    pub capped: bool,
}

/// One page of a conversation's messages matching every term, with a highlighted passage.
/// SQLite: FTS5 scoped by the conversation's token, ranked by [`rank_in_conversation`];
/// PostgreSQL: tsvector with ts_rank, through the (business_id, conversation_id, search) GIN index.
pub async fn search(
    conn: &impl ConnectionTrait,
    conversation_id: i64,
    terms: &[String],
    include_notes: bool,
    offset: u64,
    limit: u64,
) -> StoreResult<SearchPage> {
    let backend = conn.get_database_backend();
    let notes = if include_notes { "" } else { " AND m.channel <> 'NOTE'" };
    // Whole words, all required; every term quoted, so no user text is parsed as query syntax.
    let (matches, select, by_rank, by_age, query) = match backend {
        DbBackend::Postgres => {
            let query = tsquery(terms);
            // The (business_id, conversation_id, search) GIN index answers the match with its
            // conversation and word entries (the id is bound as bigint, the type the index's
            // operator class takes). The page is cut before
            // ts_headline runs; `m.id + 0` keeps the planner from walking the primary key
            // backwards hoping to meet matches.
            (
                "FROM messages m WHERE m.conversation_id = $1 AND m.search @@ to_tsquery('simple', $2)".to_owned()
                    + notes,
                "SELECT page.id, page.rank, ts_headline('simple', page.content, to_tsquery('simple', $2), \
                 'StartSel=<mark>, StopSel=</mark>, MaxFragments=1, MaxWords=20, MinWords=5') AS highlight \
                 FROM (SELECT m.id, m.content, ts_rank(m.search, to_tsquery('simple', $2))::float8 AS rank",
                "ORDER BY rank DESC, m.id DESC LIMIT $3 OFFSET $4) page ORDER BY page.rank DESC, page.id DESC",
                "ORDER BY m.id + 0 DESC LIMIT $3 OFFSET $4) page ORDER BY page.id DESC",
                query,
            )
        }
        _ => {
            // The conversation is a token of the index (migration 8): one FTS5 query intersects
            // its doclist with the words'. `+` keeps SQLite from driving the join by the
            // conversation's rows instead, which would re-run the match per row.
            let words = fts_words(terms);
            (
                format!(
                    "FROM messages_fts f JOIN messages m ON m.id = f.rowid \
                     WHERE messages_fts MATCH ?2 AND +m.conversation_id = ?1{notes}"
                ),
                // No bm25(): it counts, per query, every row holding each word across the whole
                // index (a common word: a million, ~60 ms). Ranked pages are scored from the
                // conversation's own matches instead (`rank_in_conversation`).
                "SELECT m.id, 0.0 AS rank, snippet(messages_fts, 2, '<mark>', '</mark>', '…', 20) AS highlight",
                "",
                "ORDER BY f.rowid DESC LIMIT ?3 OFFSET ?4",
                format!("conversation : \"c{conversation_id}\" AND {words}"),
            )
        }
    };
    #[derive(FromQueryResult)]
    struct Count {
        n: i64,
    }
    // Counted first without their texts: in a busy conversation a common word matches
    // thousands, and then the page is simply the newest (loading a thousand texts to count them
    // cost more than the rest of the search).
    let count_sql = format!("SELECT COUNT(*) AS n FROM (SELECT 1 {matches} LIMIT {}) capped", RANKED_MATCHES + 1);
    let counted = Count::find_by_statement(Statement::from_sql_and_values(
        backend,
        &count_sql,
        [conversation_id.into(), query.clone().into()],
    ))
    .one(conn)
    .await?
    .map_or(0, |c| c.n as u64);
    // SQLite ranks up to a thousand matches from their texts.
    let docs = match backend {
        DbBackend::Sqlite if counted <= RANKED_MATCHES => {
            Some(matching_docs(conn, &matches, &query, conversation_id, RANKED_MATCHES).await?)
        }
        _ => None,
    };
    let capped = counted > RANKED_MATCHES;
    let page = |extra: &str| {
        let order = if capped { by_age } else { by_rank };
        let sql = format!("{select} {matches}{extra} {order}");
        HitRow::find_by_statement(Statement::from_sql_and_values(
            backend,
            &sql,
            [conversation_id.into(), query.clone().into(), (limit as i64).into(), (offset as i64).into()],
        ))
        .all(conn)
    };
    let hits = if capped && backend == DbBackend::Sqlite {
        // FTS5 walks a doclist backwards by loading it whole: for a common word, a million
        // entries. Starting from the conversation's recent messages bounds that walk; the
        // page is only taken from there if it is full, otherwise from everything.
        let recent = (offset + limit) * 4 + 1_000;
        let floor = message::Entity::find()
            .select_only()
            .column(message::Column::Id)
            .filter(message::Column::ConversationId.eq(conversation_id))
            .order_by_desc(message::Column::CreatedAt)
            .order_by_desc(message::Column::Id)
            .offset(recent)
            .limit(1)
            .into_tuple::<i64>()
            .one(conn)
            .await?;
        match floor {
            Some(floor) => {
                let hits = page(&format!(" AND f.rowid >= {floor}")).await?;
                if hits.len() as u64 >= limit { hits } else { page("").await? }
            }
            None => page("").await?,
        }
    } else if let Some(docs) = docs {
        rank_in_conversation(conn, docs, &query, terms, offset, limit).await?
    } else {
        page("").await?
    };
    let ids: Vec<i64> = hits.iter().map(|h| h.id).collect();
    let mut rows = message::Entity::find().filter(message::Column::Id.is_in(ids)).all(conn).await?;
    let mut out = Vec::with_capacity(hits.len());
    for hit in hits {
        if let Some(pos) = rows.iter().position(|m| m.id == hit.id) {
            out.push((rows.swap_remove(pos), hit.rank, hit.highlight));
        }
    }
    Ok(SearchPage { hits: out, total: std::cmp::min(counted, RANKED_MATCHES), capped })
}

// ---- text matching shared by both searches ----

/// PostgreSQL's query for `terms`: every one required, each quoted as a lexeme, so no user
/// text is read as tsquery syntax.
fn tsquery(terms: &[String]) -> String {
    terms.iter().map(|t| format!("'{}'", t.replace('\'', "''"))).collect::<Vec<_>>().join(" & ")
}

/// SQLite's FTS5 query for `terms` in a message's subject or text: every one required, each a
/// quoted string, so no user text is read as FTS5 syntax.
fn fts_words(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("{{subject content}} : \"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The highlighted passage of each message in `ids` for the backend's `query` (an FTS5
/// expression on SQLite, a tsquery on PostgreSQL): matches wrapped in `<mark></mark>`.
async fn highlights(
    conn: &impl ConnectionTrait,
    query: &str,
    ids: &[i64],
) -> StoreResult<std::collections::HashMap<i64, String>> {
    #[derive(FromQueryResult)]
    struct Highlight {
        id: i64,
        highlight: String,
    }
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let backend = conn.get_database_backend();
    let ids = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let sql = match backend {
        DbBackend::Postgres => format!(
            "SELECT id, ts_headline('simple', content, to_tsquery('simple', $1), \
             'StartSel=<mark>, StopSel=</mark>, MaxFragments=1, MaxWords=20, MinWords=5') AS highlight \
             FROM messages WHERE id IN ({ids})"
        ),
        _ => format!(
            "SELECT f.rowid AS id, snippet(messages_fts, 2, '<mark>', '</mark>', '…', 20) AS highlight \
             FROM messages_fts f WHERE messages_fts MATCH ?1 AND f.rowid IN ({ids})"
        ),
    };
    let rows =
        Highlight::find_by_statement(Statement::from_sql_and_values(backend, sql, [query.into()])).all(conn).await?;
    Ok(rows.into_iter().map(|h| (h.id, h.highlight)).collect())
}

// ---- search across a business ----

/// What a business-wide search keeps besides its words (internal notes never).
#[derive(Default, Clone)]
pub struct BusinessSearchFilter {
    pub channel: Option<&'static str>,
    pub direction: Option<&'static str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The assignee of the message's conversation.
    pub assignee: super::conversations::AssigneeFilter,
}

/// Positional parameters of a hand-written statement, numbered as each backend wants.
struct Binds {
    backend: DbBackend,
    values: Vec<sea_orm::Value>,
}

impl Binds {
    fn new(backend: DbBackend) -> Self {
        Self { backend, values: Vec::new() }
    }

    fn push(&mut self, value: impl Into<sea_orm::Value>) -> String {
        self.values.push(value.into());
        match self.backend {
            DbBackend::Postgres => format!("${}", self.values.len()),
            _ => format!("?{}", self.values.len()),
        }
    }
}

impl BusinessSearchFilter {
    /// The filter's conditions on `m` (a message row), binding their values.
    fn sql(&self, binds: &mut Binds) -> String {
        use super::conversations::AssigneeFilter;
        let mut sql = " AND m.channel <> 'NOTE'".to_owned();
        if let Some(channel) = self.channel {
            sql += &format!(" AND m.channel = {}", binds.push(channel));
        }
        if let Some(direction) = self.direction {
            sql += &format!(" AND m.direction = {}", binds.push(direction));
        }
        if let Some(since) = self.since {
            sql += &format!(" AND m.created_at >= {}", binds.push(since));
        }
        if let Some(until) = self.until {
            sql += &format!(" AND m.created_at < {}", binds.push(until));
        }
        // Tested per candidate row (one primary-key lookup), so the walk stays in id order.
        let assignee = match self.assignee {
            AssigneeFilter::Any => None,
            AssigneeFilter::Unassigned => Some("c.assigned_staff_id IS NULL".to_owned()),
            AssigneeFilter::Assigned => Some("c.assigned_staff_id IS NOT NULL".to_owned()),
            AssigneeFilter::Staff(id) => Some(format!("c.assigned_staff_id = {}", binds.push(id))),
        };
        if let Some(assignee) = assignee {
            sql +=
                &format!(" AND EXISTS (SELECT 1 FROM conversations c WHERE c.id = m.conversation_id AND {assignee})");
        }
        sql
    }
}

/// PostgreSQL: how many of the business's newest messages are tested one by one before a
/// search turns to the GIN index, in two steps. A word in more than one message in a thousand
/// fills a page of 20 within them (the walk stops as soon as it does); a word absent from the
/// first step's messages, or rarer than that, is found through the index, whose cost is its
/// number of matches in the business. Both costs meet near √(page × messages): 20,000 rows for
/// ten million messages.
const PG_PROBE_ROWS: [u64; 2] = [2_000, 20_000];

/// SQLite: the first id window a business search reads; each next one is four times wider.
const SQLITE_FIRST_WINDOW: i64 = 4_096;

/// Up to `limit` of the business's messages matching every term and the filter, with ids
/// below `before` (all when `None`) and, with a `window`, among the business's newest `window`
/// messages below it, newest (highest id) first, with their texts.
///
/// Both databases walk from the newest message down and stop once `limit` are found, so a
/// common word costs a page, never a sort of its million matches. SQLite: FTS5 queries scoped
/// by the business token (migration 21) over rowid windows growing fourfold from the top, each
/// reading only the matches inside it. PostgreSQL: the business's newest messages (up to
/// [`PG_PROBE_ROWS`]) through the (business_id, id) index, tested one by one; if they hold
/// fewer than `limit` matches, the word is rare and the (business_id, conversation_id, search)
/// GIN lists every match.
pub async fn business_matches(
    conn: &impl ConnectionTrait,
    business_id: i64,
    terms: &[String],
    filter: &BusinessSearchFilter,
    before: Option<i64>,
    window: Option<u64>,
    limit: u64,
) -> StoreResult<Vec<Doc>> {
    let backend = conn.get_database_backend();
    let before = before.unwrap_or(i64::MAX);
    match backend {
        DbBackend::Postgres => {
            let mut binds = Binds::new(backend);
            let (business, before_p, query) = (binds.push(business_id), binds.push(before), binds.push(tsquery(terms)));
            let conditions = filter.sql(&mut binds);
            // The subquery's LIMIT keeps the planner from pushing the match into it; the outer
            // LIMIT stops reading it once the page is full.
            let steps = match window {
                Some(window) => [std::cmp::min(PG_PROBE_ROWS[0], window), window],
                None => PG_PROBE_ROWS,
            };
            for (step, rows) in steps.into_iter().enumerate() {
                let probe = format!(
                    "SELECT m.id, coalesce(m.subject, '') AS subject, m.content FROM \
                     (SELECT id, business_id, conversation_id, channel, direction, created_at, subject, content, \
                      search FROM messages WHERE business_id = {business} AND id < {before_p} \
                      ORDER BY id DESC LIMIT {rows}) m \
                     WHERE m.search @@ to_tsquery('simple', {query}){conditions} ORDER BY m.id DESC LIMIT {limit}"
                );
                let found =
                    Doc::find_by_statement(Statement::from_sql_and_values(backend, probe, binds.values.clone()))
                        .all(conn)
                        .await?;
                if found.len() as u64 >= limit || (window.is_some() && step == 1) {
                    return Ok(found);
                }
                // None among the first rows: a rare word, cheaper through the index.
                if found.is_empty() && window.is_none() {
                    break;
                }
            }
            // `m.id + 0`: the order must not tempt the planner into walking the primary key.
            let indexed = format!(
                "SELECT m.id, coalesce(m.subject, '') AS subject, m.content FROM messages m \
                 WHERE m.business_id = {business} AND m.search @@ to_tsquery('simple', {query}) \
                 AND m.id < {before_p}{conditions} ORDER BY m.id + 0 DESC LIMIT {limit}"
            );
            Ok(Doc::find_by_statement(Statement::from_sql_and_values(backend, indexed, binds.values)).all(conn).await?)
        }
        _ => {
            #[derive(FromQueryResult)]
            struct Top {
                id: Option<i64>,
            }
            let top = Top::find_by_statement(Statement::from_string(backend, "SELECT max(id) AS id FROM messages"))
                .one(conn)
                .await?
                .and_then(|t| t.id)
                .unwrap_or(0);
            let mut high = std::cmp::min(before, top.saturating_add(1));
            // The id of the business's `window`-th newest message below `high`, from its token's
            // doclist (0: fewer, so all of them).
            let floor = match window {
                Some(window) => {
                    let mut binds = Binds::new(backend);
                    let sql = format!(
                        "SELECT rowid AS id FROM messages_fts WHERE messages_fts MATCH {} AND rowid < {} \
                         ORDER BY rowid DESC LIMIT 1 OFFSET {}",
                        binds.push(format!("conversation : \"b{business_id}\"")),
                        binds.push(high),
                        window.saturating_sub(1)
                    );
                    Top::find_by_statement(Statement::from_sql_and_values(backend, sql, binds.values))
                        .one(conn)
                        .await?
                        .and_then(|t| t.id)
                        .unwrap_or(0)
                }
                None => 0,
            };
            let mut width = SQLITE_FIRST_WINDOW;
            let mut found = Vec::new();
            while high > floor && (found.len() as u64) < limit {
                let low = std::cmp::max(high.saturating_sub(width), floor);
                let mut binds = Binds::new(backend);
                let query = binds.push(format!("conversation : \"b{business_id}\" AND {}", fts_words(terms)));
                let (low_p, high_p, business) = (binds.push(low), binds.push(high), binds.push(business_id));
                let conditions = filter.sql(&mut binds);
                let need = limit - found.len() as u64;
                // `+m.business_id`: the join is driven by the index, never by the business's rows.
                let sql = format!(
                    "SELECT m.id, coalesce(m.subject, '') AS subject, m.content \
                     FROM messages_fts f JOIN messages m ON m.id = f.rowid \
                     WHERE messages_fts MATCH {query} AND f.rowid >= {low_p} AND f.rowid < {high_p} \
                     AND +m.business_id = {business}{conditions} ORDER BY f.rowid DESC LIMIT {need}"
                );
                found.extend(
                    Doc::find_by_statement(Statement::from_sql_and_values(backend, sql, binds.values))
                        .all(conn)
                        .await?,
                );
                high = low;
                width = width.saturating_mul(4);
            }
            Ok(found)
        }
    }
}

/// The highlighted passage of each of the messages `ids` for `terms`.
pub async fn highlights_for(
    conn: &impl ConnectionTrait,
    terms: &[String],
    ids: &[i64],
) -> StoreResult<std::collections::HashMap<i64, String>> {
    let query = match conn.get_database_backend() {
        DbBackend::Postgres => tsquery(terms),
        _ => fts_words(terms),
    };
    highlights(conn, &query, ids).await
}

/// BM25 without IDF over `docs`: best first, ties newest first (see [`bm25_scores`]).
pub fn rank_docs(terms: &[String], docs: &[Doc]) -> Vec<(i64, f64)> {
    bm25_scores(terms, docs.iter().map(|d| (d.id, format!("{} {}", d.subject, d.content))))
}

#[cfg(test)]
mod ranking_tests {
    use super::bm25_scores;

    #[test]
    fn more_occurrences_and_shorter_texts_rank_first_ties_newest_first() {
        let terms = vec!["invoice".to_owned()];
        let docs = vec![
            (1, "Invoice paid".to_owned()),
            (2, "Invoice paid, thanks. Another invoice question".to_owned()),
            (3, "Is my invoice for March ready, and can you also tell me the opening hours?".to_owned()),
            (4, "Invoice paid".to_owned()),
        ];
        let order: Vec<i64> = bm25_scores(&terms, docs.into_iter()).into_iter().map(|(id, _)| id).collect();
        assert_eq!(order, [2, 4, 1, 3]);
    }
}
