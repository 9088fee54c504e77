//! Group commit for the delivery workers' writes.
//!
//! Every worker marks its sends and records their results through one task per process. The
//! task takes whatever has queued up while its previous transaction ran and writes it in the
//! next one, so a process with 32 workers commits once for many sends instead of twice per
//! send — on SQLite, whose single writer would otherwise serialise every worker's commits, and
//! on PostgreSQL, where each commit waits for its WAL flush.
//!
//! Nothing waits to fill a group: a write that finds the journal idle is committed at once, so
//! grouping never delays a result beyond the transaction already running, and the set a crash
//! can leave uncertain stays the sends truly in flight.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::{
    sync::{Mutex, mpsc, oneshot},
    task::JoinHandle,
};

use super::{Dispatcher, Settled};
use crate::store::{StoreError, outbox};

/// The most outcomes one transaction records: a few statements whatever the number, with three
/// to seven bound values per outcome, well under either database's limit on parameters.
const MOST_OUTCOMES: usize = 512;

/// A worker's way into the journal.
#[derive(Clone)]
pub(super) struct Journal {
    /// Writes that must reach the same transaction (a worker's results and its next wave's
    /// mark) travel together.
    tx: mpsc::UnboundedSender<Vec<Write>>,
}

/// The outcomes a write could not record, with why.
pub(super) type Unrecorded = (anyhow::Error, Vec<Settled>);

pub(super) enum Write {
    /// Jobs about to be sent: `running` → `sending` if `worker` still holds them.
    Mark {
        job_ids: Vec<i64>,
        worker: String,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
        reply: oneshot::Sender<anyhow::Result<Vec<i64>>>,
    },
    /// Results of provider calls.
    Record { settled: Vec<Settled>, reply: oneshot::Sender<Result<(), Unrecorded>> },
}

