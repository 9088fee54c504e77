//! Persistence: the sea-orm connection, its error type, and one module of queries per aggregate
//! (messages, the outbox, conversations, …). Where SQLite and PostgreSQL need different
//! statements, those modules call into [`dialect`], which holds every backend-specific one.
//! Every query that touches business data takes the caller's business scope as a parameter.

pub mod api_keys;
pub mod attachments;
pub mod attempts;
pub mod calls;
pub mod chat;
pub mod conversations;
pub mod dialect;
pub mod directory;
pub mod entity;
pub mod events;
mod group_commit;
pub mod inbound_email;
pub mod messages;
pub mod outbox;
pub mod pacing;
pub mod provider_credentials;
pub mod search;
pub mod sessions;
#[cfg(test)]
mod suite;
pub mod webhook_endpoints;
pub mod webhook_events;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use omega_migrations::MigratorTrait;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, RuntimeErr, SqlErr, Statement};

/// Makes a SQLite connection plan each statement once, whatever values are bound to it (SQLite's
/// query planner stability guarantee). Without it, once `ANALYZE` has left STAT4 samples (this
/// SQLite is built with STAT4), every cached statement that compares an indexed column with a
/// bound value is parsed and planned again at every call: a fifth of the CPU of an ingest
/// (benchmark P1, 1,230–1,300 msg/s against 1,570–1,750 without the samples). Omega's
/// statements look rows up by key, where the values cannot change the best plan. sqlx has no
/// option for it, and SQLite no pragma: `sqlite3_db_config` on the connection's handle.
fn plan_once(
    conn: &mut sea_orm::sqlx::SqliteConnection,
) -> std::pin::Pin<Box<dyn Future<Output = Result<(), sea_orm::sqlx::Error>> + Send + '_>> {
    Box::pin(async move {
        let mut handle = conn.lock_handle().await?;
        let mut enabled: std::ffi::c_int = -1;
        // SAFETY: the handle is an open connection, locked for this call. The option's documented
        // arguments are an int (1: enable) and an int* that receives the setting now in force.
        let rc = unsafe {
            libsqlite3_sys::sqlite3_db_config(
                handle.as_raw_handle().as_ptr(),
                libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
                1 as std::ffi::c_int,
                &mut enabled as *mut std::ffi::c_int,
            )
        };
        if rc != libsqlite3_sys::SQLITE_OK || enabled != 1 {
            return Err(sea_orm::sqlx::Error::Configuration(
                format!("SQLite refused the query planner stability guarantee (code {rc})").into(),
            ));
        }
        Ok(())
    })
}

/// The store layer's one error type.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached (connection refused, dropped, pool exhausted).
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),
    /// The server could not be reached at start-up; the cause is the connection's own error
    /// ("Connection refused", a failed name lookup, a refused password), not the pool's timeout.
    #[error("cannot reach the database: {0}")]
    Unreachable(String),
    /// A unique constraint rejected the write.
    #[error("unique constraint violated")]
    UniqueViolation(#[source] DbErr),
    /// A configuration or usage error found before reaching the database.
    #[error("{0}")]
    Config(String),
    /// The SQLite file was deleted or moved while Omega had it open: writes would go to an
    /// unlinked file and be lost.
    #[error("the database file {0} no longer exists")]
    FileGone(String),
    #[error("database error")]
    Other(#[source] DbErr),
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
            return StoreError::UniqueViolation(err);
        }
        if is_connectivity(&err) {
            return StoreError::Unavailable(err);
        }
        StoreError::Other(err)
    }
}

