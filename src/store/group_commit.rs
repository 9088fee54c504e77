//! Group commit for the common ingest (a message into an existing conversation, see
//! [`super::messages::insert_into_conversation_unless`]): concurrent ingests share one
//! transaction. Nothing waits to fill a group, so a lone ingest commits as soon as it arrives;
//! a caller hears back only once its group has committed, so grouping never answers for a write
//! that is not durable, and a crash leaves uncertain only writes whose callers heard nothing.
//!
//! SQLite has one writer, so concurrent ingests used to queue for it one transaction each, and
//! most of each transaction's time on the writer was the hops between the async caller and the
//! connection's thread (BEGIN, the statements, COMMIT), not SQLite's work: the writer sat idle
//! between statements while the machine had CPU to spare. Here one task owns those writes and
//! commits whatever queued up while its last transaction ran as one transaction. A write that
//! cannot be made (its conversation no longer passes the guard, a repeated provider id) fails at
//! its first statement, the message's guarded insert, which SQLite undoes alone while the
//! transaction and the others' writes go on.
//!
//! PostgreSQL: each ingest was one statement committed alone, and under load the commits cost
//! the server more than the statements (benchmark P1: its CPU per message rose as fewer commits
//! shared a WAL flush). A few committers per process, each on a pooled connection, take turns
//! at the queue: each takes whatever waits there and writes it, while the others write theirs.
//! The group's writes go in as one statement (one per shape of write, in one transaction when
//! there are several; see [`dialect::guarded_writes`]), which finds their conversations, locks
//! them in id order, updates each once for all of its messages and inserts the messages and
//! their events: PostgreSQL's per-statement work, the round trips and the commit are paid once
//! per group, not per message (a lone write takes a simpler statement, cheaper for one).
//! Any failed statement aborts a PostgreSQL transaction, so a group with a repeated provider id
//! is written again write by write. Conversations are locked in one order within a statement,
//! so two groups (of this process or another replica) meeting at the same conversations queue
//! for them instead of deadlocking; a group of writes of two shapes locks in two runs, and can
//! still deadlock with another such group; PostgreSQL then aborts one of them, whose writes are
//! tried again alone like any failed group.
//!
//! If a group fails (its BEGIN, an error, its COMMIT), each write is tried again alone, so every
//! caller gets its own write's outcome and never a neighbour's error; unless the database could
//! not be reached, which every caller hears (a COMMIT cut off may have stored the group).

use std::sync::Arc;

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, FromQueryResult, TransactionTrait};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{
    StoreError, StoreResult,
    dialect::{self, Dialect, GuardedWrite, WriteTarget},
    entity::message,
};

/// The most writes one transaction takes; the rest wait for the next one. Bounds how long the
/// writer is held from the other transactions queued for it.
const MAX_GROUP: usize = 64;

/// PostgreSQL's committers per process: while one waits for its commit to be flushed, another
/// writes. More would split the same load into smaller groups (more commits per message). At
/// most half the pool, so that a small pool still has connections for the lookups.
const POSTGRES_COMMITTERS: usize = 4;

/// One ingest's writes and where its outcome goes.
pub(super) struct Write {
    pub write: GuardedWrite,
    pub reply: oneshot::Sender<StoreResult<Option<message::Model>>>,
}

/// Starts the committers on `db` (SQLite's one writer, or a PostgreSQL pool of `pool_size`
/// connections); they end when every sender is gone.
pub(super) fn start(db: DatabaseConnection, pool_size: u32) -> mpsc::UnboundedSender<Write> {
    let committers = match Dialect::of_conn(&db) {
        Dialect::Sqlite => 1,
        Dialect::Postgres => POSTGRES_COMMITTERS.min(pool_size as usize / 2).max(1),
    };
    let (tx, rx) = mpsc::unbounded_channel::<Write>();
    // The committer holding the queue takes the next group; the others are writing theirs.
    let queue = Arc::new(Mutex::new(rx));
    for _ in 0..committers {
        let (db, queue) = (db.clone(), queue.clone());
        tokio::spawn(async move {
            loop {
                let group = {
                    let mut rx = queue.lock().await;
                    let Some(first) = rx.recv().await else { return };
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP
                        && let Ok(next) = rx.try_recv()
                    {
                        group.push(next);
                    }
                    group
                };
                commit(&db, group).await;
            }
        });
    }
    tx
}

