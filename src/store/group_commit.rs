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

use sea_orm::{DatabaseConnection, DatabaseTransaction, EntityTrait};
use tokio::sync::{mpsc, oneshot};

use super::{
    StoreError, StoreResult,
    dialect::{self, GuardedWrite},
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

async fn commit(writer: &DatabaseConnection, mut group: Vec<Write>) {
    // In conversation order (a conversation's own writes keep theirs): the conversation-keyed
    // search index (migration 24) then receives ascending keys, which FTS5 appends to one
    // pending segment; a key below the last one makes it write out what it holds first.
    group.sort_by_key(|w| w.write.conversation_id);
    let attempt = async {
        let txn = super::begin_immediate(writer).await?;
        let mut outcomes = Vec::with_capacity(group.len());
        for write in &group {
            outcomes.push(write_one(&txn, &write.write).await?);
        }
        txn.commit().await?;
        StoreResult::Ok(outcomes)
    };
    match attempt.await {
        Ok(outcomes) => {
            for (write, outcome) in group.into_iter().zip(outcomes) {
                let _ = write.reply.send(outcome);
            }
        }
        Err(err) => {
            if group.len() > 1 {
                tracing::warn!(error = %err, writes = group.len(), "group commit failed; writing each alone");
            }
            for Write { write, reply } in group {
                let outcome = async {
                    let txn = super::begin_immediate(writer).await?;
                    let outcome = write_one(&txn, &write).await?;
                    txn.commit().await?;
                    Ok(outcome)
                }
                .await
                .and_then(|outcome| outcome);
                let _ = reply.send(outcome);
            }
        }
    }
}

/// One write in `txn`, one command (see [`dialect::guarded_write`]). The outer `Err` fails the
/// whole transaction; the inner result is this write's own outcome (`None`: the guard refused; a
/// unique violation: a twin was stored first), in which case nothing of it was written.
async fn write_one(
    txn: &DatabaseTransaction,
    write: &GuardedWrite,
) -> StoreResult<StoreResult<Option<message::Model>>> {
    let statement = dialect::guarded_write(write);
    match message::Entity::find().from_raw_sql(statement).all(txn).await.map_err(StoreError::from) {
        Ok(mut stored) => Ok(Ok(stored.pop())),
        Err(err @ StoreError::UniqueViolation(_)) => Ok(Err(err)),
        Err(err) => Err(err),
    }
}
