//! The delivery pipeline: workers claim jobs from the durable outbox and hand each message to
//! its provider exactly once.
//!
//! - Claims are single statements (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so any number of
//!   workers and replicas share the outbox and no job is taken twice.
//! - A job is `running` while claimed and `sending` only while its own provider call is in
//!   flight: a worker marks a handful (at most `concurrency`) right before calling the provider
//!   for them, and records each result as soon as it returns. A worker renews its claim while
//!   it works, so no one settles a send that is still live.
//! - A worker that vanishes while `running` left nothing unknown: its job is claimed again once
//!   the lease expires. One that vanishes while `sending` may have sent the message: that job
//!   is failed as AMBIGUOUS and never resent automatically; a late answer that says the
//!   provider accepted it still wins.
//! - An AMBIGUOUS SMS is reconciled: after a while it is looked up in Twilio's message list and
//!   settled SENT (with the SID found) or FAILED as certainly unsent (`NOT_SENT`, which a
//!   deliberate retry may resend).
//! - Only failures that certainly did not send (429, connection refused) are retried, with
//!   exponential backoff and jitter.
//! - A worker that cannot record a result (the database is gone) starts no further sends; it
//!   keeps the results it holds, logged with their provider ids, and records them once it can.
//!   A stopping worker finishes the calls in flight and hands the untouched rest back.
//! - Each sender (number, messaging service, email address) is paced through a database row
//!   shared by all workers and replicas.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use rand::Rng;

use tokio::{
    sync::watch,
    task::{JoinHandle, JoinSet},
};

mod journal;
pub mod webhooks;

use journal::Journal;

use crate::{
    domain::{
        Omega,
        messages::{StatusMove, move_status, status_changed_event},
        values::{DeliveryStatus, now},
    },
    providers::{
        Accepted, ProviderError,
        email::{
            EmailAttachment, EmailRequest, EmailSender, SendGridClient, SendGridConfig, SmtpClient, SmtpConfig, SmtpTls,
        },
        twilio::{Lookup, SmsRequest, TwilioClient, TwilioConfig},
    },
    store::{
        Store, StoreError, attempts,
        entity::{
            delivery_job,
            enums::{AttemptOutcome, Channel, JobState},
            message, message_attempt,
        },
        events, messages as db, outbox, pacing,
        provider_credentials::{self, SendGridCredentials, SmtpCredentials, TwilioCredentials},
    },
};

/// How the pipeline runs; see the `OMEGA_DELIVERY_*` settings.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    pub workers: usize,
    /// Jobs claimed per round trip.
    pub batch: u64,
    /// Provider calls a worker has in flight at once.
    pub concurrency: usize,
    /// How long after an ambiguous SMS it is looked up at Twilio.
    pub reconcile_after: Duration,
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
    /// The domain whose mail reaches Omega's inbound email (`OMEGA_EMAIL_INBOUND_DOMAIN`): emails
    /// sent get `Reply-To: reply+{message id}@{domain}`, which threads a reply.
    pub email_inbound_domain: Option<String>,
}

impl DeliveryConfig {
    /// PostgreSQL transactions the journal keeps in flight at once. PostgreSQL flushes the WAL
    /// of concurrent commits together, so more of them commit more groups per flush; each holds
    /// a pool connection while it runs.
    fn committers(&self) -> usize {
        self.workers.clamp(1, 4)
    }
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
    /// The outbox's tables, which the workers claim, settle and release rows of directly.
    store: Store,
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

/// Writes of results on their way through the journal.
type Recordings = JoinSet<Result<(), journal::Unrecorded>>;

/// Claimed jobs waiting for their call to start, with a paced job's reserved slot.
type Queue = VecDeque<(delivery_job::Model, message::Model, Option<DateTime<Utc>>)>;

/// Jobs whose provider calls start together.
type Wave = Vec<(delivery_job::Model, message::Model)>;

/// The jobs of a batch a worker still holds, and when it last renewed its claim on them.
struct Claim {
    held: HashSet<i64>,
    renewed: Instant,
}

impl Dispatcher {
    /// Starts `config.workers` workers and their journal; they stop, after finishing the calls
    /// in flight and recording them, when `stop` turns true.
    pub fn spawn(
        omega: Omega,
        store: Store,
        config: DeliveryConfig,
        stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let dispatcher = Arc::new(Dispatcher { omega, store, config, clients: Default::default() });
        let (journal, committers) = Journal::start(dispatcher.clone());
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let mut handles: Vec<JoinHandle<()>> = (0..dispatcher.config.workers.max(1))
            .map(|n| {
                let dispatcher = dispatcher.clone();
                let worker = format!("{}-{n}", &instance[..12]);
                let stop = stop.clone();
                let journal = journal.clone();
                tokio::spawn(async move { dispatcher.run(worker, journal, stop).await })
            })
            .collect();
        // The workers hold the only handles: the journal ends after their last write.
        drop(journal);
        handles.extend(committers);
        handles
    }

