//! Outbound webhooks: workers claim due deliveries from the `webhook_deliveries` outbox and
//! POST each event, signed per the Standard Webhooks specification, to its endpoint.
//!
//! - At least once: a delivery is claimed (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the one
//!   writer on SQLite) with a lease; a worker that vanishes mid-send leaves it to be sent again
//!   when the lease runs out. Every attempt and replay carries the same `webhook-id`, so a
//!   receiver drops repeats.
//! - 2xx is delivered. 408, 429, 5xx, timeouts, connection failures and refused addresses are
//!   retried on the schedule (about a day by default, with jitter); any other answer (3xx, 4xx)
//!   fails the delivery at once. Redirects are never followed.
//! - An endpoint whose deliveries end failed `disable_after` times in a row is disabled, with
//!   its reason; enabling it again (an update) resets the count.
//! - No request goes to a private, loopback, link-local or otherwise non-public address unless
//!   allowed: names are resolved by a resolver that drops such addresses (so a name cannot
//!   rebind between a check and the connection), literal IPs are checked before sending.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::Utc;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    domain::{
        Omega,
        values::now,
        webhook_endpoints::{refused_address, webhook_id},
    },
    store::{
        Store,
        entity::enums::WebhookDeliveryState as State,
        entity::{conversation_event, webhook_delivery},
        webhook_endpoints::{self as db, AttemptResult},
    },
};

/// The default retry schedule: the delay before each retry (7 retries over about 28 hours).
pub const DEFAULT_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";

/// How outbound webhooks are sent; see the `OMEGA_WEBHOOKS_*` settings.
#[derive(Clone, Debug)]
pub struct WebhookDeliveryConfig {
    pub workers: usize,
    /// Deliveries a worker claims (and sends concurrently) per round.
    pub batch: u64,
    /// One request, all in.
    pub timeout: Duration,
    /// The delay before each retry; the delivery fails after the last.
    pub schedule: Vec<Duration>,
    /// Deliveries ending failed in a row that disable an endpoint.
    pub disable_after: u32,
    pub poll_interval: Duration,
    pub allow_private: bool,
    /// How long delivered and failed deliveries stay in the log.
    pub retention: Duration,
}

/// How often the log is pruned of deliveries past the retention (by one worker per process).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Rows pruned per statement, so that no statement holds the writer for long.
const PRUNE_BATCH: u64 = 5000;
/// How long a worker woken by a new event waits for further ones before it looks for due
/// deliveries.
const EVENT_WAKE_GATHERING: Duration = Duration::from_millis(25);

/// Parses a schedule such as `5s,5m,30m,2h` (units ms, s, m, h; a bare number is seconds).
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (number, unit) = match part.find(|c: char| c.is_ascii_alphabetic()) {
            Some(at) => part.split_at(at),
            None => (part, "s"),
        };
        let value: f64 = number.trim().parse().map_err(|_| format!("{part:?} is not a duration such as 5s or 2h"))?;
        let seconds = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(format!("{part:?}: the unit must be ms, s, m or h")),
        };
        if !(0.0..=7.0 * 86_400.0).contains(&seconds) {
            return Err(format!("{part:?} must be between 0 and 7 days"));
        }
        out.push(Duration::from_secs_f64(seconds));
    }
    if out.len() > 20 {
        return Err("at most 20 retries".into());
    }
    Ok(out)
}

/// Why outbound webhooks cannot sign or start: typed, for the callers outside this module.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A stored endpoint secret is not `whsec_` + base64 (Omega writes only that shape).
    #[error("the endpoint secret is not base64: {0}")]
    Secret(#[from] base64::DecodeError),
    /// The HTTP client could not be built (its TLS setup failed).
    #[error("the webhook HTTP client cannot be built: {0}")]
    Client(#[from] reqwest::Error),
}

/// The `webhook-signature` value: `v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}` for
/// each secret (`whsec_` + base64 key), space-separated.
pub fn sign(secrets: &[String], id: &str, timestamp: i64, body: &[u8]) -> Result<String, WebhookError> {
    let mut signatures = Vec::new();
    for secret in secrets {
        let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        signatures.push(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())));
    }
    Ok(signatures.join(" "))
}

