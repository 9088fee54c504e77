//! The event log as a stream and as pages, for one business at a time (the caller's scope).
//! Streams read the log itself whenever they are woken (see `store::events`): a wake-up that
//! is lost delays an event until the next one or the next heartbeat, never drops it.

use std::time::Duration;

use tokio::{
    sync::{broadcast, watch},
    time::Instant,
};

use super::{Error, Omega, Result, Violations, auth::Caller};
use crate::store::{
    conversations as conversations_db,
    entity::conversation_event as event,
    events::{self as db, Cursor, EventFilter},
};

/// Every kind the log holds (the README's event catalogue).
pub const KINDS: &[&str] = &[
    "conversation.created",
    "conversation.status_changed",
    "conversation.assigned",
    "conversation.unassigned",
    "note.added",
    "messages.read",
    "messages.unread",
    "message.queued",
    "message.received",
    "message.recorded",
    "message.retried",
    "message.status_changed",
    "message.updated",
    "contact.typing",
    "staff.typing",
    "client.merged",
];

pub const DEFAULT_PAGE_SIZE: u64 = 100;
/// The same bound as every other list.
pub const MAX_PAGE_SIZE: u64 = super::pagination::MAX_PAGE_SIZE;
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// Rows a stream reads from the log at a time.
const BATCH: u64 = 200;

/// What a reader asked for, on the wire's terms.
pub struct EventQuery {
    pub business_id: i64,
    pub conversation_id: Option<i64>,
    pub kinds: Vec<String>,
}

impl Omega {
    /// Checks the scope and the filters; answers the store's filter.
    async fn event_filter(&self, caller: &Caller, query: EventQuery) -> Result<EventFilter> {
        caller.require_business(query.business_id)?;
        let mut v = Violations::default();
        for (i, kind) in query.kinds.iter().enumerate() {
            if !KINDS.contains(&kind.as_str()) {
                v.add(format!("kinds[{i}]"), format!("{kind:?} is not an event kind; see the event catalogue"));
            }
        }
        v.finish()?;
        if let Some(id) = query.conversation_id {
            conversations_db::conversation(self.store.connection(), query.business_id, id)
                .await?
                .ok_or_else(|| Error::NotFound(format!("conversation {id}")))?;
        }
        let mut kinds = query.kinds;
        kinds.sort();
        kinds.dedup();
        Ok(EventFilter { business_id: query.business_id, conversation_id: query.conversation_id, kinds })
    }

    /// Where a reader resumes: after the business's event `after_id` (0: from the start).
    async fn cursor(&self, business_id: i64, after_id: i64) -> Result<Cursor> {
        if after_id == 0 {
            return Ok(Cursor::START);
        }
        db::cursor_of(self.store.connection(), business_id, after_id)
            .await?
            .ok_or_else(|| Error::invalid("after_id", "is not an event of this business"))
    }

    /// One page of events after `after_id`, in delivery order, and the cursor for the next.
    pub async fn list_events(
        &self,
        caller: &Caller,
        query: EventQuery,
        after_id: i64,
        page_size: u64,
    ) -> Result<(Vec<event::Model>, i64)> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(Error::invalid("page_size", format!("must be between 1 and {MAX_PAGE_SIZE}")));
            }
            n => n,
        };
        let filter = self.event_filter(caller, query).await?;
        let cursor = self.cursor(filter.business_id, after_id).await?;
        let read = db::read_after(self.store.connection(), &filter, cursor, size).await?;
        let next = read.rows.last().map_or(after_id, |e| e.id);
        Ok((read.rows, next))
    }

    /// A stream of the business's events after `after_id` (None: from now on).
    pub async fn follow_events(
        &self,
        caller: &Caller,
        query: EventQuery,
        after_id: Option<i64>,
        heartbeat: Duration,
    ) -> Result<EventFollower> {
        let filter = self.event_filter(caller, query).await?;
        // Subscribed before the first read: a commit after it wakes this stream.
        let (wake, stopping) = self.store.event_wakeups().subscribe();
        let (cursor, last_id) = match after_id {
            Some(id) => (self.cursor(filter.business_id, id).await?, id),
            None => match db::head(self.store.connection(), filter.business_id).await? {
                Some(row) => (Cursor::after(&row), row.id),
                None => (Cursor::START, 0),
            },
        };
        Ok(EventFollower { omega: self.clone(), filter, cursor, last_id, wake, stopping, heartbeat })
    }
}

/// What a stream has next.
#[derive(Debug)]
pub enum Followed {
    Events(Vec<event::Model>),
    /// Nothing happened for a heartbeat interval; resume after `after_id`.
    Heartbeat {
        after_id: i64,
    },
    /// The server is stopping.
    Stopped,
}

pub struct EventFollower {
    omega: Omega,
    filter: EventFilter,
    cursor: Cursor,
    last_id: i64,
    wake: broadcast::Receiver<Option<i64>>,
    stopping: watch::Receiver<bool>,
    heartbeat: Duration,
}

impl EventFollower {
    /// Waits for the next events (or a heartbeat, or the server's stop).
    pub async fn next(&mut self) -> Result<Followed> {
        let beat_at = Instant::now() + self.heartbeat;
        let mut recheck = Duration::from_millis(10);
        loop {
            if *self.stopping.borrow() {
                return Ok(Followed::Stopped);
            }
            let read = db::read_after(self.omega.store.connection(), &self.filter, self.cursor, BATCH).await?;
            if let Some(last) = read.rows.last() {
                self.cursor = Cursor::after(last);
                self.last_id = last.id;
                return Ok(Followed::Events(read.rows));
            }
            // Committed rows wait behind an older transaction still running: its end may come
            // with no wake-up (it wrote no event), so look again soon.
            let until = if read.unsettled {
                let at = Instant::now() + recheck;
                recheck = (recheck * 2).min(Duration::from_millis(250));
                at.min(beat_at)
            } else {
                beat_at
            };
            loop {
                tokio::select! {
                    woken = self.wake.recv() => match woken {
                        Ok(Some(business)) if business != self.filter.business_id => continue,
                        Err(broadcast::error::RecvError::Closed) => return Ok(Followed::Stopped),
                        // Ours, unknown, or missed ones (lagged): read again, once for all that
                        // are queued.
                        _ => {
                            while self.wake.try_recv().is_ok() {}
                            break;
                        }
                    },
                    _ = tokio::time::sleep_until(until) => {
                        if until >= beat_at {
                            return Ok(Followed::Heartbeat { after_id: self.last_id });
                        }
                        break;
                    }
                    _ = async { self.stopping.wait_for(|s| *s).await.map(|_| ()) } => return Ok(Followed::Stopped),
                }
            }
        }
    }
}
