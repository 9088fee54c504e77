//! PostgreSQL's message search index becomes one GIN over (conversation_id, search), with
//! btree_gin: a search within a conversation intersects the conversation's posting list with
//! the words' inside one index, skipping through a common word's million entries, instead of
//! ANDing two bitmaps of which one holds every message containing the word. SQLite's
//! counterpart is migration 8.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        // btree_gin is a trusted extension. One call, one connection: the memory setting
        // applies to the index build that follows it.
        db.execute_unprepared("CREATE EXTENSION IF NOT EXISTS btree_gin").await?;
        db.execute_unprepared(
            "SET maintenance_work_mem = '256MB'; \
             CREATE INDEX IF NOT EXISTS idx_messages_conversation_search ON messages USING GIN (conversation_id, search); \
             RESET maintenance_work_mem",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS idx_messages_search").await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared("CREATE INDEX IF NOT EXISTS idx_messages_search ON messages USING GIN (search)").await?;
        db.execute_unprepared("DROP INDEX IF EXISTS idx_messages_conversation_search").await?;
        Ok(())
    }
}
