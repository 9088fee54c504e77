//! The event log: appending to it, reading it in delivery order, and the wake-ups that tell
//! readers to read again.
//!
//! Order: SQLite has one writer, so ids follow commit order. On PostgreSQL ids are taken at
//! insert, not commit, so a later id can become visible before an earlier one; rows are read in
//! (tx_id, id) order and only below the oldest transaction still running (`settled`), a prefix
//! of the log that no commit can add to any more. A reader that resumes after the last row it
//! saw therefore misses nothing and sees nothing twice.
//!
//! Streams of one business share a [`Feed`]: one reader per business and process reads what
//! the log gained after each wake-up, once, and keeps the latest rows in memory; every stream
//! takes what matches its filter from there. A stream whose position is older than what the
//! feed keeps (it started from an old cursor, or its client read slowly) reads the log from its
//! own cursor until it is back within the feed.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult, Value};
use tokio::{
    sync::{Notify, broadcast, oneshot, watch},
    time::Instant,
};

use super::{
    StoreResult,
    api_keys::{KeyCache, REVOCATIONS},
    dialect,
    entity::conversation_event as event,
};

// ---- appending ----

/// An event-log row to append.
pub struct NewEvent<'a> {
    pub business_id: i64,
    pub conversation_id: Option<i64>,
    pub kind: &'a str,
    pub actor_key_id: Option<i64>,
    pub actor_staff_id: Option<i64>,
    pub data: serde_json::Value,
}

impl NewEvent<'_> {
    pub(crate) fn row(self, now: chrono::DateTime<chrono::Utc>) -> event::ActiveModel {
        use sea_orm::Set;
        event::ActiveModel {
            business_id: Set(self.business_id),
            conversation_id: Set(self.conversation_id),
            kind: Set(self.kind.to_owned()),
            actor_key_id: Set(self.actor_key_id),
            actor_staff_id: Set(self.actor_staff_id),
            data: Set(self.data.to_string()),
            created_at: Set(now),
            ..Default::default()
        }
    }
}

pub async fn append_event(
    conn: &impl ConnectionTrait,
    new: NewEvent<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> StoreResult<()> {
    use sea_orm::ActiveModelTrait;
    new.row(now).insert(conn).await?;
    Ok(())
}

/// Several events in one statement.
pub async fn append_events(
    conn: &impl ConnectionTrait,
    events: Vec<NewEvent<'_>>,
    now: chrono::DateTime<chrono::Utc>,
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    dialect::append_events(conn, events, now).await
}

/// A page of a conversation's events, oldest first (its history), and how many it has.
pub async fn conversation_events(
    conn: &impl ConnectionTrait,
    business_id: i64,
    conversation_id: i64,
    after_id: Option<i64>,
    limit: u64,
) -> StoreResult<(Vec<event::Model>, u64)> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let select = event::Entity::find()
        .filter(event::Column::BusinessId.eq(business_id))
        .filter(event::Column::ConversationId.eq(conversation_id));
    super::directory::page_by_id(conn, select, event::Column::Id, after_id, limit).await
}

// ---- reading ----

/// A position in the log: after the row (tx_id, id). Positions order as the log's rows do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub tx_id: i64,
    pub id: i64,
}

impl Cursor {
    /// Before every row.
    pub const START: Cursor = Cursor { tx_id: i64::MIN, id: 0 };

    pub fn after(row: &event::Model) -> Self {
        Self { tx_id: row.tx_id, id: row.id }
    }
}

/// Which rows of one business a reader wants.
#[derive(Clone, Debug)]
pub struct EventFilter {
    pub business_id: i64,
    pub conversation_id: Option<i64>,
    pub kinds: Vec<String>,
}

impl EventFilter {
    /// Whether `row` is one the filter selects (what `read_after` asks the database for).
    pub fn matches(&self, row: &event::Model) -> bool {
        row.business_id == self.business_id
            && self.conversation_id.is_none_or(|id| row.conversation_id == Some(id))
            && (self.kinds.is_empty() || self.kinds.contains(&row.kind))
    }
}

/// The position just after the business's event `id`, or None if it has no such event.
pub async fn cursor_of(conn: &impl ConnectionTrait, business_id: i64, id: i64) -> StoreResult<Option<Cursor>> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let row = event::Entity::find_by_id(id).filter(event::Column::BusinessId.eq(business_id)).one(conn).await?;
    Ok(row.as_ref().map(Cursor::after))
}

/// The business's last settled event (where a reader that wants only new events starts), if any.
pub async fn head(conn: &impl ConnectionTrait, business_id: i64) -> StoreResult<Option<event::Model>> {
    let backend = conn.get_database_backend();
    let sql = format!(
        "SELECT * FROM conversation_events WHERE business_id = $1 AND {} ORDER BY tx_id DESC, id DESC LIMIT 1",
        dialect::event_settled(backend)
    );
    let row = conn.query_one_raw(dialect::statement(backend, &sql, [business_id.into()])).await?;
    Ok(row.map(|r| event::Model::from_query_result(&r, "")).transpose()?)
}