    async fn run(self: Arc<Self>, worker: String, journal: Journal, mut stop: watch::Receiver<bool>) {
        let mut housekeeping: Option<Instant> = None;
        // Results on their way to the database; a batch does not wait for its last ones before
        // the next is claimed.
        let mut recordings: Recordings = JoinSet::new();
        while !*stop.borrow() {
            // Abandoned sends and reconciliations are rare: looked for once a poll interval,
            // not on every round.
            let check = housekeeping.is_none_or(|at| at.elapsed() >= self.config.poll_interval);
            if check {
                housekeeping = Some(Instant::now());
            }
            match self.round(&worker, &journal, check, &stop, &mut recordings).await {
                Ok(0) => {
                    if !recordings.is_empty() {
                        if let Err(err) = self.settle_recordings(&worker, &mut recordings, true).await {
                            tracing::warn!(worker, error = format!("{err:#}"), "delivery round failed");
                        }
                        continue;
                    }
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
        // Stopping: every result still on its way is recorded before the worker ends.
        if let Err(err) = self.settle_recordings(&worker, &mut recordings, true).await {
            tracing::warn!(worker, error = format!("{err:#}"), "delivery round failed");
        }
    }

    /// Takes the recordings that have finished (all of them, waiting, with `wait`). A result
    /// the journal could not record is kept until the database takes it, and the worker then
    /// answers an error: no send started after a failed recording.
    async fn settle_recordings(&self, worker: &str, recordings: &mut Recordings, wait: bool) -> anyhow::Result<()> {
        let mut unrecorded = Vec::new();
        let mut failed = false;
        loop {
            let done = if wait { recordings.join_next().await } else { recordings.try_join_next() };
            match done {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err((err, kept)))) => {
                    failed = true;
                    self.log_unrecorded(worker, &err, &kept);
                    unrecorded.extend(kept);
                }
                Some(Err(err)) => {
                    failed = true;
                    tracing::error!(worker, error = %err, "recording results failed");
                }
            }
        }
        if !unrecorded.is_empty() {
            self.record_when_possible(worker, unrecorded).await;
        }
        if failed { Err(anyhow::anyhow!("delivery stopped: results could not be recorded")) } else { Ok(()) }
    }

    /// Settles abandoned sends and due reconciliations, then claims and delivers one batch;
    /// answers how many jobs it handled.
    async fn round(
        self: &Arc<Self>,
        worker: &str,
        journal: &Journal,
        housekeeping: bool,
        stop: &watch::Receiver<bool>,
        recordings: &mut Recordings,
    ) -> anyhow::Result<usize> {
        self.settle_recordings(worker, recordings, false).await?;
        let now = now();
        let lease_until = now + chrono::Duration::from_std(self.config.lease)?;
        if housekeeping {
            for job in outbox::claim_abandoned_sends(self.store.writer(), worker, now, self.config.batch).await? {
                self.settle_abandoned(job).await?;
            }
            for job in
                outbox::claim_reconciliations(self.store.writer(), worker, now, lease_until, self.config.batch).await?
            {
                self.reconcile(job).await?;
            }
        }
        let jobs = outbox::claim_jobs(self.store.writer(), worker, now, lease_until, self.config.batch).await?;
        let handled = jobs.len();
        self.deliver_batch(worker, journal, jobs, stop, recordings).await?;
        Ok(handled)
    }

    async fn settle_abandoned(&self, job: delivery_job::Model) -> anyhow::Result<()> {
        let conn = self.store.writer();
        let Some(message) = db::by_id(conn, job.message_id).await? else {
            outbox::finish_job(conn, job.id, JobState::Done, None, None, now()).await?;
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
                      resent"
                    .into(),
            retry_after: None,
            retryable: false,
            ambiguous: true,
        };
        self.record(vec![Settled { attempt: job.attempts, started: now(), job, message, outcome }])
            .await
            .map_err(|(err, _)| err)
    }

    /// Renews the claim on the batch's jobs once a third of the lease has gone by; answers
    /// false when that failed (the database is unreachable): then no further send may start.
    async fn renew_if_due(&self, worker: &str, claim: &mut Claim) -> bool {
        if claim.renewed.elapsed() < self.config.lease / 3 || claim.held.is_empty() {
            return true;
        }
        let ids: Vec<i64> = claim.held.iter().copied().collect();
        let lease_until = now() + chrono::Duration::from_std(self.config.lease).unwrap_or_default();
        match outbox::renew_leases(self.store.writer(), &ids, worker, lease_until).await {
            Ok(kept) => {
                let kept: HashSet<i64> = kept.into_iter().collect();
                claim.held.retain(|id| kept.contains(id));
                claim.renewed = Instant::now();
                true
            }
            Err(err) => {
                tracing::warn!(worker, error = format!("{:#}", anyhow::Error::from(err)), "renewing a claim failed");
                false
            }
        }
    }

    /// Sends a claimed batch through a window of `concurrency` provider calls: a job is marked
    /// `sending` just before its call starts and its result goes to the journal as soon as the
    /// call returns, and the next job starts in its place. A paced job starts once its slot
    /// has come. Stopping, or a result that cannot be recorded, starts nothing more: the calls
    /// in flight run to their end and the untouched rest goes back to the outbox.
    async fn deliver_batch(
        self: &Arc<Self>,
        worker: &str,
        journal: &Journal,
        jobs: Vec<delivery_job::Model>,
        stop: &watch::Receiver<bool>,
        recordings: &mut Recordings,
    ) -> anyhow::Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut claim = Claim { held: HashSet::new(), renewed: Instant::now() };
        let mut queue: Queue = VecDeque::with_capacity(jobs.len());
        self.admit(jobs, &mut claim, &mut queue).await?;
        let began = Instant::now();
        // Set once a claim for more found nothing due.
        let mut outbox_empty = false;
        let window = self.config.concurrency.max(1);
        let mut clients: HashMap<i64, Arc<Clients>> = HashMap::new();
        let mut calls: JoinSet<Settled> = JoinSet::new();
        let mut unrecorded: Vec<Settled> = Vec::new();
        let mut healthy = true;
        // Results returned and not yet handed to the journal: they go with the next wave's mark.
        let mut returned: Vec<Settled> = Vec::new();
        loop {
            let may_start = healthy && !*stop.borrow() && calls.len() < window;
            if may_start {
                let mut wave = Vec::new();
                while calls.len() + wave.len() < window {
                    match queue.front() {
                        Some((_, _, None)) => {}
                        Some((_, _, Some(slot))) if wave.is_empty() && *slot <= now() => {}
                        _ => break,
                    }
                    let (job, message, slot) = queue.pop_front().expect("a front");
                    wave.push((job, message));
                    if slot.is_some() {
                        break;
                    }
                }
                if wave.is_empty()
                    && queue.is_empty()
                    && !calls.is_empty()
                    && !outbox_empty
                    && began.elapsed() < self.config.poll_interval
                {
                    // Keep the window full: claim the next jobs while the last calls are still
                    // running instead of letting them drain first. A worker returns to its
                    // housekeeping once a poll interval has gone by.
                    // A failure here is the database's: the calls in flight run to their end
                    // and nothing more starts.
                    let lease_until = now() + chrono::Duration::from_std(self.config.lease).unwrap_or_default();
                    let admitted =
                        match outbox::claim_jobs(self.store.writer(), worker, now(), lease_until, self.config.batch)
                            .await
                        {
                            Ok(more) if more.is_empty() => Ok(false),
                            Ok(more) => self.admit(more, &mut claim, &mut queue).await.map(|()| true),
                            Err(err) => Err(anyhow::Error::from(err)),
                        };
                    match admitted {
                        Ok(true) => continue,
                        Ok(false) => outbox_empty = true,
                        Err(err) => {
                            tracing::warn!(worker, error = format!("{err:#}"), "claiming more jobs failed");
                            healthy = false;
                            continue;
                        }
                    }
                }
                if !wave.is_empty() {
                    let results = std::mem::take(&mut returned);
                    healthy = self.renew_if_due(worker, &mut claim).await
                        && self
                            .start_wave(
                                worker,
                                journal,
                                wave,
                                results,
                                &mut claim,
                                &mut clients,
                                &mut calls,
                                recordings,
                            )
                            .await;
                    continue;
                }
            }
            if !returned.is_empty() {
                recordings.spawn(journal.record(std::mem::take(&mut returned)));
            }
            // Only a paced job whose slot is still to come can be waiting with room to start it.
            let next_slot = queue.front().and_then(|(_, _, slot)| *slot).filter(|_| may_start);
            if calls.is_empty() && next_slot.is_none() {
                break;
            }
            let renew_in = (self.config.lease / 3).saturating_sub(claim.renewed.elapsed());
            let slot_in = next_slot
                .map_or(Duration::MAX, |slot| (slot - now()).to_std().unwrap_or_default())
                .min(Duration::from_millis(200));
            tokio::select! {
                Some(done) = calls.join_next(), if !calls.is_empty() => {
                    // Results that return together are recorded together.
                    let mut group: Vec<Settled> = Vec::new();
                    for done in std::iter::once(Some(done)).chain(std::iter::from_fn(|| calls.try_join_next().map(Some))) {
                        match done {
                            Some(Ok(settled)) => group.push(settled),
                            Some(Err(err)) => tracing::error!(worker, error = %err, "a provider call's task failed"),
                            None => break,
                        }
                    }
                    for settled in &group {
                        claim.held.remove(&settled.job.id);
                    }
                    if healthy {
                        returned.extend(group);
                    } else {
                        self.log_unrecorded(worker, &anyhow::anyhow!("the database is unreachable"), &group);
                        unrecorded.extend(group);
                    }
                }
                Some(recorded) = recordings.join_next(), if !recordings.is_empty() => {
                    match recorded {
                        Ok(Ok(())) => {}
                        Ok(Err((err, kept))) => {
                            healthy = false;
                            self.log_unrecorded(worker, &err, &kept);
                            unrecorded.extend(kept);
                        }
                        Err(err) => {
                            healthy = false;
                            tracing::error!(worker, error = %err, "recording results failed");
                        }
                    }
                }
                _ = tokio::time::sleep(slot_in), if next_slot.is_some() => {}
                _ = tokio::time::sleep(renew_in), if !claim.held.is_empty() => {
                    if !self.renew_if_due(worker, &mut claim).await {
                        // Calls in flight run to their end; nothing new starts.
                        healthy = false;
                        claim.renewed = Instant::now();
                    }
                }
            }
        }
        // The jobs never started go back to the outbox at once (when the database lets us;
        // otherwise their lease expiry hands them on: they were never sent).
        let untouched: Vec<i64> = claim.held.iter().copied().collect();
        if let Err(err) = outbox::release_jobs(self.store.writer(), &untouched, worker, now()).await {
            tracing::warn!(worker, error = format!("{:#}", anyhow::Error::from(err)), "handing jobs back failed");
        }
        if !unrecorded.is_empty() {
            self.record_when_possible(worker, unrecorded).await;
        }
        if healthy { Ok(()) } else { Err(anyhow::anyhow!("delivery stopped: results could not be recorded")) }
    }

