//! The delivery pipeline: workers claim jobs from the durable outbox and hand each message to
//! its provider exactly once.
//!
//! - Claims are single statements (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so any number of
//!   workers and replicas share the outbox and no job is taken twice.
//! - A job is `running` while claimed and `sending` from just before the provider is called.
//!   A worker that vanishes while `running` left nothing unknown: its job is claimed again once
//!   the lease expires. One that vanishes while `sending` may have sent the message: that job is
//!   settled as FAILED with an "outcome unknown" reason, never resent automatically.
//! - Only failures that certainly did not send (429, connection refused) are retried, with
//!   exponential backoff and jitter; ambiguous ones (timeout, 5xx) fail the message with a
//!   reason that says it may have arrived, leaving the decision to the retry endpoint.
//! - Each sender (number, messaging service, email address) is paced through a database row
//!   shared by all workers and replicas.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    domain::{
        Omega,
        messages::{StatusMove, move_status, status_changed_event},
        values::{DeliveryStatus, now},
    },
    providers::{
        Accepted, ProviderError,
        email::{EmailRequest, EmailSender, SendGridClient, SendGridConfig, SmtpClient, SmtpConfig, SmtpTls},
        twilio::{SmsRequest, TwilioClient, TwilioConfig},
    },
    store::{
        StoreError, conversations as conversations_db,
        entity::{delivery_job, message, message_attempt},
        messages as db,
    },
};

/// How the pipeline runs; see the `OMEGA_DELIVERY_*` settings.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    pub workers: usize,
    /// Jobs claimed per round trip.
    pub batch: u64,
    pub max_attempts: i32,
    /// How long a claim lasts before another worker may take the job.
    pub lease: Duration,
    pub poll_interval: Duration,
    /// First retry delay; doubled per attempt, with jitter, capped at 5 minutes.
    pub retry_base: Duration,
    /// Time between two SMS from one sender (None: unpaced).
    pub sms_sender_interval: Option<Duration>,
    pub email_sender_interval: Option<Duration>,
    pub twilio_base_url: String,
    pub sendgrid_base_url: String,
    pub provider_timeout: Duration,
    /// Omega's public base URL (e.g. `https://api.example.com`), for Twilio status callbacks.
    pub public_url: Option<String>,
    /// Twilio credentials used for businesses that have none of their own.
    pub platform_twilio: Option<TwilioCredentials>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct TwilioCredentials {
    pub account_sid: String,
    pub auth_token: String,
}