/// What a read after a cursor found.
#[derive(Debug, Default)]
pub struct Read {
    /// Settled rows after the cursor, in delivery order.
    pub rows: Vec<event::Model>,
    /// Whether rows after those are committed but not yet settled (an older transaction is still
    /// running): read again shortly, since their settling may come with no wake-up.
    pub unsettled: bool,
}

/// Up to `limit` settled rows after `cursor` that match `filter`.
pub async fn read_after(
    conn: &impl ConnectionTrait,
    filter: &EventFilter,
    cursor: Cursor,
    limit: u64,
) -> StoreResult<Read> {
    let backend = conn.get_database_backend();
    let settled = dialect::event_settled(backend);
    let mut values: Vec<Value> = vec![filter.business_id.into(), cursor.tx_id.into(), cursor.id.into()];
    let mut sql = format!(
        "SELECT *, ({settled}) AS settled FROM conversation_events \
         WHERE business_id = $1 AND (tx_id, id) > ($2, $3)"
    );
    if let Some(conversation_id) = filter.conversation_id {
        values.push(conversation_id.into());
        sql.push_str(&format!(" AND conversation_id = ${}", values.len()));
    }
    if !filter.kinds.is_empty() {
        let mut marks = Vec::new();
        for kind in &filter.kinds {
            values.push(kind.clone().into());
            marks.push(format!("${}", values.len()));
        }
        sql.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
    }
    sql.push_str(&format!(" ORDER BY tx_id, id LIMIT {limit}"));
    let found = conn.query_all_raw(dialect::statement(backend, &sql, values)).await?;
    let mut read = Read::default();
    for row in found {
        if !row.try_get::<bool>("", "settled")? {
            read.unsettled = true;
            break;
        }
        read.rows.push(event::Model::from_query_result(&row, "")?);
    }
    Ok(read)
}

/// Wakes the readers of the log when rows may have been committed: in this process after a
/// commit, and (PostgreSQL) when another replica's commit is announced by NOTIFY. A wake-up only
/// says "read again"; the log itself is the truth, so a lost one delays a reader, never skips a row.
#[derive(Debug)]
pub struct EventWakeups {
    /// The business whose log grew, or None: any (or unknown).
    sender: broadcast::Sender<Option<i64>>,
    /// True once the server stops: streams end and their clients reconnect elsewhere.
    stopping: watch::Sender<bool>,
}

impl Default for EventWakeups {
    fn default() -> Self {
        Self { sender: broadcast::channel(1024).0, stopping: watch::channel(false).0 }
    }
}

impl EventWakeups {
    pub fn wake(&self, business_id: Option<i64>) {
        let _ = self.sender.send(business_id);
    }

    pub fn subscribe(&self) -> (broadcast::Receiver<Option<i64>>, watch::Receiver<bool>) {
        (self.sender.subscribe(), self.stopping.subscribe())
    }

    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }
}

/// The PostgreSQL channel on which replicas announce their commits to the log.
pub const CHANNEL: &str = "omega_events";

/// The shortest time between two announcements. Each is a transaction of its own; sent as soon
/// as the last one was done, a replica under steady ingest sent one per few messages, and
/// spacing them (at most 100 a second) raised ingest on PostgreSQL from 0.39 to 0.44 of its
/// limit (benchmark P1). Other replicas' streams hear of a commit at most this much later.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(10);

/// Announces this replica's commits to the others, after they are made: NOTIFY inside a writing
/// transaction would hold PostgreSQL's cluster-wide notify lock through that transaction's WAL
/// flush and so make every write commit one after another. Announcements go out at most every
/// [`ANNOUNCE_EVERY`]; those that queue up meanwhile go out together in the next statement (one
/// per business, or one that wakes every reader). The task ends when the store's last handle is
/// gone.
pub fn announcer(db: sea_orm::DatabaseConnection) -> tokio::sync::mpsc::UnboundedSender<Option<i64>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<i64>>();
    tokio::spawn(async move {
        let mut last = Instant::now().checked_sub(ANNOUNCE_EVERY).unwrap_or_else(Instant::now);
        while let Some(first) = rx.recv().await {
            tokio::time::sleep_until(last + ANNOUNCE_EVERY).await;
            last = Instant::now();
            let mut businesses = std::collections::BTreeSet::new();
            let mut every = first.is_none();
            businesses.extend(first);
            while let Ok(next) = rx.try_recv() {
                every |= next.is_none();
                businesses.extend(next);
            }
            // One notification per business id; an empty payload wakes every reader (see `listen`).
            let payloads =
                if every { String::new() } else { businesses.iter().map(i64::to_string).collect::<Vec<_>>().join(",") };
            let statement = dialect::announce_statement(CHANNEL, payloads);
            if let Err(err) = db.execute_raw(statement).await {
                // The readers of other replicas find the rows at their next wake-up or recheck.
                tracing::debug!(error = %err, "announcing commits to other replicas failed");
            }
        }
    });
    tx
}