    /// Takes claimed jobs into a worker's queue, in claim order (so that a paced job goes out
    /// near the slot it reserved): jobs whose message no longer waits are finished, and a paced
    /// job reserves its sender's next slot (or, if that is far off, goes back to wait for it).
    async fn admit(&self, jobs: Vec<delivery_job::Model>, claim: &mut Claim, queue: &mut Queue) -> anyhow::Result<()> {
        claim.held.extend(jobs.iter().map(|j| j.id));
        let ids: Vec<i64> = jobs.iter().map(|j| j.message_id).collect();
        let mut messages: HashMap<i64, message::Model> =
            db::by_ids(self.store.connection(), &ids).await?.into_iter().map(|m| (m.id, m)).collect();
        for job in jobs {
            let message = messages.remove(&job.message_id);
            let Some(message) = message.filter(|m| m.status == DeliveryStatus::Queued) else {
                // Gone, cancelled, recorded as sent elsewhere, or already settled.
                outbox::finish_job(self.store.writer(), job.id, JobState::Done, None, None, now()).await?;
                claim.held.remove(&job.id);
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
                    let txn = self.store.begin().await?;
                    let slot =
                        pacing::reserve_slot(&txn, &job.sender_key, chrono::Duration::from_std(interval)?, now).await?;
                    txn.commit().await.map_err(StoreError::from)?;
                    if (slot - now).to_std().unwrap_or_default() > Duration::from_secs(2) {
                        // Busy sender: come back for the slot instead of holding a worker.
                        outbox::finish_job(self.store.writer(), job.id, JobState::Pending, Some(slot), None, now)
                            .await?;
                        claim.held.remove(&job.id);
                        continue;
                    }
                    Some(slot)
                }
            };
            queue.push_back((job, message, slot));
        }
        Ok(())
    }

