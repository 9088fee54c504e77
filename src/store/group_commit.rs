//! SQLite's group commit for the common ingest (a message into an existing conversation, see
//! [`super::messages::insert_into_conversation_unless`]).
//!
//! SQLite has one writer, so concurrent ingests used to queue for it one transaction each, and
//! most of each transaction's time on the writer was the hops between the async caller and the
//! connection's thread (BEGIN, the statements, COMMIT), not SQLite's work: the writer sat idle
//! between statements while the machine had CPU to spare. Here one task owns those writes and
//! commits whatever queued up while its last transaction ran as one transaction. Nothing waits
//! to fill a group, so a lone ingest commits as soon as it arrives; a caller hears back only once
//! its group has committed, so grouping never answers for a write that is not durable.
//!
//! A write that cannot be made (its conversation no longer passes the guard, a repeated provider
//! id) fails at its first statement, the message's guarded insert, which SQLite undoes alone
//! while the transaction and the others' writes go on. If the group itself fails (its BEGIN, an
//! unexpected error, its COMMIT), each write is tried again alone, so every caller gets its own
//! write's outcome and never a neighbour's error.

use sea_orm::{DatabaseConnection, DatabaseTransaction, EntityTrait, FromQueryResult};
use tokio::sync::{mpsc, oneshot};

use super::{
    StoreError, StoreResult,
    dialect::{self, GuardedWrite, WriteTarget},
    entity::message,
};

/// The most writes one transaction takes; the rest wait for the next one. Bounds how long the
/// writer is held from the other transactions queued for it.
const MAX_GROUP: usize = 64;

/// One ingest's writes and where its outcome goes.
pub(super) struct Write {
    pub write: GuardedWrite,
    pub reply: oneshot::Sender<StoreResult<Option<message::Model>>>,
}

/// Starts the committer on `writer`; it ends when every sender is gone.
pub(super) fn start(writer: DatabaseConnection) -> mpsc::UnboundedSender<Write> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            while group.len() < MAX_GROUP
                && let Ok(next) = rx.try_recv()
            {
                group.push(next);
            }
            commit(&writer, group).await;
        }
    });
    tx
}

async fn commit(writer: &DatabaseConnection, group: Vec<Write>) {
    match write_group(writer, &group).await {
        Ok(outcomes) => {
            for (write, outcome) in group.into_iter().zip(outcomes) {
                let _ = write.reply.send(outcome);
            }
        }
        Err(err) => {
            if group.len() > 1 {
                tracing::warn!(error = %err, writes = group.len(), "group commit failed; writing each alone");
            }
            for write in group {
                let outcome = write_group(writer, std::slice::from_ref(&write))
                    .await
                    .and_then(|mut outcomes| outcomes.pop().unwrap_or(Ok(None)));
                let _ = write.reply.send(outcome);
            }
        }
    }
}

/// The writes of `group` in one transaction, and each one's own outcome, in the group's order.
async fn write_group(
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
    let statement = dialect::guarded_write(write, target);
    match message::Entity::find().from_raw_sql(statement).all(txn).await.map_err(StoreError::from) {
        Ok(mut stored) => Ok(Ok(stored.pop())),
        Err(err @ StoreError::UniqueViolation(_)) => Ok(Err(err)),
        Err(err) => Err(err),
    }
}
