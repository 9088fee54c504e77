//! Prometheus metrics on a port of their own (`OMEGA_METRICS_ADDR`).
//!
//! Counters and histograms are recorded with the `metrics` facade wherever things happen (the
//! request layer, delivery, webhooks); without `OMEGA_METRICS_ADDR` no recorder is installed and
//! every call is a no-op. Gauges that describe the database (outbox depth and age, pool use) are
//! read at scrape time, so that they are never staler than the scrape itself.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::store::{Store, entity::enums::JobState};

pub const REQUESTS: &str = "omega_requests_total";
pub const REQUEST_DURATION: &str = "omega_request_duration_seconds";
pub const SENDS: &str = "omega_delivery_sends_total";
pub const WEBHOOK_REFUSALS: &str = "omega_webhook_verification_failures_total";
pub const WEBHOOK_ATTEMPTS: &str = "omega_webhook_attempts_total";
pub const WEBHOOK_ENDPOINTS_DISABLED: &str = "omega_webhook_endpoints_disabled_total";
pub const WEBHOOK_OUTBOX: &str = "omega_webhook_deliveries";
pub const OUTBOX_JOBS: &str = "omega_outbox_jobs";
pub const OUTBOX_OLDEST: &str = "omega_outbox_oldest_age_seconds";
pub const POOL_CONNECTIONS: &str = "omega_db_pool_connections";
pub const POOL_IDLE: &str = "omega_db_pool_idle_connections";
pub const POOL_MAX: &str = "omega_db_pool_max_connections";
pub const EVENT_SUBSCRIBERS: &str = "omega_event_subscribers";
/// API keys resolved, by where they were found (`source`: `cache` or `database`).
pub const KEY_LOOKUPS: &str = "omega_api_key_lookups_total";

/// Counts one live follower of the event log in `omega_event_subscribers` for as long as it is
/// held: whichever way a stream ends (the client leaves, the server stops, a task is aborted),
/// dropping the guard takes it off the gauge.
pub struct SubscriberGuard(&'static str);

impl SubscriberGuard {
    pub fn new(consumer: &'static str) -> Self {
        metrics::gauge!(EVENT_SUBSCRIBERS, "consumer" => consumer).increment(1.0);
        Self(consumer)
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        metrics::gauge!(EVENT_SUBSCRIBERS, "consumer" => self.0).decrement(1.0);
    }
}

/// Latency buckets from a cached read (sub-millisecond) to Omega's own 30 s deadline.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0];

/// Installs the process-wide recorder and serves `GET /metrics` on `addr`; answers the bound
/// address (port 0 picks one) and the serving task.
pub async fn serve(addr: SocketAddr, store: Store) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &LATENCY_BUCKETS)?
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe();
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the metrics address {addr}"))?;
    let local = listener.local_addr()?;
    let state = Arc::new((handle, store));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, state.clone()));
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok((local, task))
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS, "Calls answered, by gRPC method and status (REST through Envoy included).");
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Time from a call's arrival to its last byte.");
    describe_counter!(SENDS, "Provider calls made by delivery workers, by provider and outcome.");
    describe_counter!(WEBHOOK_REFUSALS, "Webhooks refused because their signature did not verify.");
    describe_counter!(WEBHOOK_ATTEMPTS, "Outbound webhook attempts, by outcome (delivered, retry, failed).");
    describe_counter!(WEBHOOK_ENDPOINTS_DISABLED, "Outbound webhook endpoints disabled for persistent failure.");
    describe_gauge!(WEBHOOK_OUTBOX, "Outbound webhook deliveries not yet finished, by state (read at scrape time).");
    describe_gauge!(OUTBOX_JOBS, "Outbox jobs not yet finished, by state (read at scrape time).");
    describe_gauge!(OUTBOX_OLDEST, Unit::Seconds, "Age of the oldest job waiting to be sent (0 when none).");
    describe_gauge!(POOL_CONNECTIONS, "Open database connections, by pool.");
    describe_gauge!(POOL_IDLE, "Idle database connections, by pool.");
    describe_gauge!(POOL_MAX, "The most connections a pool opens.");
    describe_gauge!(EVENT_SUBSCRIBERS, "Live followers of the event log, by consumer (stream, cable).");
}