/// Whether the error means "cannot talk to the database" rather than "the query was wrong".
fn is_connectivity(err: &DbErr) -> bool {
    let runtime = match err {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(e) | DbErr::Exec(e) | DbErr::Query(e) => e,
        _ => return false,
    };
    let RuntimeErr::SqlxError(sqlx_err) = runtime else {
        return false;
    };
    use sea_orm::sqlx::Error as Sqlx;
    match sqlx_err.as_ref() {
        Sqlx::Io(_) | Sqlx::Tls(_) | Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::WorkerCrashed => true,
        // PostgreSQL: class 08 (connection exception), 57P0x (server shutting down / terminated
        // the session), 3D000 (the database does not exist).
        Sqlx::Database(db) => {
            db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P") || code == "3D000")
        }
        _ => false,
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A LIKE pattern matching `text` anywhere, its wildcards taken literally (escaped with `!`).
pub(crate) fn contains_pattern(text: &str) -> sea_orm::sea_query::LikeExpr {
    let escaped = text.replace('!', "!!").replace('%', "!%").replace('_', "!_");
    sea_orm::sea_query::LikeExpr::new(format!("%{escaped}%")).escape('!')
}

/// How many rows `select` matches, counting no further than `cap`: (count, whether it stopped
/// at the cap). At a million rows an exact count costs more than the page it goes with.
pub(crate) async fn count_capped<E: sea_orm::EntityTrait>(
    conn: &impl ConnectionTrait,
    select: sea_orm::Select<E>,
    cap: u64,
) -> StoreResult<(u64, bool)> {
    use sea_orm::{
        FromQueryResult, QuerySelect, QueryTrait,
        sea_query::{Expr, Query},
    };
    #[derive(FromQueryResult)]
    struct Count {
        n: i64,
    }
    let matches = select.select_only().expr(Expr::val(1)).limit(cap + 1).into_query();
    let count = Query::select().expr_as(Expr::cust("COUNT(*)"), "n").from_subquery(matches, "capped").to_owned();
    let backend = conn.get_database_backend();
    let n = Count::find_by_statement(backend.build(&count)).one(conn).await?.map_or(0, |c| c.n as u64);
    Ok((std::cmp::min(n, cap), n > cap))
}

/// The `id` column of every row `statement` answers, in its order.
pub(crate) async fn ids_of(conn: &impl ConnectionTrait, statement: Statement) -> StoreResult<Vec<i64>> {
    use sea_orm::FromQueryResult;
    #[derive(FromQueryResult)]
    struct Id {
        id: i64,
    }
    Ok(Id::find_by_statement(statement).all(conn).await?.into_iter().map(|r| r.id).collect())
}

/// Connections a process opens at most unless configured (`OMEGA_DATABASE_MAX_CONNECTIONS`).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// A write transaction on SQLite's one writer, taking the write lock at `BEGIN IMMEDIATE`.
async fn begin_immediate(writer: &DatabaseConnection) -> StoreResult<sea_orm::DatabaseTransaction> {
    use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
    Ok(writer
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await?)
}

/// A handle to Omega's database; cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// PostgreSQL: the pool for statements whose plan does not depend on their values (see
    /// [`Store::keyed`]).
    keyed: Option<DatabaseConnection>,
    /// SQLite only: one connection that every write transaction goes through. SQLite admits one
    /// writer at a time; queueing writers here (FIFO, no sleeping) instead of letting them meet
    /// in the file lock's busy-wait backoff more than doubles the rate of writes under load.
    writer: Option<DatabaseConnection>,
    /// The file behind a SQLite database, checked by [`Store::ping`].
    sqlite_path: Option<PathBuf>,
    /// Tells readers of the event log to read again.
    events: std::sync::Arc<events::EventWakeups>,
    /// The shared readers of the log that live streams take their events from.
    feeds: std::sync::Arc<events::EventFeeds>,
    /// PostgreSQL: tells other replicas' readers (see [`events::announcer`]).
    announce: Option<tokio::sync::mpsc::UnboundedSender<Option<i64>>>,
    /// The committers that group concurrent ingests into shared transactions.
    group_writes: tokio::sync::mpsc::UnboundedSender<group_commit::Write>,
    /// Keys that authenticated recently (see [`api_keys::KeyCache`]).
    key_cache: std::sync::Arc<api_keys::KeyCache>,
}

impl Store {
    /// Connects to `url` (`sqlite://PATH?mode=rwc` or `postgres://…`). For SQLite the parent
    /// directory is created, and the connection runs in WAL mode with a busy timeout so that
    /// readers never block the writer.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// [`Store::connect`] with at most `max_connections` connections: PostgreSQL's pool, or
    /// SQLite's readers (its writer is one more).
    pub async fn connect_with(url: &str, max_connections: u32) -> StoreResult<Self> {
        if let Some(path) = sqlite_file(url)
            && let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Config(format!("cannot create the database directory {}: {e}", dir.display()))
            })?;
        }
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .sqlx_logging(false)
            // Without it, sea-orm gives SQLite one connection: every read of every request took
            // turns on it, and ingest waited for reads with a core idle (benchmark P1).
            .max_connections(max_connections)
            // A request against a dead database answers 503 within about a second instead of
            // waiting out long timeouts; a healthy pool hands out connections in microseconds.
            .connect_timeout(Duration::from_secs(1))
            .acquire_timeout(Duration::from_secs(1))
            .map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
            })
            .map_sqlx_sqlite_pool_opts(|pool| pool.after_connect(|conn, _| plan_once(conn)))
            // PostgreSQL: no JIT compilation. It starts above a plan's estimated cost, and the
            // estimate of a word the statistics have not seen is far off: a business search
            // for a rare word (0.07 ms of work at 10M messages) spent 19–60 ms compiling.
            .map_sqlx_postgres_opts(|opts| opts.options([("jit", "off")]));
        // PostgreSQL: lookups by key and the ingest's write keep PostgreSQL's plan caching, so
        // that a prepared statement's generic plan saves planning it at every call (planning
        // was a quarter of an ingest's cost, benchmark P1). Lazily opened, like the other pool.
        let keyed_options = sqlite_file(url).is_none().then(|| options.clone());
        // Everything else is planned for the values at hand: a generic plan cannot tell a word
        // in a million messages from one in ten, and chose bitmap ANDs over the right index
        // (benchmark P3); the inbox's filters are as skewed.
        // (The map replaces the one above, so it names `jit` again.)
        options.map_sqlx_postgres_opts(|opts| opts.options([("jit", "off"), ("plan_cache_mode", "force_custom_plan")]));
        let writer = if sqlite_file(url).is_some() {
            let mut writer = options.clone();
            writer.max_connections(1).min_connections(1).acquire_timeout(Duration::from_secs(30));
            Some(Database::connect(writer).await?)
        } else {
            None
        };
        // With a writer, the pool only reads, and SQLite enforces it: a write that bypassed the
        // writer would fail at once in every test instead of meeting SQLITE_BUSY under load.
        if writer.is_some() {
            options.map_sqlx_sqlite_opts(|opts| opts.read_only(true));
        }
        let db = match Database::connect(options).await {
            Ok(db) => db,
            Err(err) => return Err(explain_connect_failure(url, err).await),
        };
        let keyed = match keyed_options {
            Some(options) => match Database::connect(options).await {
                Ok(keyed) => Some(keyed),
                Err(err) => return Err(explain_connect_failure(url, err).await),
            },
            None => None,
        };
        // The announcement's statement is the same whatever it announces: the keyed pool.
        let announce = dialect::announces_commits(db.get_database_backend())
            .then(|| events::announcer(keyed.clone().unwrap_or_else(|| db.clone())));
        let events = std::sync::Arc::<events::EventWakeups>::default();
        let feeds = std::sync::Arc::new(events::EventFeeds::new(db.clone(), events.clone()));
        // SQLite's one writer; PostgreSQL's keyed pool (the ingest's write keeps its plan).
        let group_writes = group_commit::start(
            writer.clone().or_else(|| keyed.clone()).unwrap_or_else(|| db.clone()),
            max_connections,
        );
        // Used only once a listener hears every process's revocations (`events::listen`, on
        // PostgreSQL): on SQLite an `omega keys revoke` run beside the server would go unheard.
        let key_cache = std::sync::Arc::<api_keys::KeyCache>::default();
        Ok(Self {
            db,
            keyed,
            writer,
            sqlite_path: sqlite_file(url).map(PathBuf::from),
            events,
            feeds,
            announce,
            group_writes,
            key_cache,
        })
    }

    /// The pool for reads. Writes go through [`Store::writer`] or [`Store::begin`].
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The pool for lookups by key (a row by its id or unique key) and the common ingest's write:
    /// statements whose best plan is the same whatever their values. On PostgreSQL their
    /// sessions keep the server's plan caching; [`Store::connection`]'s plan every call for its
    /// values. SQLite plans in-process: the read pool.
    pub fn keyed(&self) -> &DatabaseConnection {
        self.keyed.as_ref().unwrap_or(&self.db)
    }

    /// The connection a single write outside a transaction goes through: on SQLite the one
    /// writer, so that it queues behind the transactions instead of racing them for the file
    /// lock (SQLITE_BUSY); the pool on PostgreSQL. Never call it while holding a transaction
    /// from [`Store::begin`] on the same task: on SQLite that waits for itself.
    pub fn writer(&self) -> &DatabaseConnection {
        self.writer.as_ref().unwrap_or(&self.db)
    }

    /// Starts a transaction: the domain runs a change and its event-log rows through it. On
    /// SQLite it runs on the one writer and takes the write lock at `BEGIN IMMEDIATE`: a deferred
    /// transaction that reads first and then writes fails at once with SQLITE_BUSY (no busy
    /// wait) if another connection committed in between.
    pub async fn begin(&self) -> StoreResult<sea_orm::DatabaseTransaction> {
        use sea_orm::TransactionTrait;
        match &self.writer {
            Some(writer) => begin_immediate(writer).await,
            None => Ok(self.db.begin().await?),
        }
    }

    /// Writes a [`dialect::GuardedWrite`] all or nothing, in a committer's next group (see
    /// [`group_commit`]); `None` (nothing written) when the guard refuses.
    pub(crate) async fn write_grouped(
        &self,
        write: dialect::GuardedWrite,
    ) -> StoreResult<Option<entity::message::Model>> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let write = group_commit::Write { write, reply };
        let stopped = || StoreError::Other(DbErr::Custom("the group committer has stopped".into()));
        self.group_writes.send(write).map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    /// `writes` as one group of the committers (whatever else waits), on the committers'
    /// connection: what a test needs to know a group's outcome without relying on timing.
    #[cfg(test)]
    pub(crate) async fn write_as_one_group(
        &self,
        writes: Vec<dialect::GuardedWrite>,
    ) -> StoreResult<Vec<StoreResult<Option<entity::message::Model>>>> {
        let group: Vec<group_commit::Write> = writes
            .into_iter()
            .map(|write| group_commit::Write { write, reply: tokio::sync::oneshot::channel().0 })
            .collect();
        // SQLite's one writer, PostgreSQL's keyed pool: the connection `connect_with` gives them.
        let db = self.writer.as_ref().unwrap_or_else(|| self.keyed());
        group_commit::write_group(db, &group).await
    }

    /// Call after committing a transaction that may have appended to the event log (of
    /// `business_id`, or None when unknown): readers in this process read again at once, and
    /// on PostgreSQL those of the other replicas soon after.
    pub fn wake_event_readers(&self, business_id: Option<i64>) {
        self.events.wake(business_id);
        if let Some(announce) = &self.announce {
            let _ = announce.send(business_id);
        }
    }

    pub fn key_cache(&self) -> &std::sync::Arc<api_keys::KeyCache> {
        &self.key_cache
    }

    pub fn event_wakeups(&self) -> &std::sync::Arc<events::EventWakeups> {
        &self.events
    }

    /// How many of each business's latest events its live streams' feed keeps in memory.
    pub fn keep_event_feed_rows(&self, rows: usize) {
        self.feeds.keep_rows(rows);
    }

    /// The business's shared reader of the log (see [`events::Feed`]).
    pub fn event_feed(&self, business_id: i64) -> std::sync::Arc<events::Feed> {
        self.feeds.feed(business_id)
    }

    /// "sqlite" or "postgresql".
    pub fn engine(&self) -> &'static str {
        dialect::engine_name(self.db.get_database_backend())
    }

    /// Applies every pending migration; safe to run on every start and from several replicas.
    pub async fn migrate(&self) -> StoreResult<()> {
        omega_migrations::Migrator::up(self.writer(), None).await?;
        Ok(())
    }

    /// One real round trip that reads a table, so that a missing or corrupt database fails
    /// (a bare `SELECT 1` would succeed on SQLite without touching the file). For SQLite the
    /// file must also still exist: open connections keep working on a deleted file.
    pub async fn ping(&self) -> StoreResult<()> {
        if let Some(path) = &self.sqlite_path
            && !tokio::fs::try_exists(path).await.unwrap_or(false)
        {
            return Err(StoreError::FileGone(path.display().to_string()));
        }
        let backend = self.db.get_database_backend();
        self.db.query_one_raw(Statement::from_string(backend, "SELECT COUNT(*) AS n FROM seaql_migrations")).await?;
        Ok(())
    }

    pub async fn close(self) {
        if let Some(writer) = self.writer {
            let _ = writer.close().await;
        }
        if let Some(keyed) = self.keyed {
            let _ = keyed.close().await;
        }
        let _ = self.db.close().await;
    }
}

