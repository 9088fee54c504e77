//! Search within one conversation reads only that conversation's index entries, however
//! common its words are elsewhere.
//!
//! Migration 8 (SQLite) and 21 (PostgreSQL) scope a conversation's search by intersecting the
//! conversation's entries with each word's: in the busiest conversation (40,000 messages) of
//! ten million, a common word's million entries were walked for every search, 45–70 ms.
//!
//! SQLite: a second FTS5 index, contentless (it only answers which messages match: ranks and
//! passages are made from the messages' texts), whose row key is the conversation in the high
//! 32 bits and the message id in the low. A doclist is in key order, so a word's matches in one
//! conversation are one run of it, which a search bounded to the conversation's key range
//! seeks to directly. A third column holds `note` for a note, so a search that leaves notes out
//! does so in the index. Message ids and conversation ids past 2^32 and 2^31 would make keys
//! collide; the insert trigger refuses them rather than index a message under another
//! conversation. The message-id index stays for searches across a business.
//!
//! PostgreSQL is unchanged here. Its equivalent, a GIN over (conversation, word) keys, measured
//! at 1.4 times the table's own size; migration 25 keys words by a bucket of conversations
//! instead.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The key of `<row>`'s message in the conversation-keyed index.
const KEY: &str = "<row>.conversation_id * 4294967296 + <row>.id";

fn key(row: &str) -> String {
    KEY.replace("<row>", row)
}

/// The statement removing `<row>`'s message from the conversation-keyed index.
fn forget(row: &str) -> String {
    format!(
        "INSERT INTO messages_fts_by_conversation(messages_fts_by_conversation, rowid, subject, content, kind) \
         VALUES ('delete', {});",
        values(row)
    )
}

/// The indexed values of `<row>`'s message: its key, subject, text and kind (`note` for a note,
/// so that a search leaves notes out within FTS5, without looking each match up).
fn values(row: &str) -> String {
    format!(
        "{}, coalesce({row}.subject, ''), {row}.content, CASE WHEN {row}.channel = 'NOTE' THEN 'note' ELSE '' END",
        key(row)
    )
}

fn sqlite_up() -> Vec<String> {
    vec![
        // No sizes (`columnsize=0`): nothing ranks with this index (see the module), and each
        // commit writes one page fewer.
        "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts_by_conversation USING fts5(subject, content, kind, \
         content='', columnsize=0, tokenize='unicode61 remove_diacritics 2')"
            .to_owned(),
        format!(
            "CREATE TRIGGER messages_fts_by_conversation_insert AFTER INSERT ON messages BEGIN \
             SELECT RAISE(ABORT, 'message or conversation id too large for the conversation-keyed search index') \
             WHERE new.id >= 4294967296 OR new.conversation_id >= 2147483648; \
             INSERT INTO messages_fts_by_conversation(rowid, subject, content, kind) VALUES ({}); END",
            values("new")
        ),
        // A contentless index forgets a row given the values it indexed, which the trigger has.
        format!(
            "CREATE TRIGGER messages_fts_by_conversation_delete AFTER DELETE ON messages BEGIN {} END",
            forget("old")
        ),
        format!(
            "CREATE TRIGGER messages_fts_by_conversation_update AFTER UPDATE OF conversation_id, channel, subject, content \
             ON messages BEGIN {} \
             INSERT INTO messages_fts_by_conversation(rowid, subject, content, kind) VALUES ({}); END",
            forget("old"),
            values("new")
        ),
        // In key order: FTS5 appends to its pending doclists only while keys ascend.
        format!(
            "INSERT INTO messages_fts_by_conversation(rowid, subject, content, kind) \
             SELECT {} FROM messages m ORDER BY m.conversation_id, m.id",
            values("m")
        ),
    ]
}

const SQLITE_DOWN: [&str; 4] = [
    "DROP TRIGGER IF EXISTS messages_fts_by_conversation_insert",
    "DROP TRIGGER IF EXISTS messages_fts_by_conversation_delete",
    "DROP TRIGGER IF EXISTS messages_fts_by_conversation_update",
    "DROP TABLE IF EXISTS messages_fts_by_conversation",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
            for statement in sqlite_up() {
                db.execute_unprepared(&statement).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
            for statement in SQLITE_DOWN {
                db.execute_unprepared(statement).await?;
            }
        }
        Ok(())
    }
}
