//! The event log becomes a stream readers can follow without missing a row.
//!
//! On PostgreSQL ids are handed out when a row is inserted, not when its transaction commits: a
//! reader that saw id 11 may later find id 10 committed. Each row therefore records the id of the
//! transaction that wrote it (`tx_id`), and readers take rows in (tx_id, id) order only below
//! the oldest transaction still running (`pg_snapshot_xmin`): that prefix of the log can no longer
//! change. SQLite has one writer, so its ids already follow commit order and `tx_id` stays 0.
//!
//! A trigger NOTIFYs `omega_events` with the business id on every insert; PostgreSQL delivers it
//! at commit (and folds duplicates within a transaction) to every replica that LISTENs.

use sea_orm_migration::{
    prelude::*,
    sea_orm::{ConnectionTrait, DbBackend},
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ConversationEvents {
    Table,
    BusinessId,
    TxId,
    Id,
}

const INDEX: &str = "idx_conversation_events_business_tx";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(
                    "ALTER TABLE conversation_events ADD COLUMN IF NOT EXISTS tx_id BIGINT NOT NULL \
                     DEFAULT (pg_current_xact_id()::text::bigint)",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE OR REPLACE FUNCTION omega_notify_event() RETURNS trigger AS $$ \
                     BEGIN PERFORM pg_notify('omega_events', NEW.business_id::text); RETURN NULL; END; \
                     $$ LANGUAGE plpgsql",
                )
                .await?;
                db.execute_unprepared("DROP TRIGGER IF EXISTS conversation_events_notify ON conversation_events")
                    .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER conversation_events_notify AFTER INSERT ON conversation_events \
                     FOR EACH ROW EXECUTE FUNCTION omega_notify_event()",
                )
                .await?;
            }
            _ => {
                manager
                    .alter_table(
                        Table::alter()
                            .table(ConversationEvents::Table)
                            .add_column(ColumnDef::new(ConversationEvents::TxId).big_integer().not_null().default(0))
                            .to_owned(),
                    )
                    .await?;
            }
        }
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(ConversationEvents::Table)
                    .col(ConversationEvents::BusinessId)
                    .col(ConversationEvents::TxId)
                    .col(ConversationEvents::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(INDEX).table(ConversationEvents::Table).if_exists().to_owned()).await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            let db = manager.get_connection();
            db.execute_unprepared("DROP TRIGGER IF EXISTS conversation_events_notify ON conversation_events").await?;
            db.execute_unprepared("DROP FUNCTION IF EXISTS omega_notify_event()").await?;
        }
        manager
            .alter_table(
                Table::alter().table(ConversationEvents::Table).drop_column(ConversationEvents::TxId).to_owned(),
            )
            .await
    }
}