/// The pool reports only that it timed out waiting for a connection; one direct connection
/// attempt tells why (refused, unknown host, authentication), which is what an operator needs.
async fn explain_connect_failure(url: &str, err: DbErr) -> StoreError {
    use sea_orm::sqlx::{Connection, PgConnection};
    if !is_connectivity(&err) || !(url.starts_with("postgres:") || url.starts_with("postgresql:")) {
        return err.into();
    }
    match tokio::time::timeout(Duration::from_secs(2), PgConnection::connect(url)).await {
        Ok(Err(cause)) => StoreError::Unreachable(cause.to_string()),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            err.into()
        }
        Err(_) => StoreError::Unreachable("no answer within 2 s".into()),
    }
}

/// The file path of a `sqlite:` URL, if it names a file (not `:memory:`).
pub(crate) fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then_some(path)
}

#[cfg(test)]
mod tests {
    use super::sqlite_file;

    #[test]
    fn sqlite_file_is_taken_from_the_url() {
        assert_eq!(sqlite_file("sqlite://data/omega.db?mode=rwc"), Some("data/omega.db"));
        assert_eq!(sqlite_file("sqlite:///tmp/x.db"), Some("/tmp/x.db"));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://localhost/db"), None);
    }

    /// The reader pool and the writer both run with the query planner stability guarantee.
    #[tokio::test]
    async fn every_sqlite_connection_plans_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/omega.db?mode=rwc", dir.path().display());
        let store = super::Store::connect_with(&url, 2).await.unwrap();
        for db in [store.connection(), store.writer()] {
            let mut conn = db.get_sqlite_connection_pool().acquire().await.unwrap();
            let mut handle = conn.lock_handle().await.unwrap();
            let mut enabled: std::ffi::c_int = -1;
            // SAFETY: as in `plan_once`; -1 reads the setting without changing it.
            let rc = unsafe {
                libsqlite3_sys::sqlite3_db_config(
                    handle.as_raw_handle().as_ptr(),
                    libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
                    -1 as std::ffi::c_int,
                    &mut enabled as *mut std::ffi::c_int,
                )
            };
            assert_eq!((rc, enabled), (libsqlite3_sys::SQLITE_OK, 1));
        }
    }
}