async fn commit(db: &DatabaseConnection, group: Vec<Write>) {
    match write_group(db, &group).await {
        Ok(outcomes) => {
            for (write, outcome) in group.into_iter().zip(outcomes) {
                let _ = write.reply.send(outcome);
            }
        }
        Err(StoreError::Unavailable(cause)) if group.len() > 1 => {
            // The line to the database broke, or never opened; if it broke during COMMIT the
            // group may even be stored. Writing each again alone would wait out the outage once
            // per write and could store a write twice: each caller hears that the database was
            // unavailable, as a lone write's caller would.
            tracing::warn!(error = %cause, writes = group.len(), "group commit: database unavailable");
            let cause = cause.to_string();
            for write in group {
                let _ = write.reply.send(Err(StoreError::Unavailable(sea_orm::DbErr::Custom(cause.clone()))));
            }
        }
        Err(err) => {
            if group.len() > 1 {
                tracing::warn!(error = %err, writes = group.len(), "group commit failed; writing each alone");
            }
            for write in group {
                let outcome = write_group(db, std::slice::from_ref(&write))
                    .await
                    .and_then(|mut outcomes| outcomes.pop().unwrap_or(Ok(None)));
                let _ = write.reply.send(outcome);
            }
        }
    }
}

/// The writes of `group` in one transaction, and each one's own outcome, in the group's order.
pub(super) async fn write_group(
    db: &DatabaseConnection,
    group: &[Write],
) -> StoreResult<Vec<StoreResult<Option<message::Model>>>> {
    match Dialect::of_conn(db) {
        Dialect::Sqlite => write_sqlite_group(db, group).await,
        Dialect::Postgres => write_postgres_group(db, group).await,
    }
}

/// PostgreSQL: the group's writes of one shape (usually all of them) are one statement that
/// finds their conversations ([`dialect::guarded_writes`]); a statement is all or nothing by
/// itself, so a group of one shape needs no BEGIN and COMMIT. Groups of several shapes write
/// them in one transaction. The outer `Err` fails the group (a failed statement wrote nothing, or
/// aborted the transaction); a lone write's error is its own outcome.
async fn write_postgres_group(
    db: &DatabaseConnection,
    group: &[Write],
) -> StoreResult<Vec<StoreResult<Option<message::Model>>>> {
    if let [alone] = group {
        return Ok(vec![written(db, &[&alone.write]).await.map(|mut stored| stored.pop())]);
    }
    // One statement per shape, each in the group's order, the shapes in order of first appearance.
    let mut shapes: Vec<(dialect::WriteShape, Vec<&GuardedWrite>)> = Vec::new();
    for Write { write, .. } in group {
        let shape = dialect::WriteShape::of(write);
        match shapes.iter_mut().find(|(known, _)| *known == shape) {
            Some((_, writes)) => writes.push(write),
            None => shapes.push((shape, vec![write])),
        }
    }
    let mut stored: std::collections::HashMap<String, message::Model> = std::collections::HashMap::new();
    let mut keep = |rows: Vec<message::Model>| stored.extend(rows.into_iter().map(|row| (row.public_id.clone(), row)));
    if let [(_, writes)] = shapes.as_slice() {
        keep(written(db, writes).await?);
    } else {
        let txn = db.begin().await?;
        for (_, writes) in &shapes {
            keep(written(&txn, writes).await?);
        }
        txn.commit().await?;
    }
    // A write whose message is not among the rows wrote nothing (refused, or no such client).
    Ok(group
        .iter()
        .map(|Write { write, .. }| Ok(write.message.public_id.try_as_ref().and_then(|id| stored.remove(id))))
        .collect())
}

/// The messages `writes` (of one shape) stored, in one statement.
async fn written(conn: &impl ConnectionTrait, writes: &[&GuardedWrite]) -> StoreResult<Vec<message::Model>> {
    let statement = match writes {
        [alone] => dialect::guarded_write(alone)?,
        _ => dialect::guarded_writes(writes)?,
    };
    // Read as the entity's rows without building the entity's SELECT (`Entity::find()`), which
    // the raw statement would replace: ~50,000 instructions a statement (callgrind).
    messages_of(conn, statement).await
}

