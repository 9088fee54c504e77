//! The event log's wake-ups leave the writing transactions.
//!
//! A transaction that NOTIFYs takes one lock for the whole PostgreSQL cluster from its commit
//! until its WAL is flushed, so the per-row trigger of migration 000017 made every write that
//! appends an event (an inbound message, a delivery result) commit one after another: about
//! 430 commits a second here where 16 concurrent writers otherwise commit some 3,800. Each
//! Omega replica now announces its commits itself, after they are made, coalesced (the store's
//! event notifier), and the trigger goes.

use sea_orm_migration::{
    prelude::*,
    sea_orm::{ConnectionTrait, DbBackend},
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            let db = manager.get_connection();
            db.execute_unprepared("DROP TRIGGER IF EXISTS conversation_events_notify ON conversation_events").await?;
            db.execute_unprepared("DROP FUNCTION IF EXISTS omega_notify_event()").await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            let db = manager.get_connection();
            db.execute_unprepared(
                "CREATE OR REPLACE FUNCTION omega_notify_event() RETURNS trigger AS $$ \
                 BEGIN PERFORM pg_notify('omega_events', NEW.business_id::text); RETURN NULL; END; \
                 $$ LANGUAGE plpgsql",
            )
            .await?;
            db.execute_unprepared(
                "CREATE TRIGGER conversation_events_notify AFTER INSERT ON conversation_events \
                 FOR EACH ROW EXECUTE FUNCTION omega_notify_event()",
            )
            .await?;
        }
        Ok(())
    }
}