    /// Records the results that returned, marks a wave as sending (one transaction for both)
    /// and starts its provider calls. Answers false when the marking failed (then none of them
    /// starts).
    #[allow(clippy::too_many_arguments)]
    async fn start_wave(
        self: &Arc<Self>,
        worker: &str,
        journal: &Journal,
        wave: Wave,
        results: Vec<Settled>,
        claim: &mut Claim,
        clients: &mut HashMap<i64, Arc<Clients>>,
        calls: &mut JoinSet<Settled>,
        recordings: &mut Recordings,
    ) -> bool {
        let mut prepared = Vec::with_capacity(wave.len());
        for (job, message) in wave {
            let business = match clients.get(&message.business_id) {
                Some(c) => Ok(c.clone()),
                None => self.clients_of(message.business_id).await.inspect(|c| {
                    clients.insert(message.business_id, c.clone());
                }),
            };
            prepared.push((job, message, business));
        }
        let started = now();
        let lease_until = started + chrono::Duration::from_std(self.config.lease).unwrap_or_default();
        let ids: Vec<i64> = prepared.iter().map(|(job, _, _)| job.id).collect();
        let (recorded, marked) = journal.record_and_mark(results, ids, worker, lease_until, started);
        recordings.spawn(recorded);
        let sending: HashSet<i64> = match marked.await {
            Ok(ids) => ids.into_iter().collect(),
            Err(err) => {
                tracing::warn!(worker, error = format!("{err:#}"), "marking sends failed");
                return false;
            }
        };
        for (job, message, business) in prepared {
            if !sending.contains(&job.id) {
                // The claim was lost; another worker has the job.
                claim.held.remove(&job.id);
                continue;
            }
            let this = self.clone();
            calls.spawn(async move {
                let outcome = this.send(business, &message).await;
                Settled { attempt: job.attempts + 1, started, job, message, outcome }
            });
        }
        true
    }