/// Listens for other replicas' commits and key revocations until the process ends,
/// reconnecting after a loss. While it is not listening, notifications are lost: the key cache
/// is not used, and every reader is woken once it listens again.
pub async fn listen(url: String, wakeups: std::sync::Arc<EventWakeups>, keys: std::sync::Arc<KeyCache>) {
    use sea_orm::sqlx::postgres::PgListener;
    loop {
        keys.distrust();
        let mut listener = match PgListener::connect(&url).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "cannot LISTEN for events; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(err) = listener.listen_all([CHANNEL, REVOCATIONS]).await {
            tracing::warn!(error = %err, "LISTEN failed; retrying");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        }
        keys.trust();
        wakeups.wake(None);
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) if notification.channel() == REVOCATIONS => keys.revoked(),
                Ok(Some(notification)) => wakeups.wake(notification.payload().parse().ok()),
                // The connection was lost: connect and LISTEN again, trusting the key cache
                // only from then on. Whatever was sent meanwhile is lost, so every reader
                // reads again.
                Ok(None) => {
                    keys.distrust();
                    wakeups.wake(None);
                    break;
                }
                Err(err) => {
                    keys.distrust();
                    tracing::warn!(error = %err, "lost the LISTEN connection; reconnecting");
                    wakeups.wake(None);
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

/// Rows a feed keeps in memory by default (`OMEGA_EVENT_FEED_ROWS`): a stream whose position
/// falls behind them reads the log itself.
pub const DEFAULT_FEED_ROWS: u64 = 1024;
/// Rows a feed reads from the log at a time.
const FEED_READS: u64 = 500;

/// The feeds of this process, one per business that has streams (see [`Feed`]).
#[derive(Debug)]
pub struct EventFeeds {
    db: DatabaseConnection,
    wakeups: Arc<EventWakeups>,
    /// Rows each feed keeps.
    keeps: AtomicUsize,
    feeds: Mutex<HashMap<i64, Weak<Feed>>>,
}

impl EventFeeds {
    pub fn new(db: DatabaseConnection, wakeups: Arc<EventWakeups>) -> Self {
        Self { db, wakeups, keeps: AtomicUsize::new(DEFAULT_FEED_ROWS as usize), feeds: Mutex::default() }
    }

    /// How many rows each feed started from now on keeps (at least one).
    pub fn keep_rows(&self, rows: usize) {
        self.keeps.store(rows.max(1), Ordering::Relaxed);
    }

    /// The business's feed, started if no stream holds it: it reads while someone holds it.
    pub fn feed(&self, business_id: i64) -> Arc<Feed> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(feed) = feeds.get(&business_id).and_then(Weak::upgrade) {
            return feed;
        }
        feeds.retain(|_, feed| feed.strong_count() > 0);
        let (closed_tx, closed) = oneshot::channel();
        let feed = Arc::new(Feed {
            business_id,
            keeps: self.keeps.load(Ordering::Relaxed),
            recent: Mutex::new(Recent { tail: None, start: Cursor::START, rows: VecDeque::new() }),
            published: watch::channel(0).0,
            poke: Arc::new(Notify::new()),
            _closed: closed_tx,
        });
        // Subscribed before the feed's first read: a commit after it wakes the feed.
        let (wake, stopping) = self.wakeups.subscribe();
        let reader = FeedReader { feed: Arc::downgrade(&feed), poke: feed.poke.clone(), db: self.db.clone() };
        tokio::spawn(reader.run(wake, stopping, closed));
        feeds.insert(business_id, Arc::downgrade(&feed));
        feed
    }
}

/// One business's log as its streams in this process see it: the latest rows, read once.
#[derive(Debug)]
pub struct Feed {
    business_id: i64,
    keeps: usize,
    recent: Mutex<Recent>,
    /// Counts what the feed published: streams wait for it to change.
    published: watch::Sender<u64>,
    /// Asks the reader to read again now (a stream's heartbeat: a lost wake-up costs at most
    /// a heartbeat, as it did when each stream read for itself).
    poke: Arc<Notify>,
    /// Dropped with the feed: its reader stops.
    _closed: oneshot::Sender<()>,
}