/// The body: `{type, timestamp, data}` with the event as `data` (its own `data` as JSON).
pub fn payload(event: &conversation_event::Model) -> serde_json::Value {
    let data: serde_json::Value = serde_json::from_str(&event.data).unwrap_or(serde_json::Value::Null);
    let at = event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    serde_json::json!({
        "type": event.kind,
        "timestamp": at,
        "data": {
            "id": event.id,
            "business_id": event.business_id,
            "conversation_id": event.conversation_id,
            "kind": event.kind,
            "actor_staff_id": event.actor_staff_id,
            "data": data,
            "created_at": at,
        },
    })
}

/// Resolves names and keeps only the addresses a webhook may reach.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                found.iter().copied().filter(|a| allow_private || !refused_address(a.ip())).collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = if found.is_empty() {
                    format!("{host} has no address").into()
                } else {
                    RefusedAddress(host).into()
                };
                return Err(err);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[derive(Debug)]
struct RefusedAddress(String);

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} resolves only to private or other non-public addresses, which webhooks may not reach", self.0)
    }
}

impl std::error::Error for RefusedAddress {}

/// An attempt made, waiting to be recorded.
struct Attempt {
    delivery_id: i64,
    endpoint_id: i64,
    result: AttemptResult,
}

/// What one attempt came to.
enum Outcome {
    Delivered(u16),
    /// Worth trying again (408, 429, 5xx, no answer, refused address).
    Retry(Option<u16>, String),
    /// Not worth trying again (3xx, other 4xx).
    Failed(Option<u16>, String),
}

pub struct WebhookSender {
    omega: Omega,
    /// The event log and the delivery table, which the workers read and settle directly.
    store: Store,
    config: WebhookDeliveryConfig,
    client: reqwest::Client,
}

