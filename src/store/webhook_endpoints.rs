//! Outbound webhook endpoints and their deliveries (the outbox). Every query takes the business
//! scope; the workers' claims are single statements, so no delivery is claimed twice.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect,
    Set, Value,
};

use super::{
    StoreError, StoreResult, dialect,
    entity::{
        conversation_event as event, enums::WebhookDeliveryState, webhook_delivery as delivery,
        webhook_endpoint as endpoint,
    },
};
use crate::secrets::SecretKeys;
use sea_orm::sea_query::ExprTrait;

/// What a stored secret is bound to: a sealed secret copied to another row does not open.
fn secret_context(endpoint_id: i64) -> String {
    format!("webhook_endpoints/{endpoint_id}/secret")
}

fn sealing(err: anyhow::Error) -> StoreError {
    StoreError::Config(format!("{err:#}"))
}

pub struct NewEndpoint {
    pub business_id: i64,
    pub url: String,
    pub description: String,
    pub event_types: String,
    pub enabled: bool,
}

/// Inserts an endpoint with its secret sealed to its row. Run it inside a transaction.
pub async fn insert_endpoint(
    conn: &impl ConnectionTrait,
    keys: &SecretKeys,
    new: NewEndpoint,
    secret: &str,
    now: DateTime<Utc>,
) -> StoreResult<endpoint::Model> {
    let row = endpoint::ActiveModel {
        business_id: Set(new.business_id),
        url: Set(new.url),
        description: Set(new.description),
        event_types: Set(new.event_types),
        enabled: Set(new.enabled),
        disabled_reason: Set(None),
        disabled_at: Set(None),
        secret: Set(String::new()),
        previous_secret: Set(None),
        previous_secret_until: Set(None),
        consecutive_failures: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    let sealed = keys.seal(secret, &secret_context(row.id)).map_err(sealing)?;
    let mut active: endpoint::ActiveModel = row.into();
    active.secret = Set(sealed);
    Ok(active.update(conn).await?)
}

/// The business's endpoint `id`.
pub async fn endpoint(conn: &impl ConnectionTrait, business_id: i64, id: i64) -> StoreResult<Option<endpoint::Model>> {
    Ok(endpoint::Entity::find_by_id(id).filter(endpoint::Column::BusinessId.eq(business_id)).one(conn).await?)
}

pub async fn endpoints(conn: &impl ConnectionTrait, business_id: i64) -> StoreResult<Vec<endpoint::Model>> {
    Ok(endpoint::Entity::find()
        .filter(endpoint::Column::BusinessId.eq(business_id))
        .order_by_asc(endpoint::Column::Id)
        .all(conn)
        .await?)
}

pub async fn count_endpoints(conn: &impl ConnectionTrait, business_id: i64) -> StoreResult<u64> {
    use sea_orm::PaginatorTrait;
    Ok(endpoint::Entity::find().filter(endpoint::Column::BusinessId.eq(business_id)).count(conn).await?)
}

/// The secrets that sign a delivery now: the current one, and the previous one while it is
/// still honoured after a rotation.
pub fn signing_secrets(keys: &SecretKeys, row: &endpoint::Model, now: DateTime<Utc>) -> StoreResult<Vec<String>> {
    let context = secret_context(row.id);
    let mut secrets = vec![keys.open(&row.secret, &context).map_err(sealing)?];
    if let (Some(previous), Some(until)) = (&row.previous_secret, row.previous_secret_until)
        && until > now
    {
        secrets.push(keys.open(previous, &context).map_err(sealing)?);
    }
    Ok(secrets)
}

/// Replaces the secret; the one it replaces keeps signing until `previous_until`.
pub async fn rotate_secret(
    conn: &impl ConnectionTrait,
    keys: &SecretKeys,
    row: endpoint::Model,
    secret: &str,
    previous_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<endpoint::Model> {
    let sealed = keys.seal(secret, &secret_context(row.id)).map_err(sealing)?;
    let previous = row.secret.clone();
    let mut active: endpoint::ActiveModel = row.into();
    active.previous_secret = Set(Some(previous));
    active.previous_secret_until = Set(Some(previous_until));
    active.secret = Set(sealed);
    active.updated_at = Set(now);
    Ok(active.update(conn).await?)
}

pub async fn save_endpoint(conn: &impl ConnectionTrait, row: endpoint::ActiveModel) -> StoreResult<endpoint::Model> {
    Ok(row.update(conn).await?)
}

/// Deletes the endpoint and (cascade) its deliveries; answers whether it existed.
pub async fn delete_endpoint(conn: &impl ConnectionTrait, business_id: i64, id: i64) -> StoreResult<bool> {
    // Deliveries first: SQLite enforces the cascade only with foreign keys on, which the one
    // writer has, but the statement says what happens either way.
    delivery::Entity::delete_many()
        .filter(delivery::Column::EndpointId.eq(id))
        .filter(delivery::Column::BusinessId.eq(business_id))
        .exec(conn)
        .await?;
    let done = endpoint::Entity::delete_many()
        .filter(endpoint::Column::Id.eq(id))
        .filter(endpoint::Column::BusinessId.eq(business_id))
        .exec(conn)
        .await?;
    Ok(done.rows_affected > 0)
}

/// A delivery with its event's kind, for the log.
#[derive(Debug, Clone, FromQueryResult)]
pub struct DeliveryRow {
    pub id: i64,
    pub endpoint_id: i64,
    pub event_id: i64,
    pub kind: String,
    pub state: WebhookDeliveryState,
    pub attempt_count: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Up to `limit` deliveries of the endpoint, newest first, before delivery id `before`.
pub async fn deliveries(
    conn: &impl ConnectionTrait,
    business_id: i64,
    endpoint_id: i64,
    state: Option<WebhookDeliveryState>,
    before: Option<i64>,
    limit: u64,
) -> StoreResult<Vec<DeliveryRow>> {
    let backend = conn.get_database_backend();
    let mut values: Vec<Value> = vec![business_id.into(), endpoint_id.into()];
    let mut sql = "SELECT d.id, d.endpoint_id, d.event_id, e.kind, d.state, d.attempt_count, d.next_attempt_at, \
                   d.last_status_code, d.last_error, d.last_attempt_at, d.delivered_at, d.created_at \
                   FROM webhook_deliveries d JOIN conversation_events e ON e.id = d.event_id \
                   WHERE d.business_id = $1 AND d.endpoint_id = $2"
        .to_owned();
    if let Some(state) = state {
        values.push(state.into());
        sql.push_str(&format!(" AND d.state = ${}", values.len()));
    }
    if let Some(before) = before {
        values.push(before.into());
        sql.push_str(&format!(" AND d.id < ${}", values.len()));
    }
    sql.push_str(&format!(" ORDER BY d.id DESC LIMIT {limit}"));
    Ok(DeliveryRow::find_by_statement(dialect::statement(backend, &sql, values)).all(conn).await?)
}

pub async fn delivery(
    conn: &impl ConnectionTrait,
    business_id: i64,
    endpoint_id: i64,
    id: i64,
) -> StoreResult<Option<DeliveryRow>> {
    let backend = conn.get_database_backend();
    let sql = "SELECT d.id, d.endpoint_id, d.event_id, e.kind, d.state, d.attempt_count, d.next_attempt_at, \
               d.last_status_code, d.last_error, d.last_attempt_at, d.delivered_at, d.created_at \
               FROM webhook_deliveries d JOIN conversation_events e ON e.id = d.event_id \
               WHERE d.business_id = $1 AND d.endpoint_id = $2 AND d.id = $3"
        .to_owned();
    Ok(DeliveryRow::find_by_statement(dialect::statement(
        backend,
        &sql,
        [business_id.into(), endpoint_id.into(), id.into()],
    ))
    .one(conn)
    .await?)
}

/// Makes the delivery due now, whatever its state (a replay): the same row, so the same
/// `webhook-id`. A worker sending it at this moment loses its claim and records nothing.
pub async fn replay_delivery(
    conn: &impl ConnectionTrait,
    business_id: i64,
    endpoint_id: i64,
    id: i64,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    use sea_orm::sea_query::Expr;
    let done = delivery::Entity::update_many()
        .col_expr(delivery::Column::State, Expr::value(WebhookDeliveryState::Pending))
        .col_expr(delivery::Column::NextAttemptAt, Expr::value(now))
        .col_expr(delivery::Column::LockedBy, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::LockedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
        .filter(delivery::Column::Id.eq(id))
        .filter(delivery::Column::EndpointId.eq(endpoint_id))
        .filter(delivery::Column::BusinessId.eq(business_id))
        .exec(conn)
        .await?;
    Ok(done.rows_affected > 0)
}

/// The business's events with `since <= created_at < until` and id after `after_id` that the
/// filter (`,kind,` form; '' = all) matches, oldest id first, at most `limit`.
pub async fn events_in_range(
    conn: &impl ConnectionTrait,
    business_id: i64,
    event_types: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    after_id: i64,
    limit: u64,
) -> StoreResult<Vec<(i64, String)>> {
    let mut query = event::Entity::find()
        .select_only()
        .column(event::Column::Id)
        .column(event::Column::Kind)
        .filter(event::Column::BusinessId.eq(business_id))
        .filter(event::Column::CreatedAt.gte(since))
        .filter(event::Column::CreatedAt.lt(until))
        .filter(event::Column::Id.gt(after_id))
        .order_by_asc(event::Column::Id)
        .limit(limit);
    let kinds: Vec<&str> = event_types.split(',').filter(|k| !k.is_empty()).collect();
    if !kinds.is_empty() {
        query = query.filter(event::Column::Kind.is_in(kinds));
    }
    Ok(query.into_tuple::<(i64, String)>().all(conn).await?)
}

/// Queues the events for the endpoint: a new delivery per event, or the existing one made due
/// now (the same `webhook-id`). One statement per event, inside the caller's transaction.
pub async fn queue_events(
    conn: &impl ConnectionTrait,
    business_id: i64,
    endpoint_id: i64,
    event_ids: &[i64],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    use sea_orm::sea_query::OnConflict;
    for &event_id in event_ids {
        delivery::Entity::insert(delivery::ActiveModel {
            endpoint_id: Set(endpoint_id),
            business_id: Set(business_id),
            event_id: Set(event_id),
            state: Set(WebhookDeliveryState::Pending),
            attempt_count: Set(0),
            next_attempt_at: Set(now),
            locked_by: Set(None),
            locked_until: Set(None),
            last_status_code: Set(None),
            last_error: Set(None),
            last_attempt_at: Set(None),
            delivered_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        })
        .on_conflict(
            OnConflict::columns([delivery::Column::EndpointId, delivery::Column::EventId])
                .update_columns([
                    delivery::Column::State,
                    delivery::Column::NextAttemptAt,
                    delivery::Column::LockedBy,
                    delivery::Column::LockedUntil,
                    delivery::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    }
    Ok(())
}

/// Whether any delivery may be due (a read, so that idle workers and every event's wake-up
/// cost no write: on SQLite a claim takes the one writer even when it finds nothing).
pub async fn any_due(conn: &impl ConnectionTrait, now: DateTime<Utc>) -> StoreResult<bool> {
    let backend = conn.get_database_backend();
    let sql = "SELECT 1 AS due FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
               WHERE e.enabled AND ((d.state = 'pending' AND d.next_attempt_at <= $1) \
                 OR (d.state = 'sending' AND d.locked_until < $1)) LIMIT 1"
        .to_owned();
    let row = conn.query_one_raw(dialect::statement(backend, &sql, [now.into()])).await?;
    Ok(row.is_some())
}

/// Claims up to `limit` due deliveries of enabled endpoints — pending ones whose time has come,
/// and ones whose worker vanished mid-send (its lease ran out: they are sent again, which
/// at-least-once delivery allows) — for `worker` until `lease_until`.
pub async fn claim(
    conn: &impl ConnectionTrait,
    worker: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<delivery::Model>> {
    let backend = conn.get_database_backend();
    let lock = dialect::skip_locked(backend, Some("d"));
    let sql = format!(
        "UPDATE webhook_deliveries SET state = 'sending', locked_by = $1, locked_until = $2, updated_at = $3 \
         WHERE id IN (SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
           WHERE e.enabled AND ((d.state = 'pending' AND d.next_attempt_at <= $3) \
             OR (d.state = 'sending' AND d.locked_until < $3)) \
           ORDER BY d.next_attempt_at LIMIT $4{lock}) \
         RETURNING *"
    );
    Ok(delivery::Model::find_by_statement(dialect::statement(
        backend,
        &sql,
        [worker.into(), lease_until.into(), now.into(), (limit as i64).into()],
    ))
    .all(conn)
    .await?)
}

/// What an attempt came to.
pub struct AttemptResult {
    pub state: WebhookDeliveryState,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub attempted_at: DateTime<Utc>,
}

/// Records an attempt if `worker` still holds the delivery (a replay meanwhile took it back);
/// answers whether it did.
pub async fn record_attempt(
    conn: &impl ConnectionTrait,
    id: i64,
    worker: &str,
    result: &AttemptResult,
) -> StoreResult<bool> {
    use sea_orm::sea_query::Expr;
    let delivered = (result.state == WebhookDeliveryState::Delivered).then_some(result.attempted_at);
    let done = delivery::Entity::update_many()
        .col_expr(delivery::Column::State, Expr::value(result.state))
        .col_expr(delivery::Column::AttemptCount, Expr::col(delivery::Column::AttemptCount).add(1))
        .col_expr(delivery::Column::NextAttemptAt, Expr::value(result.next_attempt_at))
        .col_expr(delivery::Column::LockedBy, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::LockedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(delivery::Column::LastStatusCode, Expr::value(result.status_code))
        .col_expr(delivery::Column::LastError, Expr::value(result.error.clone()))
        .col_expr(delivery::Column::LastAttemptAt, Expr::value(result.attempted_at))
        .col_expr(delivery::Column::DeliveredAt, Expr::value(delivered))
        .col_expr(delivery::Column::UpdatedAt, Expr::value(result.attempted_at))
        .filter(delivery::Column::Id.eq(id))
        .filter(delivery::Column::State.eq(WebhookDeliveryState::Sending))
        .filter(delivery::Column::LockedBy.eq(worker))
        .exec(conn)
        .await?;
    Ok(done.rows_affected > 0)
}

/// Hands claimed deliveries back untouched (a stopping worker).
pub async fn release(conn: &impl ConnectionTrait, ids: &[i64], worker: &str) -> StoreResult<()> {
    use sea_orm::sea_query::Expr;
    if ids.is_empty() {
        return Ok(());
    }
    delivery::Entity::update_many()
        .col_expr(delivery::Column::State, Expr::value(WebhookDeliveryState::Pending))
        .col_expr(delivery::Column::LockedBy, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::LockedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(delivery::Column::Id.is_in(ids.iter().copied()))
        .filter(delivery::Column::State.eq(WebhookDeliveryState::Sending))
        .filter(delivery::Column::LockedBy.eq(worker))
        .exec(conn)
        .await?;
    Ok(())
}

/// Counts a delivered delivery (the endpoint works: its failure count resets) or a failed one;
/// answers the endpoint after a failure. A delivery touches the endpoint's row only when the
/// count changes, so concurrent deliveries to one endpoint do not queue on its row lock.
pub async fn count_outcome(
    conn: &impl ConnectionTrait,
    endpoint_id: i64,
    delivered: bool,
) -> StoreResult<Option<endpoint::Model>> {
    use sea_orm::sea_query::Expr;
    if delivered {
        endpoint::Entity::update_many()
            .col_expr(endpoint::Column::ConsecutiveFailures, Expr::value(0))
            .filter(endpoint::Column::Id.eq(endpoint_id))
            .filter(endpoint::Column::ConsecutiveFailures.ne(0))
            .exec(conn)
            .await?;
        return Ok(None);
    }
    endpoint::Entity::update_many()
        .col_expr(endpoint::Column::ConsecutiveFailures, Expr::col(endpoint::Column::ConsecutiveFailures).add(1))
        .filter(endpoint::Column::Id.eq(endpoint_id))
        .exec(conn)
        .await?;
    Ok(endpoint::Entity::find_by_id(endpoint_id).one(conn).await?)
}

/// Disables the endpoint for persistent failure, if it is still enabled.
pub async fn disable(
    conn: &impl ConnectionTrait,
    endpoint_id: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    use sea_orm::sea_query::Expr;
    let done = endpoint::Entity::update_many()
        .col_expr(endpoint::Column::Enabled, Expr::value(false))
        .col_expr(endpoint::Column::DisabledReason, Expr::value(reason))
        .col_expr(endpoint::Column::DisabledAt, Expr::value(now))
        .col_expr(endpoint::Column::UpdatedAt, Expr::value(now))
        .filter(endpoint::Column::Id.eq(endpoint_id))
        .filter(endpoint::Column::Enabled.eq(true))
        .exec(conn)
        .await?;
    Ok(done.rows_affected > 0)
}

pub async fn event(conn: &impl ConnectionTrait, id: i64) -> StoreResult<Option<event::Model>> {
    Ok(event::Entity::find_by_id(id).one(conn).await?)
}

pub async fn endpoint_by_id(conn: &impl ConnectionTrait, id: i64) -> StoreResult<Option<endpoint::Model>> {
    Ok(endpoint::Entity::find_by_id(id).one(conn).await?)
}

/// Seals every endpoint's secrets again with the current key (`omega keys rotate-secrets`);
/// answers (resealed, total endpoints). A row changed meanwhile (a rotation) is left as it is:
/// it was sealed with the current key.
pub async fn reseal_secrets(conn: &impl ConnectionTrait, keys: &SecretKeys) -> StoreResult<(u64, u64)> {
    use sea_orm::sea_query::Expr;
    let current = crate::secrets::Sealed::With(keys.current_id());
    let rows = endpoint::Entity::find().all(conn).await?;
    let total = rows.len() as u64;
    let mut resealed = 0;
    for row in rows {
        let stale = |value: &str| crate::secrets::sealed_with(value) != current;
        if !stale(&row.secret) && !row.previous_secret.as_deref().is_some_and(stale) {
            continue;
        }
        let context = secret_context(row.id);
        let reseal = |value: &str| -> StoreResult<String> {
            let plain = keys.open(value, &context).map_err(sealing)?;
            keys.seal(&plain, &context).map_err(sealing)
        };
        let secret = reseal(&row.secret)?;
        let previous = row.previous_secret.as_deref().map(reseal).transpose()?;
        let mut update = endpoint::Entity::update_many()
            .col_expr(endpoint::Column::Secret, Expr::value(secret))
            .col_expr(endpoint::Column::PreviousSecret, Expr::value(previous))
            .filter(endpoint::Column::Id.eq(row.id))
            .filter(endpoint::Column::Secret.eq(row.secret.clone()));
        update = match &row.previous_secret {
            Some(previous) => update.filter(endpoint::Column::PreviousSecret.eq(previous.clone())),
            None => update.filter(endpoint::Column::PreviousSecret.is_null()),
        };
        resealed += update.exec(conn).await?.rows_affected;
    }
    Ok((resealed, total))
}

/// Deletes up to `limit` delivered or failed deliveries last touched before `before`; answers
/// how many.
pub async fn prune(conn: &impl ConnectionTrait, before: DateTime<Utc>, limit: u64) -> StoreResult<u64> {
    let backend = conn.get_database_backend();
    let sql = format!(
        "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries \
         WHERE state IN ('delivered', 'failed') AND updated_at < $1 LIMIT {limit})"
    );
    let done = conn.execute_raw(dialect::statement(backend, &sql, [before.into()])).await?;
    Ok(done.rows_affected())
}