#[derive(Debug)]
struct Recent {
    /// Where the feed has read to (every row up to it is settled), or None until it has found
    /// where the log ends.
    tail: Option<Cursor>,
    /// The position before the oldest row kept: every row after it up to `tail` is in `rows`.
    start: Cursor,
    rows: VecDeque<Arc<event::Model>>,
}

/// What a stream takes from its feed.
#[derive(Debug)]
pub enum Taken {
    /// The rows after the stream's position that match its filter (maybe none), and its new
    /// position.
    Rows(Vec<event::Model>, Cursor),
    /// The position is older than what the feed keeps (or the feed has not read yet): read the
    /// log from it.
    Behind,
}

impl Feed {
    pub fn business_id(&self) -> i64 {
        self.business_id
    }

    /// Changes whenever the feed publishes rows (or first finds the log's end).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Where the feed has read to: every settled row up to it was settled already then.
    pub fn tail(&self) -> Option<Cursor> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).tail
    }

    /// The kept rows after `cursor` that `filter` selects.
    pub fn take(&self, filter: &EventFilter, cursor: Cursor) -> Taken {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tail) = recent.tail else {
            return Taken::Behind;
        };
        if cursor < recent.start {
            return Taken::Behind;
        }
        // Every row in (cursor, tail] is kept (a position past the tail takes none yet).
        let from = recent.rows.partition_point(|row| Cursor::after(row) <= cursor);
        let rows = recent.rows.range(from..).filter(|row| filter.matches(row)).map(|row| (**row).clone()).collect();
        Taken::Rows(rows, cursor.max(tail))
    }

    /// Asks the reader to look at the log again soon.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Reads what the log gained after the tail and publishes it; answers whether rows after it
    /// are committed but wait behind an older transaction (read again shortly, then).
    async fn catch_up(&self, db: &DatabaseConnection) -> StoreResult<bool> {
        let tail = self.tail();
        let mut tail = match tail {
            Some(tail) => tail,
            None => {
                let tail = head(db, self.business_id).await?.as_ref().map_or(Cursor::START, Cursor::after);
                {
                    let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
                    recent.tail = Some(tail);
                    recent.start = tail;
                }
                self.published.send_modify(|n| *n += 1);
                tail
            }
        };
        let every = EventFilter { business_id: self.business_id, conversation_id: None, kinds: Vec::new() };
        loop {
            let read = read_after(db, &every, tail, FEED_READS).await?;
            let full = read.rows.len() as u64 == FEED_READS;
            if let Some(last) = read.rows.last() {
                tail = Cursor::after(last);
                {
                    let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
                    recent.rows.extend(read.rows.into_iter().map(Arc::new));
                    while recent.rows.len() > self.keeps {
                        if let Some(dropped) = recent.rows.pop_front() {
                            recent.start = Cursor::after(&dropped);
                        }
                    }
                    recent.tail = Some(tail);
                }
                self.published.send_modify(|n| *n += 1);
            }
            if !full {
                return Ok(read.unsettled);
            }
        }
    }
}

/// Reads the log for a feed whenever the business's log may have grown, until the feed is
/// dropped or the server stops.
struct FeedReader {
    feed: Weak<Feed>,
    poke: Arc<Notify>,
    db: DatabaseConnection,
}

impl FeedReader {
    async fn run(
        self,
        mut wake: broadcast::Receiver<Option<i64>>,
        mut stopping: watch::Receiver<bool>,
        mut closed: oneshot::Receiver<()>,
    ) {
        let mut recheck = Duration::from_millis(10);
        loop {
            let Some(feed) = self.feed.upgrade() else { return };
            let business_id = feed.business_id;
            let again = match feed.catch_up(&self.db).await {
                Ok(false) => {
                    recheck = Duration::from_millis(10);
                    None
                }
                // Committed rows wait behind an older transaction: its end may come with no
                // wake-up (it wrote no event), so look again soon.
                Ok(true) => {
                    let at = Instant::now() + recheck;
                    recheck = (recheck * 2).min(Duration::from_millis(250));
                    Some(at)
                }
                Err(err) => {
                    tracing::warn!(error = %err, business_id, "reading the event log for live streams failed; retrying");
                    Some(Instant::now() + Duration::from_secs(1))
                }
            };
            // Not held while waiting: the last stream's going away ends the feed.
            drop(feed);
            loop {
                tokio::select! {
                    woken = wake.recv() => match woken {
                        Ok(Some(business)) if business != business_id => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                        // Ours, unknown, or missed ones (lagged): read again, once for all that
                        // are queued.
                        _ => {
                            while wake.try_recv().is_ok() {}
                            break;
                        }
                    },
                    _ = self.poke.notified() => break,
                    _ = async {
                        match again {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    } => break,
                    _ = &mut closed => return,
                    _ = async { stopping.wait_for(|s| *s).await.map(|_| ()) } => return,
                }
            }
        }
    }
}
