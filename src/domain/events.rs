//! The event log as a stream and as pages, for one business at a time (the caller's scope).
//! Streams take new events from their business's shared feed, which reads the log once per
//! wake-up for all of them (see `store::events`); a stream behind the feed reads the log from
//! its own cursor. A wake-up that is lost delays an event until the next one or the next
//! heartbeat, never drops it.

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, time::Instant};

use super::{Error, Result, Violations, auth::Caller, views::EventView};
use crate::store::{
    Store, conversations as conversations_db,
    events::{self as db, Cursor, EventFilter, Feed, Taken},
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

/// The business's event log, as pages and as live streams.
#[derive(Clone, Debug)]
pub struct Events {
    store: Store,
}

impl Events {
    pub(super) fn new(store: Store) -> Self {
        Self { store }
    }

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
    ) -> Result<(Vec<EventView>, i64)> {
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
        Ok((read.rows.into_iter().map(EventView::from).collect(), next))
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
        // Subscribed before the first read: what the feed publishes after it wakes this stream.
        let feed = self.store.event_feed(filter.business_id);
        let published = feed.subscribe();
        let (_, stopping) = self.store.event_wakeups().subscribe();
        let (cursor, last_id) = match after_id {
            Some(id) => (self.cursor(filter.business_id, id).await?, id),
            None => match db::head(self.store.connection(), filter.business_id).await? {
                Some(row) => (Cursor::after(&row), row.id),
                None => (Cursor::START, 0),
            },
        };
        Ok(EventFollower { store: self.store.clone(), filter, cursor, last_id, feed, published, stopping, heartbeat })
    }
}

/// What a stream has next.
#[derive(Debug)]
pub enum Followed {
    Events(Vec<EventView>),
    /// Nothing happened for a heartbeat interval; resume after `after_id`.
    Heartbeat {
        after_id: i64,
    },
    /// The server is stopping.
    Stopped,
}

pub struct EventFollower {
    store: Store,
    filter: EventFilter,
    /// Where the stream is in the log: every row up to it that matches was delivered.
    cursor: Cursor,
    /// The last event delivered (or the one the stream started after): heartbeats carry it.
    last_id: i64,
    feed: Arc<Feed>,
    published: watch::Receiver<u64>,
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
            // Seen before taking: what the feed publishes after the take wakes the wait below.
            self.published.mark_unchanged();
            let mut until = beat_at;
            match self.feed.take(&self.filter, self.cursor) {
                Taken::Rows(rows, cursor) => {
                    self.cursor = cursor;
                    if let Some(last) = rows.last() {
                        self.last_id = last.id;
                        return Ok(Followed::Events(rows.into_iter().map(EventView::from).collect()));
                    }
                }
                Taken::Behind => {
                    // Every row up to the feed's tail was settled before this read began, so a
                    // read that reaches the log's settled end has passed it.
                    let tail = self.feed.tail();
                    let read = db::read_after(self.store.connection(), &self.filter, self.cursor, BATCH).await?;
                    let complete = (read.rows.len() as u64) < BATCH;
                    if let Some(last) = read.rows.last() {
                        self.cursor = Cursor::after(last);
                        self.last_id = last.id;
                    }
                    if complete && let Some(tail) = tail {
                        self.cursor = self.cursor.max(tail);
                    }
                    if !read.rows.is_empty() {
                        return Ok(Followed::Events(read.rows.into_iter().map(EventView::from).collect()));
                    }
                    // Committed rows wait behind an older transaction and the feed may not
                    // cover this position yet: look again soon.
                    if read.unsettled {
                        until = (Instant::now() + recheck).min(beat_at);
                        recheck = (recheck * 2).min(Duration::from_millis(250));
                    }
                }
            }
            tokio::select! {
                changed = self.published.changed() => {
                    if changed.is_err() {
                        return Ok(Followed::Stopped);
                    }
                }
                _ = tokio::time::sleep_until(until) => {
                    if until >= beat_at {
                        // A wake-up may have been lost: the feed reads again.
                        self.feed.poke();
                        return Ok(Followed::Heartbeat { after_id: self.last_id });
                    }
                }
                _ = async { self.stopping.wait_for(|s| *s).await.map(|_| ()) } => return Ok(Followed::Stopped),
            }
        }
    }
}