/// SQLite: the group's clients and conversations are found first, in the transaction on the
/// writer; then each write is one command to its conversation.
async fn write_sqlite_group(
    writer: &DatabaseConnection,
    group: &[Write],
) -> StoreResult<Vec<StoreResult<Option<message::Model>>>> {
    let txn = super::begin_immediate(writer).await?;
    let found = conversations_of(&txn, group).await?;
    // In conversation order (a conversation's own writes keep theirs): the conversation-keyed
    // search index (migration 24) then receives ascending keys, which FTS5 appends to one
    // pending segment; a key below the last one makes it write out what it holds first.
    let mut order: Vec<usize> = (0..group.len()).collect();
    order.sort_by_key(|&i| found[i].map(|(conversation_id, _)| conversation_id));
    let mut outcomes: Vec<StoreResult<Option<message::Model>>> = group.iter().map(|_| Ok(None)).collect();
    for i in order {
        // A client without a conversation (or none at all) writes nothing: the caller's own
        // transaction makes them.
        if let Some(target) = found[i] {
            outcomes[i] = write_one(&txn, &group[i].write, target).await?;
        }
    }
    txn.commit().await?;
    Ok(outcomes)
}

/// The (conversation, client) each write goes to, found in `txn`: writes named by their
/// client's identity are looked up together, one statement per identity column, on the writer
/// (whose page cache every commit leaves warm, where a reader's is dropped by each one).
async fn conversations_of(txn: &DatabaseTransaction, group: &[Write]) -> StoreResult<Vec<Option<(i64, i64)>>> {
    use super::entity::client;
    use sea_orm::IdenStatic;
    #[derive(FromQueryResult)]
    struct Found {
        at: i64,
        client_id: i64,
        conversation_id: i64,
    }
    let mut found: Vec<Option<(i64, i64)>> = group
        .iter()
        .map(|write| match write.write.target {
            WriteTarget::Conversation(id) => Some((id, write.write.message.client_id.try_as_ref().copied()?)),
            WriteTarget::Client { .. } => None,
        })
        .collect();
    // (the identity column, the write's position in the group, its business, the value)
    let mut named: Vec<(client::Column, usize, i64, &str)> = group
        .iter()
        .enumerate()
        .filter_map(|(i, write)| match &write.write.target {
            WriteTarget::Client { identity, value } => {
                let business_id = write.write.message.business_id.try_as_ref().copied().unwrap_or_default();
                Some((*identity, i, business_id, value.as_str()))
            }
            WriteTarget::Conversation(_) => None,
        })
        .collect();
    named.sort_by_key(|&(identity, i, ..)| (identity.as_str(), i));
    // One statement for each identity column the group names its clients by.
    for same in named.chunk_by(|a, b| a.0.as_str() == b.0.as_str()) {
        let clients: Vec<(i64, &str)> = same.iter().map(|&(_, _, business_id, value)| (business_id, value)).collect();
        let statement = dialect::clients_conversations_statement(same[0].0, &clients);
        for row in Found::find_by_statement(statement).all(txn).await? {
            if let Some(&(_, i, ..)) = usize::try_from(row.at).ok().and_then(|at| same.get(at)) {
                found[i] = Some((row.conversation_id, row.client_id));
            }
        }
    }
    Ok(found)
}

/// One write in `txn` to its (conversation, client), one command (see
/// [`dialect::guarded_write`]). The outer `Err` fails the whole transaction; the inner result
/// is this write's own outcome (`None`: the guard refused; a unique violation: a twin was stored
/// first), in which case nothing of it was written.
async fn write_one(
    txn: &DatabaseTransaction,
    write: &GuardedWrite,
    target: (i64, i64),
) -> StoreResult<StoreResult<Option<message::Model>>> {
    let statement = dialect::guarded_write_to(write, target);
    match messages_of(txn, statement).await {
        Ok(mut stored) => Ok(Ok(stored.pop())),
        Err(err @ StoreError::UniqueViolation(_)) => Ok(Err(err)),
        Err(err) => Err(err),
    }
}