async fn answer(
    req: Request<Incoming>,
    state: Arc<(PrometheusHandle, Store)>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if req.uri().path() != "/metrics" {
        return Ok(response(StatusCode::NOT_FOUND, "only /metrics is served here\n".into()));
    }
    let (handle, store) = &*state;
    // A database that does not answer leaves the last figures in place: the scrape itself
    // still succeeds, and the request metrics show the outage.
    if let Err(err) = tokio::time::timeout(Duration::from_secs(2), sample_database(store))
        .await
        .map_err(|_| "timed out".to_owned())
        .and_then(|r| r.map_err(|e| format!("{e:#}")))
    {
        tracing::warn!(error = %err, "metrics: could not read the outbox");
    }
    sample_pools(store);
    handle.run_upkeep();
    let mut ok = response(StatusCode::OK, handle.render());
    ok.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(ok)
}

async fn sample_database(store: &Store) -> anyhow::Result<()> {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let conn = store.connection();
    let backend = conn.get_database_backend();
    // The outbox states a job waits or works in (every state but `done` and `failed`).
    let states = JobState::OPEN.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
    // The states are this module's constants, never input; the (state, next_attempt_at) index
    // keeps this to the unfinished jobs however many are done.
    let sql = format!("SELECT state, COUNT(*) AS n FROM delivery_jobs WHERE state IN ({states}) GROUP BY state");
    let rows = conn.query_all_raw(Statement::from_string(backend, sql)).await?;
    let mut counts: std::collections::HashMap<String, i64> = Default::default();
    for row in rows {
        counts.insert(row.try_get("", "state")?, row.try_get("", "n")?);
    }
    for state in JobState::OPEN.map(|s| s.to_string()) {
        let n = counts.get(&state).copied().unwrap_or(0);
        metrics::gauge!(OUTBOX_JOBS, "state" => state).set(n as f64);
    }
    let oldest = match backend {
        DbBackend::Postgres => {
            "SELECT CAST(EXTRACT(EPOCH FROM (NOW() - MIN(created_at))) AS DOUBLE PRECISION) AS age \
             FROM delivery_jobs WHERE state IN ('pending', 'running')"
        }
        _ => {
            "SELECT (julianday('now') - julianday(MIN(created_at))) * 86400.0 AS age \
             FROM delivery_jobs WHERE state IN ('pending', 'running')"
        }
    };
    let age: Option<f64> = match conn.query_one_raw(Statement::from_string(backend, oldest)).await? {
        Some(row) => row.try_get("", "age")?,
        None => None,
    };
    metrics::gauge!(OUTBOX_OLDEST).set(age.unwrap_or(0.0).max(0.0));
    // Outbound webhooks waiting for an attempt (due or not) and in flight; the
    // (state, next_attempt_at) index keeps this to the unfinished ones.
    let sql =
        "SELECT state, COUNT(*) AS n FROM webhook_deliveries WHERE state IN ('pending', 'sending') GROUP BY state";
    let rows = conn.query_all_raw(Statement::from_string(backend, sql)).await?;
    let mut counts: std::collections::HashMap<String, i64> = Default::default();
    for row in rows {
        counts.insert(row.try_get("", "state")?, row.try_get("", "n")?);
    }
    for state in ["pending", "sending"] {
        metrics::gauge!(WEBHOOK_OUTBOX, "state" => state).set(counts.get(state).copied().unwrap_or(0) as f64);
    }
    Ok(())
}

fn sample_pools(store: &Store) {
    use sea_orm::DbBackend;
    let mut pools = vec![("read", store.connection())];
    if !std::ptr::eq(store.writer(), store.connection()) {
        pools.push(("write", store.writer()));
    } else {
        pools[0].0 = "shared";
    }
    if !std::ptr::eq(store.keyed(), store.connection()) {
        pools.push(("keyed", store.keyed()));
    }
    for (name, conn) in pools {
        let (size, idle, max) = match conn.get_database_backend() {
            DbBackend::Postgres => {
                let pool = conn.get_postgres_connection_pool();
                (pool.size(), pool.num_idle(), pool.options().get_max_connections())
            }
            DbBackend::Sqlite => {
                let pool = conn.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle(), pool.options().get_max_connections())
            }
            _ => continue,
        };
        metrics::gauge!(POOL_CONNECTIONS, "pool" => name).set(size as f64);
        metrics::gauge!(POOL_IDLE, "pool" => name).set(idle as f64);
        metrics::gauge!(POOL_MAX, "pool" => name).set(max as f64);
    }
}