impl Journal {
    /// Starts the journal's committers; they end once every `Journal` handle is gone.
    ///
    /// SQLite takes one writer at a time, so one committer. PostgreSQL makes each commit wait
    /// for its WAL flush but flushes concurrent commits together: several committers, each
    /// with its own group, keep the disk's flushes full instead of waiting on one another.
    pub(super) fn start(dispatcher: Arc<Dispatcher>) -> (Journal, Vec<JoinHandle<()>>) {
        let committers = match dispatcher.store.engine() {
            "sqlite" => 1,
            _ => dispatcher.config.committers(),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        let tasks = (0..committers).map(|_| tokio::spawn(run(dispatcher.clone(), rx.clone()))).collect();
        (Journal { tx }, tasks)
    }

    /// Records results and marks the next jobs as being sent, in one transaction when the
    /// database takes both (each alone otherwise): a worker whose calls returned starts the
    /// next ones for the price of one commit. Answers the recording's future and the ids
    /// `worker` still held (and now marked).
    pub(super) fn record_and_mark(
        &self,
        settled: Vec<Settled>,
        job_ids: Vec<i64>,
        worker: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> (
        impl Future<Output = Result<(), Unrecorded>> + Send + 'static,
        impl Future<Output = anyhow::Result<Vec<i64>>> + Send + 'static,
    ) {
        let (record_reply, recorded) = oneshot::channel();
        let (mark_reply, marked) = oneshot::channel();
        let mut writes = Vec::with_capacity(2);
        if !settled.is_empty() {
            writes.push(Write::Record { settled, reply: record_reply });
        } else {
            let _ = record_reply.send(Ok(()));
        }
        writes.push(Write::Mark { job_ids, worker: worker.to_owned(), lease_until, now, reply: mark_reply });
        let refused = self.tx.send(writes).err().map(|rejected| rejected.0);
        let mut kept = Vec::new();
        for write in refused.into_iter().flatten() {
            if let Write::Record { settled, .. } = write {
                kept = settled;
            }
        }
        let queued = kept.is_empty();
        let recorded = async move {
            if !queued {
                return Err((anyhow::anyhow!("the delivery journal has stopped"), kept));
            }
            // The journal always replies; it only drops a reply when its process is ending.
            recorded.await.unwrap_or_else(|_| Err((anyhow::anyhow!("the delivery journal has stopped"), Vec::new())))
        };
        let marked = async move { marked.await.map_err(|_| anyhow::anyhow!("the delivery journal has stopped"))? };
        (recorded, marked)
    }

    /// Queues results to be recorded; the future answers once they are (or why not, with
    /// the outcomes kept).
    pub(super) fn record(
        &self,
        settled: Vec<Settled>,
    ) -> impl Future<Output = Result<(), Unrecorded>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.tx.send(vec![Write::Record { settled, reply }]).map_err(|rejected| {
            match rejected.0.into_iter().next() {
                Some(Write::Record { settled, .. }) => (anyhow::anyhow!("the delivery journal has stopped"), settled),
                _ => unreachable!("a record was sent"),
            }
        });
        async move {
            queued?;
            // The journal always replies; it only drops a reply when its process is ending.
            answer.await.unwrap_or_else(|_| Err((anyhow::anyhow!("the delivery journal has stopped"), Vec::new())))
        }
    }
}

async fn run(dispatcher: Arc<Dispatcher>, rx: Arc<Mutex<mpsc::UnboundedReceiver<Vec<Write>>>>) {
    loop {
        // One committer at a time takes what has queued up; it commits while the next one
        // waits for more.
        let group = {
            let mut rx = rx.lock().await;
            let Some(mut group) = rx.recv().await else { return };
            let mut outcomes: usize = group.iter().map(outcomes_in).sum();
            while outcomes < MOST_OUTCOMES {
                match rx.try_recv() {
                    Ok(writes) => {
                        outcomes += writes.iter().map(outcomes_in).sum::<usize>();
                        group.extend(writes);
                    }
                    Err(_) => break,
                }
            }
            group
        };
        commit(&dispatcher, group).await;
    }
}

fn outcomes_in(write: &Write) -> usize {
    match write {
        Write::Mark { job_ids, .. } => job_ids.len(),
        Write::Record { settled, .. } => settled.len(),
    }
}

/// Writes a group in one transaction. Should that fail, each write is tried on its own, so that
/// one bad row does not fail the others — unless the database could not even be reached, when
/// trying each would only make every worker wait out one timeout after another.
async fn commit(dispatcher: &Dispatcher, group: Vec<Write>) {
    let mut marks = Vec::new();
    let mut records = Vec::new();
    for write in group {
        match write {
            Write::Mark { job_ids, worker, lease_until, now, reply } => {
                marks.push((job_ids, worker, lease_until, now, reply))
            }
            Write::Record { settled, reply } => records.push((settled, reply)),
        }
    }
    let store = &dispatcher.store;
    let together: Result<Vec<Vec<i64>>, (anyhow::Error, bool)> = async {
        let txn = store.begin().await.map_err(|e| (anyhow::Error::from(e), false))?;
        let written = async {
            let all: Vec<outbox::Mark> = marks
                .iter()
                .map(|(job_ids, worker, lease_until, now, _)| outbox::Mark {
                    job_ids,
                    worker,
                    lease_until: *lease_until,
                    now: *now,
                })
                .collect();
            let marked = outbox::start_sending_marks(&txn, &all).await?;
            let settled: Vec<&Settled> = records.iter().flat_map(|(settled, _)| settled).collect();
            dispatcher.record_in(&txn, &settled).await?;
            anyhow::Ok(marked)
        }
        .await;
        match written {
            Ok(marked) => {
                txn.commit().await.map_err(|e| (anyhow::Error::from(StoreError::from(e)), true))?;
                dispatcher.wake_readers(records.iter().flat_map(|(settled, _)| settled));
                Ok(marked)
            }
            Err(err) => {
                let _ = txn.rollback().await;
                Err((err, true))
            }
        }
    }
    .await;
    match together {
        Ok(marked) => {
            for ((.., reply), marked) in marks.into_iter().zip(marked) {
                let _ = reply.send(Ok(marked));
            }
            for (_, reply) in records {
                let _ = reply.send(Ok(()));
            }
        }
        Err((err, reached)) if !reached => {
            let why = format!("{err:#}");
            for (.., reply) in marks {
                let _ = reply.send(Err(anyhow::anyhow!("{why}")));
            }
            for (settled, reply) in records {
                let _ = reply.send(Err((anyhow::anyhow!("{why}"), settled)));
            }
        }
        Err((err, _)) => {
            tracing::warn!(error = format!("{err:#}"), "recording a group of deliveries failed; writing each alone");
            for (job_ids, worker, lease_until, now, reply) in marks {
                let marked = async {
                    let txn = store.begin().await?;
                    let marked = outbox::start_sending_many(&txn, &job_ids, &worker, lease_until, now).await?;
                    txn.commit().await.map_err(StoreError::from)?;
                    anyhow::Ok(marked)
                };
                let _ = reply.send(marked.await);
            }
            for (settled, reply) in records {
                let _ = reply.send(dispatcher.record(settled).await);
            }
        }
    }
}
