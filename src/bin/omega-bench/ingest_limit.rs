//! P1's baseline: the fastest correct way to store the rows an ingested inbound SMS adds, with
//! the durability Omega gives them, in the benchmark's own database (Omega's migrated schema:
//! every index and trigger fires as it does for Omega). Per message, one transaction: the
//! message row with the columns Omega fills, its conversation's update (last message, preview,
//! unread count, channel mask) and its `message.received` event; committed before the next.
//!
//! - SQLite: one writer connection (as Omega's single writer), WAL and `synchronous=NORMAL` (as
//!   Omega), `BEGIN IMMEDIATE`, cached prepared statements, in a thread of its own with no
//!   async hop between statements: one transaction after another, as fast as SQLite commits.
//! - PostgreSQL: 16 connections (P1's concurrency), each looping over `BEGIN`, the three
//!   prepared statements and `COMMIT` (what `pgbench -M prepared -c 16` does with a script of
//!   them), on the server's own durability settings (the same ones Omega's commits get).

use std::{
    ops::Range,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::{
    ConnectionTrait, Statement,
    sqlx::{self, Connection as _, PgConnection},
};

use crate::harness::{Backend, BenchDb};

/// A conversation P1 writes to, and its client's phone (how an ingested SMS names it).
pub struct Target {
    pub conversation_id: i64,
    pub client_id: i64,
    pub phone: String,
}

/// Up to `n` open conversations of `business_id` whose clients have a phone. Every P1 case
/// writes to these same conversations in the same order, and to open ones, so that no case
/// reopens a resolved conversation (more rows) where another would not.
pub async fn open_conversations(db: &BenchDb, business_id: u32, n: usize) -> anyhow::Result<Vec<Target>> {
    let conn = db.connect().await?;
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            format!(
                "SELECT c.id AS conversation_id, c.client_id AS client_id, cl.phone_e164 AS phone \
                 FROM conversations c JOIN clients cl ON cl.id = c.client_id \
                 WHERE c.business_id = {business_id} AND c.status = 'OPEN' AND cl.phone_e164 IS NOT NULL \
                 ORDER BY c.id LIMIT {n}"
            ),
        ))
        .await?;
    conn.close().await?;
    let targets = rows
        .iter()
        .map(|r| {
            Ok(Target {
                conversation_id: r.try_get("", "conversation_id")?,
                client_id: r.try_get("", "client_id")?,
                phone: r.try_get("", "phone")?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!targets.is_empty(), "no open conversation with a phone in business {business_id}");
    Ok(targets)
}

// The statements, PostgreSQL's placeholders; SQLite reads `?N` for `$N`.
const MESSAGE_SQL: &str = "INSERT INTO messages (public_id, business_id, conversation_id, client_id, channel, \
     direction, sender_type, content, request_id, provider, provider_message_id, status, status_updated_at, \
     attempt_count, created_at, from_address) \
     VALUES ($1, $2, $3, $4, 'SMS', 'INBOUND', 'client', $5, $6, 'twilio', $7, 'RECEIVED', $8, 0, $8, $9)";
const CONVERSATION_SQL: &str = "UPDATE conversations SET channel_mask = channel_mask | 1, last_message_at = $1, \
     last_message_preview = $2, last_message_channel = 'SMS', last_message_direction = 'INBOUND', \
     last_activity_at = $1, updated_at = $1, unread_count = unread_count + 1 WHERE id = $3";
const EVENT_SQL: &str = "INSERT INTO conversation_events (business_id, conversation_id, kind, data, created_at) \
     VALUES ($1, $2, 'message.received', $3, $4)";

/// One message's values, the same whichever database stores them.
struct Row {
    public_id: String,
    content: String,
    request_id: String,
    provider_message_id: String,
    event_data: String,
    now: chrono::DateTime<chrono::Utc>,
}

impl Row {
    fn new(i: usize, run: &str) -> Self {
        let public_id = uuid::Uuid::now_v7().to_string();
        Self {
            event_data: serde_json::json!({ "message_id": public_id, "channel": "SMS" }).to_string(),
            public_id,
            content: format!("Can I move my massage to {} pm tomorrow?", 1 + i % 9),
            request_id: uuid::Uuid::new_v4().to_string(),
            provider_message_id: format!("SMlimit{run}{i:020}"),
            now: chrono::Utc::now(),
        }
    }
}

pub enum Limit {
    Sqlite(Arc<std::sync::Mutex<rusqlite::Connection>>),
    Postgres(Vec<Arc<tokio::sync::Mutex<PgConnection>>>),
}

impl Limit {
    /// Opens the connections (outside the timing): one SQLite writer, or `concurrency`
    /// PostgreSQL connections.
    pub async fn open(db: &BenchDb, concurrency: usize) -> anyhow::Result<Self> {
        match db.backend {
            Backend::Sqlite => {
                let path = db.url.strip_prefix("sqlite://").unwrap_or(&db.url);
                let path = path.split('?').next().unwrap_or(path);
                let conn = rusqlite::Connection::open(path)?;
                let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
                anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "SQLite journal mode {mode}, not WAL");
                conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
                conn.busy_timeout(Duration::from_secs(5))?;
                Ok(Self::Sqlite(Arc::new(std::sync::Mutex::new(conn))))
            }
            Backend::Postgres => {
                let mut connections = Vec::new();
                for _ in 0..concurrency {
                    connections.push(Arc::new(tokio::sync::Mutex::new(PgConnection::connect(&db.url).await?)));
                }
                Ok(Self::Postgres(connections))
            }
        }
    }

    /// Stores messages `range` (message i to `targets[i % len]`), one transaction each; answers
    /// the elapsed time.
    pub async fn store(
        &self,
        targets: Arc<Vec<Target>>,
        business_id: i64,
        range: Range<usize>,
        run: &str,
    ) -> anyhow::Result<Duration> {
        let run = run.to_owned();
        match self {
            Self::Sqlite(conn) => {
                let conn = conn.clone();
                tokio::task::spawn_blocking(move || -> anyhow::Result<Duration> {
                    let mut conn = conn.lock().map_err(|_| anyhow::anyhow!("the SQLite writer panicked"))?;
                    let (message, conversation, event) = (
                        MESSAGE_SQL.replace('$', "?"),
                        CONVERSATION_SQL.replace('$', "?"),
                        EVENT_SQL.replace('$', "?"),
                    );
                    let started = Instant::now();
                    for i in range {
                        let target = &targets[i % targets.len()];
                        let row = Row::new(i, &run);
                        // As sqlx stores a chrono time in SQLite (Omega's rows), RFC 3339 text.
                        let now = row.now.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false);
                        let txn = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                        txn.prepare_cached(&message)?.execute(rusqlite::params![
                            row.public_id,
                            business_id,
                            target.conversation_id,
                            target.client_id,
                            row.content,
                            row.request_id,
                            row.provider_message_id,
                            now,
                            target.phone,
                        ])?;
                        txn.prepare_cached(&conversation)?.execute(rusqlite::params![
                            now,
                            row.content,
                            target.conversation_id
                        ])?;
                        txn.prepare_cached(&event)?.execute(rusqlite::params![
                            business_id,
                            target.conversation_id,
                            row.event_data,
                            now
                        ])?;
                        txn.commit()?;
                    }
                    Ok(started.elapsed())
                })
                .await?
            }
            Self::Postgres(connections) => {
                let next = Arc::new(AtomicUsize::new(range.start));
                let started = Instant::now();
                let mut tasks = tokio::task::JoinSet::new();
                for conn in connections {
                    let (conn, next, targets, run, end) =
                        (conn.clone(), next.clone(), targets.clone(), run.clone(), range.end);
                    tasks.spawn(async move {
                        let mut conn = conn.lock().await;
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= end {
                                return anyhow::Ok(());
                            }
                            let target = &targets[i % targets.len()];
                            let row = Row::new(i, &run);
                            let mut txn = conn.begin().await?;
                            sqlx::query(MESSAGE_SQL)
                                .bind(&row.public_id)
                                .bind(business_id)
                                .bind(target.conversation_id)
                                .bind(target.client_id)
                                .bind(&row.content)
                                .bind(&row.request_id)
                                .bind(&row.provider_message_id)
                                .bind(row.now)
                                .bind(&target.phone)
                                .execute(&mut *txn)
                                .await?;
                            sqlx::query(CONVERSATION_SQL)
                                .bind(row.now)
                                .bind(&row.content)
                                .bind(target.conversation_id)
                                .execute(&mut *txn)
                                .await?;
                            sqlx::query(EVENT_SQL)
                                .bind(business_id)
                                .bind(target.conversation_id)
                                .bind(&row.event_data)
                                .bind(row.now)
                                .execute(&mut *txn)
                                .await?;
                            txn.commit().await?;
                        }
                    });
                }
                while let Some(result) = tasks.join_next().await {
                    result??;
                }
                Ok(started.elapsed())
            }
        }
    }
}
