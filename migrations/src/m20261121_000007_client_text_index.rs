//! The inbox's client filter ("conversations whose client's name, phone or email contains …")
//! answered from an index instead of a scan of every client: a trigram index on
//! `clients.search_text` — `pg_trgm` GIN on PostgreSQL, an FTS5 `trigram` table kept in step by
//! triggers on SQLite. Both serve `LIKE '%…%'` for patterns of three characters or more.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => {
                // pg_trgm is a trusted extension: the database's owner may install it.
                db.execute_unprepared("CREATE EXTENSION IF NOT EXISTS pg_trgm").await?;
                db.execute_unprepared(
                    "CREATE INDEX IF NOT EXISTS idx_clients_search_trgm ON clients USING GIN (search_text gin_trgm_ops)",
                )
                .await?;
            }
            _ => {
                db.execute_unprepared(
                    "CREATE VIRTUAL TABLE IF NOT EXISTS clients_trgm USING fts5(\
                     search_text, content='clients', content_rowid='id', tokenize='trigram')",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER IF NOT EXISTS clients_trgm_insert AFTER INSERT ON clients BEGIN \
                     INSERT INTO clients_trgm(rowid, search_text) VALUES (new.id, new.search_text); END",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER IF NOT EXISTS clients_trgm_delete AFTER DELETE ON clients BEGIN \
                     INSERT INTO clients_trgm(clients_trgm, rowid, search_text) VALUES ('delete', old.id, old.search_text); END",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER IF NOT EXISTS clients_trgm_update AFTER UPDATE OF search_text ON clients BEGIN \
                     INSERT INTO clients_trgm(clients_trgm, rowid, search_text) VALUES ('delete', old.id, old.search_text); \
                     INSERT INTO clients_trgm(rowid, search_text) VALUES (new.id, new.search_text); END",
                )
                .await?;
                db.execute_unprepared("INSERT INTO clients_trgm(clients_trgm) VALUES ('rebuild')").await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => {
                db.execute_unprepared("DROP INDEX IF EXISTS idx_clients_search_trgm").await?;
            }
            _ => {
                for statement in [
                    "DROP TRIGGER IF EXISTS clients_trgm_insert",
                    "DROP TRIGGER IF EXISTS clients_trgm_delete",
                    "DROP TRIGGER IF EXISTS clients_trgm_update",
                    "DROP TABLE IF EXISTS clients_trgm",
                ] {
                    db.execute_unprepared(statement).await?;
                }
            }
        }
        Ok(())
    }
}
