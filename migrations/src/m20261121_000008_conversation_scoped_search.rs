//! SQLite's message index learns which conversation each message is in, so that a search within
//! one conversation is one FTS5 query (`conversation:cN AND word…`, doclists intersected by
//! seeking) instead of every match across the database joined back to its conversation — at ten
//! million messages, a common word matched over a million rows and took a second.
//!
//! The index reads its text through a view (`messages_fts_source`), which also supplies the
//! conversation token. PostgreSQL needs nothing: its planner filters by conversation first.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const DROP_OLD: [&str; 4] = [
    "DROP TRIGGER IF EXISTS messages_fts_insert",
    "DROP TRIGGER IF EXISTS messages_fts_delete",
    "DROP TRIGGER IF EXISTS messages_fts_update",
    "DROP TABLE IF EXISTS messages_fts",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DatabaseBackend::Sqlite {
            return Ok(());
        }
        let db = manager.get_connection();
        for statement in DROP_OLD {
            db.execute_unprepared(statement).await?;
        }
        for statement in [
            "CREATE VIEW IF NOT EXISTS messages_fts_source AS SELECT id, 'c' || conversation_id AS conversation, \
             coalesce(subject, '') AS subject, content FROM messages",
            "CREATE VIRTUAL TABLE messages_fts USING fts5(conversation, subject, content, \
             content='messages_fts_source', content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
            "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN \
             INSERT INTO messages_fts(rowid, conversation, subject, content) \
             VALUES (new.id, 'c' || new.conversation_id, coalesce(new.subject, ''), new.content); END",
            "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN \
             INSERT INTO messages_fts(messages_fts, rowid, conversation, subject, content) \
             VALUES ('delete', old.id, 'c' || old.conversation_id, coalesce(old.subject, ''), old.content); END",
            "CREATE TRIGGER messages_fts_update AFTER UPDATE OF conversation_id, subject, content ON messages BEGIN \
             INSERT INTO messages_fts(messages_fts, rowid, conversation, subject, content) \
             VALUES ('delete', old.id, 'c' || old.conversation_id, coalesce(old.subject, ''), old.content); \
             INSERT INTO messages_fts(rowid, conversation, subject, content) \
             VALUES (new.id, 'c' || new.conversation_id, coalesce(new.subject, ''), new.content); END",
            "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DatabaseBackend::Sqlite {
            return Ok(());
        }
        let db = manager.get_connection();
        for statement in DROP_OLD {
            db.execute_unprepared(statement).await?;
        }
        db.execute_unprepared("DROP VIEW IF EXISTS messages_fts_source").await?;
        // Migration 3's index, as it was.
        for statement in [
            "CREATE VIRTUAL TABLE messages_fts USING fts5(subject, content, content='messages', content_rowid='id', \
             tokenize='unicode61 remove_diacritics 2')",
            "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN \
             INSERT INTO messages_fts(rowid, subject, content) VALUES (new.id, coalesce(new.subject, ''), new.content); END",
            "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN \
             INSERT INTO messages_fts(messages_fts, rowid, subject, content) VALUES ('delete', old.id, coalesce(old.subject, ''), old.content); END",
            "CREATE TRIGGER messages_fts_update AFTER UPDATE OF subject, content ON messages BEGIN \
             INSERT INTO messages_fts(messages_fts, rowid, subject, content) VALUES ('delete', old.id, coalesce(old.subject, ''), old.content); \
             INSERT INTO messages_fts(rowid, subject, content) VALUES (new.id, coalesce(new.subject, ''), new.content); END",
            "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
