//! Search across a whole business (`SearchBusinessMessages`), on both databases, without
//! reading other businesses' messages.
//!
//! SQLite: the message index's scope column (migration 8's `conversation`) also carries a
//! business token, `bN`, beside the conversation's `cN`: a business-wide query is one FTS5
//! query (`conversation : "bN" AND word…`) over rowid windows, its doclists intersected by
//! seeking. Existing rows are indexed again (`rebuild`).
//!
//! PostgreSQL: migration 9's GIN over (conversation_id, search) becomes one over
//! (business_id, conversation_id, search) — a multicolumn GIN keeps separate entries per
//! column, so one index answers both scopes — and a btree over (business_id, id) lets a search
//! walk a business's newest messages first.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const SQLITE_DROP: [&str; 4] = [
    "DROP TRIGGER IF EXISTS messages_fts_insert",
    "DROP TRIGGER IF EXISTS messages_fts_delete",
    "DROP TRIGGER IF EXISTS messages_fts_update",
    "DROP VIEW IF EXISTS messages_fts_source",
];

/// The view and triggers of SQLite's index with `scope` as its scope column's expression
/// (over `<row>.` columns), then a rebuild.
fn sqlite_index(scope: &str) -> Vec<String> {
    let on = |row: &str| scope.replace("<row>.", &format!("{row}."));
    vec![
        format!(
            "CREATE VIEW messages_fts_source AS SELECT id, {} AS conversation, coalesce(subject, '') AS subject, \
             content FROM messages",
            scope.replace("<row>.", "")
        ),
        format!(
            "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN \
             INSERT INTO messages_fts(rowid, conversation, subject, content) \
             VALUES (new.id, {}, coalesce(new.subject, ''), new.content); END",
            on("new")
        ),
        format!(
            "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN \
             INSERT INTO messages_fts(messages_fts, rowid, conversation, subject, content) \
             VALUES ('delete', old.id, {}, coalesce(old.subject, ''), old.content); END",
            on("old")
        ),
        format!(
            "CREATE TRIGGER messages_fts_update AFTER UPDATE OF business_id, conversation_id, subject, content \
             ON messages BEGIN \
             INSERT INTO messages_fts(messages_fts, rowid, conversation, subject, content) \
             VALUES ('delete', old.id, {}, coalesce(old.subject, ''), old.content); \
             INSERT INTO messages_fts(rowid, conversation, subject, content) \
             VALUES (new.id, {}, coalesce(new.subject, ''), new.content); END",
            on("old"),
            on("new")
        ),
        "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')".to_owned(),
    ]
}

const SCOPED: &str = "'c' || <row>.conversation_id || ' b' || <row>.business_id";
const CONVERSATION_ONLY: &str = "'c' || <row>.conversation_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            sea_orm::DatabaseBackend::Sqlite => {
                for statement in SQLITE_DROP {
                    db.execute_unprepared(statement).await?;
                }
                for statement in sqlite_index(SCOPED) {
                    db.execute_unprepared(&statement).await?;
                }
            }
            sea_orm::DatabaseBackend::Postgres => {
                // btree_gin came with migration 9. One call, one connection: the memory
                // setting applies to the index builds that follow it.
                db.execute_unprepared("CREATE EXTENSION IF NOT EXISTS btree_gin").await?;
                db.execute_unprepared(
                    "SET maintenance_work_mem = '256MB'; \
                     CREATE INDEX IF NOT EXISTS idx_messages_scope_search ON messages \
                     USING GIN (business_id, conversation_id, search); \
                     CREATE INDEX IF NOT EXISTS idx_messages_business_id ON messages (business_id, id); \
                     RESET maintenance_work_mem",
                )
                .await?;
                db.execute_unprepared("DROP INDEX IF EXISTS idx_messages_conversation_search").await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            sea_orm::DatabaseBackend::Sqlite => {
                for statement in SQLITE_DROP {
                    db.execute_unprepared(statement).await?;
                }
                for statement in sqlite_index(CONVERSATION_ONLY) {
                    db.execute_unprepared(&statement).await?;
                }
            }
            sea_orm::DatabaseBackend::Postgres => {
                db.execute_unprepared(
                    "CREATE INDEX IF NOT EXISTS idx_messages_conversation_search ON messages \
                     USING GIN (conversation_id, search)",
                )
                .await?;
                db.execute_unprepared("DROP INDEX IF EXISTS idx_messages_scope_search").await?;
                db.execute_unprepared("DROP INDEX IF EXISTS idx_messages_business_id").await?;
            }
            _ => {}
        }
        Ok(())
    }
}