impl std::fmt::Debug for TwilioCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioCredentials").field("account_sid", &self.account_sid).finish_non_exhaustive()
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct SendGridCredentials {
    pub api_key: String,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct SmtpCredentials {
    pub host: String,
    pub port: u16,
    /// "none", "starttls" or "tls".
    pub tls: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// A business's provider clients, built from its stored credentials and rebuilt when they change.
struct Clients {
    twilio: Option<Arc<TwilioClient>>,
    email: Option<Arc<EmailSender>>,
    /// The credentials they were built from: (kind, last update) of each row.
    version: Vec<(String, DateTime<Utc>)>,
}

/// The workers' shared state.
pub struct Dispatcher {
    omega: Omega,
    config: DeliveryConfig,
    clients: tokio::sync::Mutex<HashMap<i64, Arc<Clients>>>,
}

/// An attempt made, waiting to be recorded.
struct Settled {
    job: delivery_job::Model,
    message: message::Model,
    attempt: i32,
    started: DateTime<Utc>,
    outcome: Outcome,
}

/// What happened to one attempt.
enum Outcome {
    Sent(Accepted, &'static str),
    Failed { code: String, message: String, retry_after: Option<Duration>, retryable: bool, ambiguous: bool },
}

impl Dispatcher {
    /// Starts `config.workers` workers; they stop, after finishing the message in hand, when
    /// `stop` turns true.
    pub fn spawn(omega: Omega, config: DeliveryConfig, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let dispatcher = Arc::new(Dispatcher { omega, config, clients: Default::default() });
        let instance = uuid::Uuid::new_v4().simple().to_string();
        (0..dispatcher.config.workers.max(1))
            .map(|n| {
                let dispatcher = dispatcher.clone();
                let worker = format!("{}-{n}", &instance[..12]);
                let stop = stop.clone();
                tokio::spawn(async move { dispatcher.run(worker, stop).await })
            })
            .collect()
    }

    async fn run(self: Arc<Self>, worker: String, mut stop: watch::Receiver<bool>) {
        let mut abandoned_checked: Option<std::time::Instant> = None;
        while !*stop.borrow() {
            // Abandoned sends are rare (a replica died mid-send): looked for once a poll
            // interval, not on every round.
            let check = abandoned_checked.is_none_or(|at| at.elapsed() >= self.config.poll_interval);
            if check {
                abandoned_checked = Some(std::time::Instant::now());
            }
            match self.round(&worker, check).await {
                Ok(0) => {
                    let wakeup = self.omega.delivery_wakeup.notified();
                    tokio::select! {
                        _ = wakeup => {}
                        _ = tokio::time::sleep(self.config.poll_interval) => {}
                        _ = stop.changed() => {}
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(worker, error = format!("{err:#}"), "delivery round failed");
                    tokio::time::sleep(self.config.poll_interval).await;
                }
            }
        }
    }

    /// Settles abandoned sends, then claims and delivers one batch; answers how many jobs it
    /// handled. A batch costs a fixed number of round trips (claim, load, mark as sending, one
    /// transaction recording every outcome) plus one provider call per message.
    async fn round(&self, worker: &str, settle_abandoned: bool) -> anyhow::Result<usize> {
        let conn = self.omega.store.connection();
        let now = now();
        if settle_abandoned {
            for job in db::claim_abandoned_sends(conn, worker, now, self.config.batch).await? {
                self.settle_abandoned(job).await?;
            }
        }
        let lease_until = now + chrono::Duration::from_std(self.config.lease)?;
        let jobs = db::claim_jobs(conn, worker, now, lease_until, self.config.batch).await?;
        let handled = jobs.len();
        if let Err(err) = self.deliver_batch(worker, jobs).await {
            // Claimed jobs stay claimed; their lease expiry hands them to another worker.
            tracing::warn!(worker, error = format!("{err:#}"), "delivery failed before the send");
        }
        Ok(handled)
    }

    async fn settle_abandoned(&self, job: delivery_job::Model) -> anyhow::Result<()> {
        let conn = self.omega.store.connection();
        let Some(message) = db::by_id(conn, job.message_id).await? else {
            db::finish_job(conn, job.id, "done", None, None, now()).await?;
            return Ok(());
        };
        tracing::warn!(
            message_id = message.public_id,
            "a worker stopped in the middle of a send; failing it as ambiguous"
        );
        let outcome = Outcome::Failed {
            code: "AMBIGUOUS".into(),
            message:
                "delivery was interrupted while the provider was being called; it may have been sent, so it was not \
                      resent — retry it deliberately if it did not arrive"
                    .into(),
            retry_after: None,
            retryable: false,
            ambiguous: true,
        };
        self.record(vec![Settled { attempt: job.attempts, started: now(), job, message, outcome }]).await
    }

    async fn deliver_batch(&self, worker: &str, jobs: Vec<delivery_job::Model>) -> anyhow::Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let conn = self.omega.store.connection();
        let ids: Vec<i64> = jobs.iter().map(|j| j.message_id).collect();
        let mut messages: HashMap<i64, message::Model> =
            db::by_ids(conn, &ids).await?.into_iter().map(|m| (m.id, m)).collect();
        // (job, message, paced slot)
        let mut ready = Vec::with_capacity(jobs.len());
        for job in jobs {
            let message = messages.remove(&job.message_id);
            let Some(message) = message.filter(|m| m.status == DeliveryStatus::Queued.as_str()) else {
                // Gone, cancelled, recorded as sent elsewhere, or already settled.
                db::finish_job(conn, job.id, "done", None, None, now()).await?;
                continue;
            };
            let interval = match message.channel.as_str() {
                "SMS" => self.config.sms_sender_interval,
                _ => self.config.email_sender_interval,
            };
            let slot = match interval {
                None => None,
                Some(interval) => {
                    let now = now();
                    let txn = self.omega.store.begin().await?;
                    let slot =
                        db::reserve_slot(&txn, &job.sender_key, chrono::Duration::from_std(interval)?, now).await?;
                    txn.commit().await.map_err(StoreError::from)?;
                    if (slot - now).to_std().unwrap_or_default() > Duration::from_secs(2) {
                        // Busy sender: come back for the slot instead of holding a worker.
                        db::finish_job(conn, job.id, "pending", Some(slot), None, now).await?;
                        continue;
                    }
                    Some(slot)
                }
            };
            ready.push((job, message, slot));
        }
        // Unpaced jobs turn `sending` together; a paced one only once its slot has come, so
        // that a worker stopped while waiting leaves nothing ambiguous.
        let started = now();
        let lease_until = started + chrono::Duration::from_std(self.config.lease)?;
        let unpaced: Vec<i64> = ready.iter().filter(|(_, _, slot)| slot.is_none()).map(|(j, _, _)| j.id).collect();
        let held = db::start_sending_many(conn, &unpaced, worker, lease_until, started).await?;
        let mut clients: HashMap<i64, Arc<Clients>> = HashMap::new();
        let mut settled = Vec::with_capacity(ready.len());
        for (job, message, slot) in ready {
            let started = match slot {
                None if !held.contains(&job.id) => continue, // The lease was lost; another worker has it.
                None => started,
                Some(slot) => {
                    tokio::time::sleep((slot - now()).to_std().unwrap_or_default()).await;
                    let started = now();
                    let lease_until = started + chrono::Duration::from_std(self.config.lease)?;
                    if !db::start_sending(conn, job.id, worker, lease_until, started).await? {
                        continue;
                    }
                    started
                }
            };
            let business = match clients.get(&message.business_id) {
                Some(c) => Ok(c.clone()),
                None => self.clients_of(message.business_id).await.inspect(|c| {
                    clients.insert(message.business_id, c.clone());
                }),
            };
            let outcome = self.send(business, &message).await;
            settled.push(Settled { attempt: job.attempts + 1, started, job, message, outcome });
        }
        self.record(settled).await
    }

    async fn send(&self, clients: anyhow::Result<Arc<Clients>>, message: &message::Model) -> Outcome {
        let clients = match clients {
            Ok(clients) => clients,
            Err(err) => {
                return Outcome::Failed {
                    code: "CONFIGURATION".into(),
                    message: format!("{err:#}"),
                    retry_after: None,
                    retryable: false,
                    ambiguous: false,
                };
            }
        };
        let to = message.to_address.clone().unwrap_or_default();
        let result = match message.channel.as_str() {
            "SMS" => match &clients.twilio {
                None => Err(ProviderError::Rejected {
                    code: "NO_CREDENTIALS".into(),
                    message: "the business has no Twilio credentials (PUT /businesses/{id}/providers/twilio)".into(),
                }),
                Some(twilio) => {
                    let from = message.from_address.clone().unwrap_or_default();
                    let (from, service) = if from.starts_with("MG") { (None, Some(from)) } else { (Some(from), None) };
                    let media_urls =
                        message.media.as_deref().and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default();
                    let request = SmsRequest {
                        to,
                        from,
                        messaging_service_sid: service,
                        body: message.content.clone(),
                        media_urls,
                        status_callback: self
                            .config
                            .public_url
                            .as_ref()
                            .map(|base| format!("{}/omega/twilio/sms/status", base.trim_end_matches('/'))),
                    };
                    twilio.send_sms(&request).await.map(|accepted| (accepted, "twilio"))
                }
            },
            _ => match &clients.email {
                None => Err(ProviderError::Rejected {
                    code: "NO_CREDENTIALS".into(),
                    message: "the business has no email provider (PUT /businesses/{id}/providers/sendgrid or /smtp)"
                        .into(),
                }),
                Some(sender) => {
                    let request = EmailRequest {
                        to,
                        from: message.from_address.clone().unwrap_or_default(),
                        from_name: None,
                        subject: message.subject.clone().unwrap_or_default(),
                        text: message.content.clone(),
                        html: message.html.clone(),
                        message_id: message.public_id.clone(),
                    };
                    let provider = match sender.as_ref() {
                        EmailSender::SendGrid(_) => "sendgrid",
                        EmailSender::Smtp(_) => "smtp",
                    };
                    sender.send_email(&request).await.map(|accepted| (accepted, provider))
                }
            },
        };
        match result {
            Ok((accepted, provider)) => Outcome::Sent(accepted, provider),
            Err(ProviderError::Retryable { reason, retry_after }) => Outcome::Failed {
                code: "RETRYABLE".into(),
                message: reason,
                retry_after,
                retryable: true,
                ambiguous: false,
            },
            Err(ProviderError::Rejected { code, message }) => {
                Outcome::Failed { code, message, retry_after: None, retryable: false, ambiguous: false }
            }
            Err(ProviderError::Ambiguous { reason }) => Outcome::Failed {
                code: "AMBIGUOUS".into(),
                message: format!(
                    "{reason}; the provider may have received it, so it was not resent — retry it deliberately if it did not arrive"
                ),
                retry_after: None,
                retryable: false,
                ambiguous: true,
            },
        }
    }

    /// Writes a batch's outcomes in one transaction. Should it fail, each outcome is written on
    /// its own, so that one bad row does not leave the others' messages unaccounted for.
    async fn record(&self, settled: Vec<Settled>) -> anyhow::Result<()> {
        if settled.is_empty() {
            return Ok(());
        }
        let txn = self.omega.store.begin().await?;
        // Accepted sends (nearly all) are recorded together; failures one by one.
        let (accepted, others): (Vec<&Settled>, Vec<&Settled>) =
            settled.iter().partition(|item| matches!(item.outcome, Outcome::Sent(..)));
        let mut result = self.record_accepted(&txn, &accepted).await;
        for item in others {
            if result.is_err() {
                break;
            }
            result = self.record_one(&txn, item).await;
        }
        let result = match result {
            Ok(()) => txn.commit().await.map_err(|e| anyhow::Error::from(StoreError::from(e))),
            Err(err) => {
                let _ = txn.rollback().await;
                Err(err)
            }
        };
        match result {
            Ok(()) => {}
            Err(err) if settled.len() > 1 => {
                tracing::warn!(error = format!("{err:#}"), "recording a batch failed; recording one by one");
                for item in &settled {
                    let txn = self.omega.store.begin().await?;
                    self.record_one(&txn, item).await?;
                    txn.commit().await.map_err(StoreError::from)?;
                }
            }
            Err(err) => return Err(err),
        }
        Ok(())
    }

    /// Accepted sends: attempt rows, QUEUED → SENT, jobs done and the status events, in a few
    /// statements for the whole batch.
    async fn record_accepted(&self, txn: &sea_orm::DatabaseTransaction, items: &[&Settled]) -> anyhow::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let now = now();
        let accepted: Vec<db::Accepted> = items
            .iter()
            .filter_map(|item| match &item.outcome {
                Outcome::Sent(accepted, provider) => Some(db::Accepted {
                    job_id: item.job.id,
                    message_id: item.message.id,
                    attempt: item.attempt,
                    started_at: item.started,
                    provider: (*provider).to_owned(),
                    provider_message_id: accepted.provider_message_id.clone(),
                }),
                Outcome::Failed { .. } => None,
            })
            .collect();
        let moved = db::settle_accepted(txn, &accepted, now).await?;
        let events = items
            .iter()
            .filter(|item| moved.contains(&item.message.id))
            .map(|item| {
                status_changed_event(&item.message, DeliveryStatus::Queued.as_str(), DeliveryStatus::Sent, None)
            })
            .collect();
        conversations_db::append_events(txn, events, now).await?;
        for item in items {
            tracing::debug!(
                message_id = item.message.public_id,
                attempt = item.attempt,
                "message handed to its provider"
            );
        }
        Ok(())
    }

    /// An attempt's outcome: the attempt row, the message's status, the job's next state and an
    /// event.
    async fn record_one(&self, txn: &sea_orm::DatabaseTransaction, item: &Settled) -> anyhow::Result<()> {
        let Settled { job, message, attempt, started, outcome } = item;
        let (attempt, started) = (*attempt, *started);
        let now = now();
        let (outcome_name, provider_id, code, text) = match &outcome {
            Outcome::Sent(accepted, _) => ("accepted", Some(accepted.provider_message_id.clone()), None, None),
            Outcome::Failed { code, message, retryable, ambiguous, .. } => (
                if *ambiguous {
                    "ambiguous"
                } else if *retryable {
                    "retryable"
                } else {
                    "rejected"
                },
                None,
                Some(code.clone()),
                Some(message.clone()),
            ),
        };
        db::record_attempt(
            txn,
            message_attempt::ActiveModel {
                message_id: sea_orm::Set(message.id),
                attempt: sea_orm::Set(attempt),
                started_at: sea_orm::Set(started),
                finished_at: sea_orm::Set(Some(now)),
                outcome: sea_orm::Set(outcome_name.into()),
                provider_message_id: sea_orm::Set(provider_id),
                error_code: sea_orm::Set(code.clone()),
                error_message: sea_orm::Set(text.clone()),
                ..Default::default()
            },
        )
        .await?;
        let (status, job_state, next_attempt) = match &outcome {
            Outcome::Sent(..) => (Some(DeliveryStatus::Sent), "done", None),
            Outcome::Failed { retryable: true, retry_after, .. } if attempt < self.config.max_attempts => {
                (None, "pending", Some(now + chrono::Duration::from_std(self.backoff(attempt, *retry_after))?))
            }
            Outcome::Failed { .. } => (Some(DeliveryStatus::Failed), "failed", None),
        };
        if let Some(status) = status {
            let failed = status == DeliveryStatus::Failed;
            let provider = match &outcome {
                Outcome::Sent(accepted, provider) => {
                    Some(((*provider).to_owned(), accepted.provider_message_id.clone()))
                }
                Outcome::Failed { .. } => None,
            };
            let change = StatusMove {
                status,
                error_code: if failed { code.clone() } else { None },
                error_message: if failed { text.clone() } else { None },
                provider,
            };
            // Conditional on QUEUED: a status callback or a recording may have moved it on.
            move_status(txn, message, DeliveryStatus::Queued.as_str(), change, now).await?;
        }
        let last_error = text.map(|t| format!("{}: {t}", code.unwrap_or_default()));
        db::finish_job(txn, job.id, job_state, next_attempt, last_error, now).await?;
        match &outcome {
            Outcome::Sent(..) => {
                tracing::debug!(message_id = message.public_id, attempt, "message handed to its provider")
            }
            Outcome::Failed { code, .. } => {
                tracing::info!(
                    message_id = message.public_id,
                    attempt,
                    code,
                    state = job_state,
                    "delivery attempt failed"
                )
            }
        }
        Ok(())
    }

    /// base × 2^(attempt−1), ±25 % jitter, at most 5 minutes; never sooner than the provider asked.
    fn backoff(&self, attempt: i32, retry_after: Option<Duration>) -> Duration {
        let exponential = self.config.retry_base.saturating_mul(1 << (attempt - 1).clamp(0, 16));
        let jitter = rand::rng().random_range(0.75..1.25);
        let delay = exponential.mul_f64(jitter).min(Duration::from_secs(300));
        retry_after.map_or(delay, |after| delay.max(after))
    }

    async fn clients_of(&self, business_id: i64) -> anyhow::Result<Arc<Clients>> {
        // Reading the rows each time (one indexed query) lets a credential change made through
        // any replica take effect on the next send.
        let rows = db::credentials(self.omega.store.connection(), &self.omega.secrets, business_id).await?;
        let version: Vec<(String, DateTime<Utc>)> = rows.iter().map(|r| (r.kind.clone(), r.updated_at)).collect();
        let mut cache = self.clients.lock().await;
        if let Some(clients) = cache.get(&business_id)
            && clients.version == version
        {
            return Ok(clients.clone());
        }
        let timeout = self.config.provider_timeout;
        let mut twilio = self.config.platform_twilio.clone();
        let mut email = None;
        // Rows come oldest first: the email provider configured last wins.
        for row in rows {
            match row.kind.as_str() {
                "twilio" => twilio = Some(serde_json::from_str(&row.config)?),
                "sendgrid" => {
                    let creds: SendGridCredentials = serde_json::from_str(&row.config)?;
                    let config = SendGridConfig {
                        base_url: self.config.sendgrid_base_url.clone(),
                        api_key: creds.api_key,
                        timeout,
                    };
                    email = Some(Arc::new(EmailSender::SendGrid(SendGridClient::new(config)?)));
                }
                "smtp" => {
                    let creds: SmtpCredentials = serde_json::from_str(&row.config)?;
                    let tls = match creds.tls.as_str() {
                        "none" => SmtpTls::None,
                        "tls" => SmtpTls::Tls,
                        _ => SmtpTls::StartTls,
                    };
                    let config = SmtpConfig {
                        host: creds.host,
                        port: creds.port,
                        tls,
                        username: creds.username,
                        password: creds.password,
                        timeout,
                    };
                    email = Some(Arc::new(EmailSender::Smtp(SmtpClient::new(config)?)));
                }
                _ => {}
            }
        }
        let twilio = match twilio {
            Some(creds) => Some(Arc::new(TwilioClient::new(TwilioConfig {
                base_url: self.config.twilio_base_url.clone(),
                account_sid: creds.account_sid,
                auth_token: creds.auth_token,
                timeout,
            })?)),
            None => None,
        };
        let clients = Arc::new(Clients { twilio, email, version });
        cache.insert(business_id, clients.clone());
        Ok(clients)
    }
}
