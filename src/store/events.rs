//! Reading the event log in delivery order, and the wake-ups that tell readers to read again.
//!
//! Order: SQLite has one writer, so ids follow commit order. On PostgreSQL ids are taken at
//! insert, not commit, so a later id can become visible before an earlier one; rows are read in
//! (tx_id, id) order and only below the oldest transaction still running (`settled`), a prefix
//! of the log that no commit can add to any more. A reader that resumes after the last row it
//! saw therefore misses nothing and sees nothing twice.

use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};
use tokio::sync::{broadcast, watch};

use super::{StoreResult, entity::conversation_event as event};

/// A position in the log: after the row (tx_id, id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// The position just after the business's event `id`, or None if it has no such event.
pub async fn cursor_of(conn: &impl ConnectionTrait, business_id: i64, id: i64) -> StoreResult<Option<Cursor>> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let row = event::Entity::find_by_id(id).filter(event::Column::BusinessId.eq(business_id)).one(conn).await?;
    Ok(row.as_ref().map(Cursor::after))
}

/// The business's last settled event (where a reader that wants only new events starts), if any.
pub async fn head(conn: &impl ConnectionTrait, business_id: i64) -> StoreResult<Option<event::Model>> {
    let backend = conn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT * FROM conversation_events WHERE business_id = $1 \
             AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
             ORDER BY tx_id DESC, id DESC LIMIT 1"
        }
        _ => "SELECT * FROM conversation_events WHERE business_id = ?1 ORDER BY tx_id DESC, id DESC LIMIT 1",
    };
    let row = conn.query_one_raw(Statement::from_sql_and_values(backend, sql, [business_id.into()])).await?;
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
    let settled = match backend {
        DbBackend::Postgres => "tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
        _ => "1 = 1",
    };
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
    if backend != DbBackend::Postgres {
        sql = sql.replace('$', "?");
    }
    let found = conn.query_all_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
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

/// Announces this replica's commits to the others, after they are made: NOTIFY inside a writing
/// transaction would hold PostgreSQL's cluster-wide notify lock through that transaction's WAL
/// flush and so make every write commit one after another. Announcements that queue up while one
/// is sent go out together in the next statement (one per business, or one that wakes every
/// reader). The task ends when the store's last handle is gone.
pub fn announcer(db: sea_orm::DatabaseConnection) -> tokio::sync::mpsc::UnboundedSender<Option<i64>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<i64>>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
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
            let sql = "SELECT pg_notify($1, payload) FROM regexp_split_to_table($2, ',') AS payload";
            let statement = Statement::from_sql_and_values(DbBackend::Postgres, sql, [CHANNEL.into(), payloads.into()]);
            if let Err(err) = db.execute_raw(statement).await {
                // The readers of other replicas find the rows at their next wake-up or recheck.
                tracing::debug!(error = %err, "announcing commits to other replicas failed");
            }
        }
    });
    tx
}

/// Listens for other replicas' commits until the process ends, reconnecting after a loss (and
/// waking every reader then: notifications sent meanwhile are gone).
pub async fn listen(url: String, wakeups: std::sync::Arc<EventWakeups>) {
    use sea_orm::sqlx::postgres::PgListener;
    loop {
        let mut listener = match PgListener::connect(&url).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "cannot LISTEN for events; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(err) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %err, "LISTEN failed; retrying");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        }
        wakeups.wake(None);
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => wakeups.wake(notification.payload().parse().ok()),
                // The connection was lost; the next call reconnects. Whatever was sent
                // meanwhile is lost, so every reader reads again.
                Ok(None) => wakeups.wake(None),
                Err(err) => {
                    tracing::warn!(error = %err, "lost the LISTEN connection; reconnecting");
                    wakeups.wake(None);
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}