impl WebhookSender {
    pub fn spawn(
        omega: Omega,
        store: Store,
        config: WebhookDeliveryConfig,
        stop: watch::Receiver<bool>,
    ) -> Result<Vec<JoinHandle<()>>, WebhookError> {
        crate::providers::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("Omega-Webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver { allow_private: config.allow_private }))
            .build()?;
        let sender = Arc::new(WebhookSender { omega, store, config, client });
        let instance = uuid::Uuid::new_v4().simple().to_string();
        Ok((0..sender.config.workers)
            .map(|n| {
                let sender = sender.clone();
                let worker = format!("wh-{}-{n}", &instance[..12]);
                let stop = stop.clone();
                tokio::spawn(async move { sender.run(worker, n == 0, stop).await })
            })
            .collect())
    }

    async fn run(self: Arc<Self>, worker: String, prunes: bool, mut stop: watch::Receiver<bool>) {
        let (mut events, _) = self.store.event_wakeups().subscribe();
        let mut pruned_at: Option<tokio::time::Instant> = None;
        while !*stop.borrow() {
            if prunes && pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                pruned_at = Some(tokio::time::Instant::now());
                self.prune().await;
            }
            match self.round(&worker).await {
                Ok(0) => {
                    let replayed = self.omega.webhook_endpoints.wakeup.notified();
                    tokio::select! {
                        _ = replayed => {}
                        _ = events.recv() => {
                            // Every commit that appends an event wakes this worker, and most
                            // businesses have no endpoint: gather the wake-ups of a short while
                            // into one read, so that a busy inbox costs a few reads a second
                            // rather than one per commit.
                            tokio::time::sleep(EVENT_WAKE_GATHERING).await;
                            while events.try_recv().is_ok() {}
                        }
                        _ = tokio::time::sleep(self.config.poll_interval) => {}
                        _ = stop.changed() => {}
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(worker, error = format!("{err:#}"), "webhook delivery round failed");
                    tokio::time::sleep(self.config.poll_interval).await;
                }
            }
        }
    }

    /// Deletes finished deliveries older than the retention, a batch at a time. A range replay
    /// brings any of them back (the event log keeps every event).
    async fn prune(&self) {
        let Ok(retention) = chrono::Duration::from_std(self.config.retention) else { return };
        let before = now() - retention;
        loop {
            match db::prune(self.store.writer(), before, PRUNE_BATCH).await {
                Ok(n) if n == PRUNE_BATCH => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(deleted = n, "old webhook deliveries pruned from the log");
                    }
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), "pruning webhook deliveries failed");
                    return;
                }
            }
        }
    }

    /// Claims due deliveries, sends them concurrently, and records every result in one
    /// transaction (one commit per round, not per request); answers how many were claimed. A
    /// round whose results cannot be recorded leaves its deliveries to be sent again when their
    /// lease runs out (at least once).
    async fn round(self: &Arc<Self>, worker: &str) -> anyhow::Result<usize> {
        let at = now();
        let lease = chrono::Duration::from_std(self.config.timeout * 2 + Duration::from_secs(30))?;
        if !db::any_due(self.store.connection(), at).await? {
            return Ok(0);
        }
        let claimed = db::claim(self.store.writer(), worker, at, at + lease, self.config.batch).await?;
        let n = claimed.len();
        let mut sends = tokio::task::JoinSet::new();
        for delivery in claimed {
            let sender = self.clone();
            sends.spawn(async move {
                let id = delivery.id;
                let attempted = sender.attempt(delivery).await;
                if let Err(err) = &attempted {
                    tracing::warn!(delivery_id = id, error = format!("{err:#}"), "webhook attempt not made");
                }
                attempted.ok().flatten()
            });
        }
        let mut attempts = Vec::with_capacity(n);
        while let Some(joined) = sends.join_next().await {
            if let Ok(Some(attempt)) = joined {
                attempts.push(attempt);
            }
        }
        self.record(worker, attempts).await?;
        Ok(n)
    }

    /// Sends one delivery; answers what to record (None: its endpoint is gone).
    async fn attempt(&self, delivery: webhook_delivery::Model) -> anyhow::Result<Option<Attempt>> {
        let conn = self.store.connection();
        let Some(endpoint) = db::endpoint_by_id(conn, delivery.endpoint_id).await? else {
            return Ok(None); // deleted meanwhile: its deliveries went with it
        };
        let attempted_at = now();
        let outcome = match db::event(conn, delivery.event_id).await? {
            None => Outcome::Failed(None, "the event no longer exists".into()),
            Some(event) => {
                let secrets = db::signing_secrets(&self.omega.secrets, &endpoint, attempted_at)?;
                self.send(&endpoint.url, &webhook_id(endpoint.id, event.id), &secrets, &event).await
            }
        };
        let attempt = delivery.attempt_count + 1;
        let (state, status_code, error, next_attempt_at) = match outcome {
            Outcome::Delivered(code) => (State::Delivered, Some(i32::from(code)), None, attempted_at),
            Outcome::Retry(code, error) => match self.config.schedule.get((attempt - 1) as usize) {
                Some(delay) => {
                    let jittered = delay.mul_f64(rand::rng().random_range(0.9..1.1));
                    let next = attempted_at + chrono::Duration::from_std(jittered)?;
                    (State::Pending, code.map(i32::from), Some(error), next)
                }
                None => (State::Failed, code.map(i32::from), Some(error), attempted_at),
            },
            Outcome::Failed(code, error) => (State::Failed, code.map(i32::from), Some(error), attempted_at),
        };
        let outcome_label = match state {
            State::Delivered => "delivered",
            State::Pending => "retry",
            _ => "failed",
        };
        metrics::counter!(crate::metrics::WEBHOOK_ATTEMPTS, "outcome" => outcome_label).increment(1);
        tracing::info!(
            delivery_id = delivery.id,
            endpoint_id = endpoint.id,
            event_id = delivery.event_id,
            attempt,
            %state,
            status_code,
            error = error.as_deref().unwrap_or(""),
            "webhook attempt"
        );
        Ok(Some(Attempt {
            delivery_id: delivery.id,
            endpoint_id: endpoint.id,
            result: AttemptResult { state, status_code, error, next_attempt_at, attempted_at },
        }))
    }

    /// Records a round's attempts, counts finished deliveries against their endpoints, and
    /// disables the endpoints that failed `disable_after` times in a row.
    async fn record(&self, worker: &str, attempts: Vec<Attempt>) -> anyhow::Result<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        let txn = self.store.begin().await?;
        let mut disabled = Vec::new();
        for Attempt { delivery_id, endpoint_id, result } in attempts {
            // A replay took the delivery back meanwhile: it is due again, nothing to record.
            if !db::record_attempt(&txn, delivery_id, worker, &result).await? || result.state == State::Pending {
                continue;
            }
            let Some(endpoint) = db::count_outcome(&txn, endpoint_id, result.state == State::Delivered).await? else {
                continue;
            };
            if endpoint.enabled && endpoint.consecutive_failures >= self.config.disable_after as i32 {
                let reason = format!(
                    "{} deliveries in a row failed; the last: {}",
                    endpoint.consecutive_failures,
                    result.error.unwrap_or_default()
                );
                let reason: String = reason.chars().take(500).collect();
                if db::disable(&txn, endpoint.id, &reason, now()).await? {
                    disabled.push((endpoint, reason));
                }
            }
        }
        txn.commit().await?;
        for (endpoint, reason) in disabled {
            metrics::counter!(crate::metrics::WEBHOOK_ENDPOINTS_DISABLED).increment(1);
            tracing::warn!(
                business_id = endpoint.business_id,
                endpoint_id = endpoint.id,
                reason,
                "webhook endpoint disabled"
            );
        }
        Ok(())
    }

    async fn send(&self, url: &str, id: &str, secrets: &[String], event: &conversation_event::Model) -> Outcome {
        let parsed = match reqwest::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(err) => return Outcome::Failed(None, format!("the URL does not parse: {err}")),
        };
        if let Some(host) = parsed.host_str()
            && let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>()
            && !self.config.allow_private
            && refused_address(ip)
        {
            return Outcome::Retry(
                None,
                format!("{ip} is a private or other non-public address, which webhooks may not reach"),
            );
        }
        let body = match serde_json::to_vec(&payload(event)) {
            Ok(body) => body,
            Err(err) => return Outcome::Failed(None, format!("the event does not encode: {err}")),
        };
        let timestamp = Utc::now().timestamp();
        let signature = match sign(secrets, id, timestamp, &body) {
            Ok(signature) => signature,
            Err(err) => return Outcome::Failed(None, format!("signing failed: {err}")),
        };
        let sent = self
            .client
            .post(parsed)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                let code = status.as_u16();
                if status.is_success() {
                    Outcome::Delivered(code)
                } else if code == 408 || code == 429 || status.is_server_error() {
                    Outcome::Retry(Some(code), format!("HTTP {code}"))
                } else {
                    Outcome::Failed(Some(code), format!("HTTP {code}"))
                }
            }
            Err(err) => Outcome::Retry(None, describe(&err)),
        }
    }
}

/// A request error in a few words: timeout, connection refused, refused address…
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".into();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<RefusedAddress>() {
            return refused.to_string();
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return format!("connection failed: {io}");
        }
        source = cause.source();
    }
    let text = format!("{err:#}");
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_with_units() {
        let s = parse_schedule(DEFAULT_SCHEDULE).unwrap();
        assert_eq!(s[0], Duration::from_secs(5));
        assert_eq!(s[1], Duration::from_secs(300));
        assert_eq!(s.len(), 7);
        assert!(s.iter().sum::<Duration>() >= Duration::from_secs(86_400));
        assert_eq!(parse_schedule("100ms,1").unwrap(), vec![Duration::from_millis(100), Duration::from_secs(1)]);
        assert_eq!(parse_schedule("").unwrap(), Vec::<Duration>::new());
        assert!(parse_schedule("5x").is_err());
        assert!(parse_schedule("-1s").is_err());
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The specification's example: this secret, id, timestamp and body give this signature.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned();
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