/// The messages a write's statement answers (every column of `messages`, in the entity's
/// order), read with sqlx column by column instead of through the entity's derived reader: for
/// each NULL column that one builds a "null" error naming the column (`format!` of its name's
/// `Debug`) only for the `Option` reader to drop it, ~25 a message row, ~40,000 instructions a
/// row (callgrind).
async fn messages_of(conn: &impl ConnectionTrait, statement: sea_orm::Statement) -> StoreResult<Vec<message::Model>> {
    let rows = conn.query_all_raw(statement).await?;
    rows.iter().map(message_of).collect()
}

/// How a column of `messages` is read: by its entity column type.
#[derive(Clone, Copy)]
enum ColumnRead {
    Text,
    Int,
    BigInt,
    Timestamp,
}

/// `row` (a `messages` row: every column) as the entity's model.
fn message_of(row: &sea_orm::QueryResult) -> StoreResult<message::Model> {
    use sea_orm::{ColumnTrait, ColumnType, Iterable};
    static COLUMNS: std::sync::OnceLock<Option<Vec<(message::Column, ColumnRead)>>> = std::sync::OnceLock::new();
    let columns = COLUMNS.get_or_init(|| {
        message::Column::iter()
            .map(|column| {
                let read = match column.def().get_column_type() {
                    ColumnType::String(_) | ColumnType::Text => ColumnRead::Text,
                    ColumnType::Integer => ColumnRead::Int,
                    ColumnType::BigInteger => ColumnRead::BigInt,
                    ColumnType::TimestampWithTimeZone => ColumnRead::Timestamp,
                    _ => return None,
                };
                Some((column, read))
            })
            .collect()
    });
    match (columns, row.try_as_pg_row(), row.try_as_sqlite_row()) {
        (Some(columns), Some(row), _) => model_of(columns, row),
        (Some(columns), None, Some(row)) => model_of(columns, row),
        // A column of a type not read here, or another driver's row: the entity's own reader.
        _ => Ok(message::Model::from_query_result(row, "")?),
    }
}

/// The model of `row`, its `columns` read as each says: the column at a column's position when
/// it is the one named (the statements list every column in the entity's order), else the one
/// of its name.
fn model_of<R>(columns: &[(message::Column, ColumnRead)], row: &R) -> StoreResult<message::Model>
where
    R: sea_orm::sqlx::Row,
    for<'a> &'a str: sea_orm::sqlx::ColumnIndex<R>,
    usize: sea_orm::sqlx::ColumnIndex<R>,
    for<'r> String: sea_orm::sqlx::Decode<'r, R::Database> + sea_orm::sqlx::Type<R::Database>,
    for<'r> i32: sea_orm::sqlx::Decode<'r, R::Database> + sea_orm::sqlx::Type<R::Database>,
    for<'r> i64: sea_orm::sqlx::Decode<'r, R::Database> + sea_orm::sqlx::Type<R::Database>,
    for<'r> chrono::DateTime<chrono::Utc>: sea_orm::sqlx::Decode<'r, R::Database> + sea_orm::sqlx::Type<R::Database>,
{
    use sea_orm::{ActiveModelTrait, IdenStatic, TryIntoModel, Value, sqlx::Column as _};
    let mut model = <message::ActiveModel as Default>::default();
    for (index, &(column, read)) in columns.iter().enumerate() {
        let name = column.as_str();
        let value = (|| {
            let at = match row.columns().get(index) {
                Some(there) if there.name() == name => index,
                _ => row.try_column(name)?.ordinal(),
            };
            Ok::<_, sea_orm::sqlx::Error>(match read {
                ColumnRead::Text => Value::String(row.try_get::<Option<String>, _>(at)?),
                ColumnRead::Int => Value::Int(row.try_get::<Option<i32>, _>(at)?),
                ColumnRead::BigInt => Value::BigInt(row.try_get::<Option<i64>, _>(at)?),
                ColumnRead::Timestamp => {
                    Value::ChronoDateTimeUtc(row.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>(at)?)
                }
            })
        })()
        .map_err(|err| StoreError::Other(sea_orm::DbErr::Custom(format!("messages.{name}: {err}"))))?;
        model.try_set(column, value)?;
    }
    Ok(model.try_into_model()?)
}