    /// Results known but not recorded: logged with their provider ids, so that they are not
    /// lost even if this process ends before the database comes back.
    fn log_unrecorded(&self, worker: &str, err: &anyhow::Error, settled: &[Settled]) {
        for item in settled {
            let (outcome, provider_id) = match &item.outcome {
                Outcome::Sent(accepted, _) => ("accepted", accepted.provider_message_id.as_str()),
                Outcome::Failed { code, .. } => ("failed", code.as_str()),
            };
            tracing::warn!(
                worker,
                message_id = item.message.public_id,
                outcome,
                provider_message_id = provider_id,
                error = format!("{err:#}"),
                "a send's result could not be recorded yet"
            );
        }
    }

    /// Keeps trying to record results until the database takes them. Meanwhile their jobs may
    /// be failed as ambiguous elsewhere; a recorded acceptance then still wins.
    async fn record_when_possible(&self, worker: &str, mut pending: Vec<Settled>) {
        let mut delay = self.config.poll_interval.max(Duration::from_millis(200));
        loop {
            tokio::time::sleep(delay).await;
            match self.record(pending).await {
                Ok(()) => {
                    tracing::info!(worker, "results held during a database outage are recorded");
                    return;
                }
                Err((err, kept)) => {
                    tracing::debug!(worker, error = format!("{err:#}"), "still cannot record results");
                    pending = kept;
                }
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// The Twilio request a message makes.
    fn sms_request(&self, message: &message::Model) -> SmsRequest {
        let from = message.from_address.clone().unwrap_or_default();
        let (from, service) = if from.starts_with("MG") { (None, Some(from)) } else { (Some(from), None) };
        let media_urls = message.media.as_deref().and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default();
        SmsRequest {
            to: message.to_address.clone().unwrap_or_default(),
            from,
            messaging_service_sid: service,
            body: message.content.clone(),
            media_urls,
            status_callback: self
                .config
                .public_url
                .as_ref()
                .map(|base| format!("{}/omega/twilio/sms/status", base.trim_end_matches('/'))),
        }
    }

    /// Settles an AMBIGUOUS send by what its provider says: SENT with the SID found in Twilio's
    /// message list, or FAILED as certainly unsent. A message the provider cannot be asked
    /// about (email) stays AMBIGUOUS; a lookup that fails is tried again later.
    async fn reconcile(&self, job: delivery_job::Model) -> anyhow::Result<()> {
        let conn = self.store.writer();
        let message = db::by_id(conn, job.message_id).await?;
        let Some(message) =
            message.filter(|m| m.status == DeliveryStatus::Failed && m.error_code.as_deref() == Some("AMBIGUOUS"))
        else {
            // Already settled (a late answer, a status callback).
            outbox::finish_job(conn, job.id, JobState::Done, None, None, now()).await?;
            return Ok(());
        };
        let twilio = match self.clients_of(message.business_id).await {
            Ok(clients) if message.channel == Channel::Sms => clients.twilio.clone(),
            _ => None,
        };
        let Some(twilio) = twilio else {
            outbox::finish_job(
                self.store.writer(),
                job.id,
                JobState::Failed,
                None,
                Some("AMBIGUOUS: the provider cannot be asked".into()),
                now(),
            )
            .await?;
            return Ok(());
        };
        // From the message's creation: an earlier bound only widens the search, and a SID
        // another message holds is never taken.
        let since = message.created_at;
        let request = self.sms_request(&message);
        let found = match twilio.find_sent(&request, since).await {
            Ok(Lookup::Found(found)) => {
                // A SID one of our other messages already holds is not this one's.
                let mut ours = None;
                for accepted in found {
                    let owners = db::by_provider_id(conn, None, Some("twilio"), &accepted.provider_message_id).await?;
                    if owners.iter().all(|m| m.id == message.id) {
                        ours = Some(accepted);
                        break;
                    }
                }
                ours
            }
            Ok(Lookup::Absent) => None,
            Err(err) => {
                let later =
                    now() + chrono::Duration::from_std(self.config.reconcile_after.max(self.config.poll_interval))?;
                tracing::info!(message_id = message.public_id, error = %err, "looking up an ambiguous send failed");
                outbox::finish_job(
                    self.store.writer(),
                    job.id,
                    JobState::Reconcile,
                    Some(later),
                    Some(format!("lookup: {err}")),
                    now(),
                )
                .await?;
                return Ok(());
            }
        };
        let now = now();
        let txn = self.store.begin().await?;
        match found {
            Some(accepted) => {
                attempts::record_attempt(
                    &txn,
                    message_attempt::ActiveModel {
                        message_id: sea_orm::Set(message.id),
                        attempt: sea_orm::Set(job.attempts),
                        started_at: sea_orm::Set(since),
                        finished_at: sea_orm::Set(Some(now)),
                        outcome: sea_orm::Set(AttemptOutcome::Accepted),
                        provider_message_id: sea_orm::Set(Some(accepted.provider_message_id.clone())),
                        error_code: sea_orm::Set(None),
                        error_message: sea_orm::Set(Some(
                            "found in Twilio's message list after the answer was lost".into(),
                        )),
                        ..Default::default()
                    },
                )
                .await?;
                if db::settle_late_acceptance(&txn, message.id, "twilio", &accepted.provider_message_id, now).await? {
                    let event = status_changed_event(&message, DeliveryStatus::Failed, DeliveryStatus::Sent, None);
                    events::append_event(&txn, event, now).await?;
                }
                outbox::finish_job(&txn, job.id, JobState::Done, None, None, now).await?;
                tracing::info!(
                    message_id = message.public_id,
                    sid = accepted.provider_message_id,
                    "ambiguous send found at Twilio: SENT"
                );
            }
            None => {
                let text = "Twilio has no record of it: it was certainly not sent and may be retried";
                db::settle_unsent(&txn, message.id, "NOT_SENT", text, now).await?;
                outbox::finish_job(&txn, job.id, JobState::Failed, None, Some(format!("NOT_SENT: {text}")), now)
                    .await?;
                tracing::info!(message_id = message.public_id, "ambiguous send not found at Twilio: certainly unsent");
            }
        }
        txn.commit().await.map_err(StoreError::from)?;
        self.store.wake_event_readers(Some(message.business_id));
        Ok(())
    }

    async fn send(&self, clients: anyhow::Result<Arc<Clients>>, message: &message::Model) -> Outcome {
        let (outcome, provider) = self.send_with(clients, message).await;
        let label = match &outcome {
            Outcome::Sent(..) => "sent",
            Outcome::Failed { ambiguous: true, .. } => "ambiguous",
            Outcome::Failed { retryable: true, .. } => "retryable",
            Outcome::Failed { .. } => "rejected",
        };
        metrics::counter!(crate::metrics::SENDS, "provider" => provider, "outcome" => label).increment(1);
        outcome
    }

    /// The files an email sends, read from the attachment store. A file that is gone fails the
    /// message for good; a store that does not answer is retried.
    async fn email_attachments(&self, message: &message::Model) -> Result<Vec<EmailAttachment>, Outcome> {
        let summaries = crate::store::attachments::Summary::of(message);
        if summaries.is_empty() {
            return Ok(Vec::new());
        }
        let failed = |code: &str, text: String, retryable: bool| Outcome::Failed {
            code: code.into(),
            message: text,
            retry_after: None,
            retryable,
            ambiguous: false,
        };
        let ids: Vec<i64> = summaries.iter().map(|s| s.id).collect();
        let rows = crate::store::attachments::by_ids(self.store.connection(), message.business_id, &ids)
            .await
            .map_err(|e| failed("RETRYABLE", format!("reading the attachments: {e}"), true))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(row) = rows.iter().find(|r| r.id == id) else {
                return Err(failed("ATTACHMENT_MISSING", format!("attachment {id} no longer exists"), false));
            };
            let data = match self.omega.attachments.files.get(&row.storage_key).await {
                Ok(data) => data,
                Err(crate::files::FileError::NotFound(_)) => {
                    return Err(failed("ATTACHMENT_MISSING", format!("attachment {id}'s file is gone"), false));
                }
                Err(e) => return Err(failed("RETRYABLE", format!("the attachment store failed: {e}"), true)),
            };
            out.push(EmailAttachment {
                file_name: row.file_name.clone(),
                content_type: row.content_type.clone(),
                data,
            });
        }
        Ok(out)
    }

    /// `send`, and the provider it went to (`none` when the business has none for the channel).
    async fn send_with(
        &self,
        clients: anyhow::Result<Arc<Clients>>,
        message: &message::Model,
    ) -> (Outcome, &'static str) {
        let clients = match clients {
            Ok(clients) => clients,
            Err(err) => {
                let outcome = Outcome::Failed {
                    code: "CONFIGURATION".into(),
                    message: format!("{err:#}"),
                    retry_after: None,
                    retryable: false,
                    ambiguous: false,
                };
                return (outcome, "none");
            }
        };
        let mut used = "none";
        let to = message.to_address.clone().unwrap_or_default();
        let result = match message.channel.as_str() {
            "SMS" => match &clients.twilio {
                None => Err(ProviderError::Rejected {
                    code: "NO_CREDENTIALS".into(),
                    message: "the business has no Twilio credentials (PUT /businesses/{id}/providers/twilio)".into(),
                }),
                Some(twilio) => {
                    used = "twilio";
                    twilio.send_sms(&self.sms_request(message)).await.map(|accepted| (accepted, "twilio"))
                }
            },
            _ => match &clients.email {
                None => Err(ProviderError::Rejected {
                    code: "NO_CREDENTIALS".into(),
                    message: "the business has no email provider (PUT /businesses/{id}/providers/sendgrid or /smtp)"
                        .into(),
                }),
                Some(sender) => {
                    let attachments = match self.email_attachments(message).await {
                        Ok(attachments) => attachments,
                        Err(outcome) => return (outcome, "none"),
                    };
                    let request = EmailRequest {
                        to,
                        from: message.from_address.clone().unwrap_or_default(),
                        from_name: None,
                        subject: message.subject.clone().unwrap_or_default(),
                        text: message.content.clone(),
                        html: message.html.clone(),
                        message_id: message.public_id.clone(),
                        reply_to: self
                            .config
                            .email_inbound_domain
                            .as_ref()
                            .map(|domain| format!("reply+{}@{domain}", message.public_id)),
                        attachments,
                    };
                    let provider = match sender.as_ref() {
                        EmailSender::SendGrid(_) => "sendgrid",
                        EmailSender::Smtp(_) => "smtp",
                    };
                    used = provider;
                    sender.send_email(&request).await.map(|accepted| (accepted, provider))
                }
            },
        };
        let outcome = match result {
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
        };
        (outcome, used)
    }

    /// Writes outcomes in one transaction. Should it fail, each outcome is written on its own,
    /// so that one bad row does not leave the others' messages unaccounted for; answers the
    /// error and the outcomes that could not be written.
    async fn record(&self, settled: Vec<Settled>) -> Result<(), (anyhow::Error, Vec<Settled>)> {
        if settled.is_empty() {
            return Ok(());
        }
        let result = self.record_together(&settled).await;
        match result {
            Ok(()) => Ok(()),
            Err(err) if settled.len() > 1 => {
                tracing::warn!(error = format!("{err:#}"), "recording a batch failed; recording one by one");
                let mut kept = Vec::new();
                let mut first_error = None;
                for item in settled {
                    if let Err(err) = self.record_together(std::slice::from_ref(&item)).await {
                        first_error.get_or_insert(err);
                        kept.push(item);
                    }
                }
                match first_error {
                    None => Ok(()),
                    Some(err) => Err((err, kept)),
                }
            }
            Err(err) => Err((err, settled)),
        }
    }

    async fn record_together(&self, settled: &[Settled]) -> anyhow::Result<()> {
        let txn = self.store.begin().await?;
        let settled: Vec<&Settled> = settled.iter().collect();
        match self.record_in(&txn, &settled).await {
            Ok(()) => {
                txn.commit().await.map_err(|e| anyhow::Error::from(StoreError::from(e)))?;
                self.wake_readers(settled);
                Ok(())
            }
            Err(err) => {
                let _ = txn.rollback().await;
                Err(err)
            }
        }
    }

    /// Wakes the readers of the event logs the recorded outcomes appended to, once per business.
    fn wake_readers<'a>(&self, settled: impl IntoIterator<Item = &'a Settled>) {
        let businesses: std::collections::BTreeSet<i64> = settled.into_iter().map(|s| s.message.business_id).collect();
        for business in businesses {
            self.store.wake_event_readers(Some(business));
        }
    }

    /// Writes outcomes into `txn`: accepted sends (nearly all) together, failures one by one.
    async fn record_in(&self, txn: &sea_orm::DatabaseTransaction, settled: &[&Settled]) -> anyhow::Result<()> {
        let (accepted, others): (Vec<&Settled>, Vec<&Settled>) =
            settled.iter().partition(|item| matches!(item.outcome, Outcome::Sent(..)));
        self.record_accepted(txn, &accepted).await?;
        for item in others {
            self.record_one(txn, item).await?;
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
        let accepted: Vec<outbox::Accepted> = items
            .iter()
            .filter_map(|item| match &item.outcome {
                Outcome::Sent(accepted, provider) => Some(outbox::Accepted {
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
        let moved = outbox::settle_accepted(txn, &accepted, now).await?;
        let mut events: Vec<_> = items
            .iter()
            .filter(|item| moved.contains(&item.message.id))
            .map(|item| status_changed_event(&item.message, DeliveryStatus::Queued, DeliveryStatus::Sent, None))
            .collect();
        // A send that outlived its claim may have been failed as ambiguous meanwhile: the
        // provider's acceptance wins.
        for (item, accepted) in items.iter().zip(&accepted) {
            if !moved.contains(&item.message.id)
                && db::settle_late_acceptance(
                    txn,
                    item.message.id,
                    &accepted.provider,
                    &accepted.provider_message_id,
                    now,
                )
                .await?
            {
                tracing::info!(
                    message_id = item.message.public_id,
                    "a send failed as ambiguous was accepted after all"
                );
                events.push(status_changed_event(&item.message, DeliveryStatus::Failed, DeliveryStatus::Sent, None));
            }
        }
        events::append_events(txn, events, now).await?;
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
            Outcome::Sent(accepted, _) => {
                (AttemptOutcome::Accepted, Some(accepted.provider_message_id.clone()), None, None)
            }
            Outcome::Failed { code, message, retryable, ambiguous, .. } => (
                if *ambiguous {
                    AttemptOutcome::Ambiguous
                } else if *retryable {
                    AttemptOutcome::Retryable
                } else {
                    AttemptOutcome::Rejected
                },
                None,
                Some(code.clone()),
                Some(message.clone()),
            ),
        };
        attempts::record_attempt(
            txn,
            message_attempt::ActiveModel {
                message_id: sea_orm::Set(message.id),
                attempt: sea_orm::Set(attempt),
                started_at: sea_orm::Set(started),
                finished_at: sea_orm::Set(Some(now)),
                outcome: sea_orm::Set(outcome_name),
                provider_message_id: sea_orm::Set(provider_id),
                error_code: sea_orm::Set(code.clone()),
                error_message: sea_orm::Set(text.clone()),
                ..Default::default()
            },
        )
        .await?;
        let (status, job_state, next_attempt) = match &outcome {
            Outcome::Sent(..) => (Some(DeliveryStatus::Sent), JobState::Done, None),
            // Twilio can be asked whether an SMS arrived; the job waits for that lookup.
            // Never sooner than a provider call can last: a call still in flight elsewhere has
            // ended (recorded, or timed out) before its absence at Twilio is believed.
            Outcome::Failed { ambiguous: true, .. } if message.channel == Channel::Sms => (
                Some(DeliveryStatus::Failed),
                JobState::Reconcile,
                Some(
                    now + chrono::Duration::from_std(
                        self.config.reconcile_after.max(self.config.provider_timeout + Duration::from_secs(1)),
                    )?,
                ),
            ),
            Outcome::Failed { retryable: true, retry_after, .. } if attempt < self.config.max_attempts => {
                (None, JobState::Pending, Some(now + chrono::Duration::from_std(self.backoff(attempt, *retry_after))?))
            }
            Outcome::Failed { .. } => (Some(DeliveryStatus::Failed), JobState::Failed, None),
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
            let provider = change.provider.clone();
            if !move_status(txn, message, DeliveryStatus::Queued, change, now).await?
                && let Some((provider, id)) = provider
                && db::settle_late_acceptance(txn, message.id, &provider, &id, now).await?
            {
                let event = status_changed_event(message, DeliveryStatus::Failed, DeliveryStatus::Sent, None);
                events::append_event(txn, event, now).await?;
            }
        }
        let last_error = text.map(|t| format!("{}: {t}", code.unwrap_or_default()));
        outbox::finish_job(txn, job.id, job_state, next_attempt, last_error, now).await?;
        match &outcome {
            Outcome::Sent(..) => {
                tracing::debug!(message_id = message.public_id, attempt, "message handed to its provider")
            }
            Outcome::Failed { code, .. } => {
                tracing::info!(
                    message_id = message.public_id,
                    attempt,
                    code,
                    state = %job_state,
                    "delivery attempt failed"
                )
            }
        }
        Ok(())
    }

    fn backoff(&self, attempt: i32, retry_after: Option<Duration>) -> Duration {
        retry_delay(self.config.retry_base, attempt, retry_after, rand::rng().random_range(0.75..1.25))
    }

    async fn clients_of(&self, business_id: i64) -> anyhow::Result<Arc<Clients>> {
        // Reading the rows each time (one indexed query) lets a credential change made through
        // any replica take effect on the next send.
        let rows = provider_credentials::credentials(self.store.connection(), &self.omega.secrets, business_id).await?;
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

/// The delay before retry `attempt` (1 for the first): base × 2^(attempt−1) times `jitter`
/// (drawn from 0.75..1.25), at most 5 minutes; never sooner than the provider asked.
fn retry_delay(base: Duration, attempt: i32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let exponential = base.saturating_mul(1 << (attempt - 1).clamp(0, 16));
    let delay = exponential.mul_f64(jitter).min(MAX_RETRY_DELAY);
    retry_after.map_or(delay, |after| delay.max(after))
}

const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        let base = Duration::from_secs(2);
        let delays: Vec<u64> = (1..=5).map(|attempt| retry_delay(base, attempt, None, 1.0).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32]);
        assert_eq!(retry_delay(base, 40, None, 1.0), MAX_RETRY_DELAY, "capped, and no overflow");
        assert_eq!(retry_delay(base, 0, None, 1.0), base, "attempt 0 is treated as the first");
        assert_eq!(retry_delay(base, 2, None, 0.75), Duration::from_secs(3));
        assert_eq!(retry_delay(base, 2, None, 1.25), Duration::from_secs(5));
    }

    #[test]
    fn a_provider_asking_for_longer_is_obeyed() {
        let base = Duration::from_secs(2);
        let asked = Some(Duration::from_secs(60));
        assert_eq!(retry_delay(base, 1, asked, 1.0), Duration::from_secs(60));
        assert_eq!(retry_delay(base, 1, Some(Duration::from_millis(10)), 1.0), base, "shorter is not sooner");
        assert_eq!(retry_delay(base, 1, Some(Duration::from_secs(900)), 1.0), Duration::from_secs(900));
    }
}
