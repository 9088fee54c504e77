//! Messages that travel: what was sent from and to, media, the outbox that delivers them, the
//! history of every attempt, per-sender pacing, provider credentials, and full-text search.
//!
//! Search is kept in step by the database itself: on SQLite an FTS5 table maintained by
//! triggers, on PostgreSQL a generated `tsvector` column with a GIN index.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    BusinessId,
    LocationId,
    FromAddress,
    ToAddress,
    Html,
    Media,
    IdempotencyKey,
    SentAt,
    DeliveredAt,
    FailedAt,
}

#[derive(DeriveIden)]
enum MessageAttempts {
    Table,
    Id,
    MessageId,
    Attempt,
    StartedAt,
    FinishedAt,
    Outcome,
    ProviderMessageId,
    ErrorCode,
    ErrorMessage,
}

#[derive(DeriveIden)]
enum DeliveryJobs {
    Table,
    Id,
    MessageId,
    BusinessId,
    Channel,
    SenderKey,
    State,
    Attempts,
    NextAttemptAt,
    LockedBy,
    LockedUntil,
    LastError,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum SenderPacing {
    Table,
    SenderKey,
    NextSlotAt,
}

#[derive(DeriveIden)]
enum ProviderCredentials {
    Table,
    BusinessId,
    Kind,
    Config,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Businesses {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            big_integer_null(Messages::LocationId),
            string_null(Messages::FromAddress),
            string_null(Messages::ToAddress),
            text_null(Messages::Html),
            // JSON array of media URLs (MMS, attachments).
            text_null(Messages::Media),
            string_len_null(Messages::IdempotencyKey, 128),
            timestamp_with_time_zone_null(Messages::SentAt),
            timestamp_with_time_zone_null(Messages::DeliveredAt),
            timestamp_with_time_zone_null(Messages::FailedAt),
        ];
        for mut column in columns {
            manager.alter_table(Table::alter().table(Messages::Table).add_column(&mut column).to_owned()).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("uq_messages_idempotency_key")
                    .table(Messages::Table)
                    .col(Messages::BusinessId)
                    .col(Messages::IdempotencyKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(MessageAttempts::Table)
                    .if_not_exists()
                    .col(big_pk_auto(MessageAttempts::Id))
                    .col(big_integer(MessageAttempts::MessageId))
                    .col(integer(MessageAttempts::Attempt))
                    .col(timestamp_with_time_zone(MessageAttempts::StartedAt))
                    .col(timestamp_with_time_zone_null(MessageAttempts::FinishedAt))
                    // accepted, retryable, rejected, ambiguous, skipped.
                    .col(string_len(MessageAttempts::Outcome, 16))
                    .col(string_null(MessageAttempts::ProviderMessageId))
                    .col(string_len_null(MessageAttempts::ErrorCode, 32))
                    .col(text_null(MessageAttempts::ErrorMessage))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_message_attempts_message")
                            .from(MessageAttempts::Table, MessageAttempts::MessageId)
                            .to(Messages::Table, Messages::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_message_attempts_message")
                    .table(MessageAttempts::Table)
                    .col(MessageAttempts::MessageId)
                    .col(MessageAttempts::Attempt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(DeliveryJobs::Table)
                    .if_not_exists()
                    .col(big_pk_auto(DeliveryJobs::Id))
                    .col(big_integer_uniq(DeliveryJobs::MessageId))
                    .col(big_integer(DeliveryJobs::BusinessId))
                    .col(string_len(DeliveryJobs::Channel, 16))
                    // The sender whose pace limits this job ("sms:+1415…", "sms:MG…", "email:…").
                    .col(string(DeliveryJobs::SenderKey))
                    // pending, running, done, failed.
                    .col(string_len(DeliveryJobs::State, 16))
                    .col(integer(DeliveryJobs::Attempts).default(0))
                    .col(timestamp_with_time_zone(DeliveryJobs::NextAttemptAt))
                    .col(string_null(DeliveryJobs::LockedBy))
                    .col(timestamp_with_time_zone_null(DeliveryJobs::LockedUntil))
                    .col(text_null(DeliveryJobs::LastError))
                    .col(timestamp_with_time_zone(DeliveryJobs::CreatedAt))
                    .col(timestamp_with_time_zone(DeliveryJobs::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_delivery_jobs_message")
                            .from(DeliveryJobs::Table, DeliveryJobs::MessageId)
                            .to(Messages::Table, Messages::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_delivery_jobs_due")
                    .table(DeliveryJobs::Table)
                    .col(DeliveryJobs::State)
                    .col(DeliveryJobs::NextAttemptAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(SenderPacing::Table)
                    .if_not_exists()
                    .col(string(SenderPacing::SenderKey).primary_key())
                    .col(timestamp_with_time_zone(SenderPacing::NextSlotAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ProviderCredentials::Table)
                    .if_not_exists()
                    .col(big_integer(ProviderCredentials::BusinessId))
                    // twilio, sendgrid, smtp.
                    .col(string_len(ProviderCredentials::Kind, 16))
                    // JSON; never returned by any endpoint, never logged.
                    .col(text(ProviderCredentials::Config))
                    .col(timestamp_with_time_zone(ProviderCredentials::UpdatedAt))
                    .primary_key(Index::create().col(ProviderCredentials::BusinessId).col(ProviderCredentials::Kind))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_provider_credentials_business")
                            .from(ProviderCredentials::Table, ProviderCredentials::BusinessId)
                            .to(Businesses::Table, Businesses::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        let db = manager.get_connection();
        match manager.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => {
                db.execute_unprepared(
                    "ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS \
                     (to_tsvector('simple', coalesce(subject, '') || ' ' || content)) STORED",
                )
                .await?;
                db.execute_unprepared("CREATE INDEX IF NOT EXISTS idx_messages_search ON messages USING GIN (search)")
                    .await?;
            }
            _ => {
                // An external-content FTS5 index over messages, kept in step by triggers.
                db.execute_unprepared(
                    "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(\
                     subject, content, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages BEGIN \
                     INSERT INTO messages_fts(rowid, subject, content) VALUES (new.id, coalesce(new.subject, ''), new.content); END",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN \
                     INSERT INTO messages_fts(messages_fts, rowid, subject, content) VALUES ('delete', old.id, coalesce(old.subject, ''), old.content); END",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF subject, content ON messages BEGIN \
                     INSERT INTO messages_fts(messages_fts, rowid, subject, content) VALUES ('delete', old.id, coalesce(old.subject, ''), old.content); \
                     INSERT INTO messages_fts(rowid, subject, content) VALUES (new.id, coalesce(new.subject, ''), new.content); END",
                )
                .await?;
                db.execute_unprepared("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')").await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => {
                db.execute_unprepared("ALTER TABLE messages DROP COLUMN IF EXISTS search").await?;
            }
            _ => {
                for sql in [
                    "DROP TRIGGER IF EXISTS messages_fts_insert",
                    "DROP TRIGGER IF EXISTS messages_fts_delete",
                    "DROP TRIGGER IF EXISTS messages_fts_update",
                    "DROP TABLE IF EXISTS messages_fts",
                ] {
                    db.execute_unprepared(sql).await?;
                }
            }
        }
        for table in [
            ProviderCredentials::Table.into_iden(),
            SenderPacing::Table.into_iden(),
            DeliveryJobs::Table.into_iden(),
            MessageAttempts::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        manager.drop_index(Index::drop().name("uq_messages_idempotency_key").table(Messages::Table).to_owned()).await?;
        for column in [
            Messages::LocationId,
            Messages::FromAddress,
            Messages::ToAddress,
            Messages::Html,
            Messages::Media,
            Messages::IdempotencyKey,
            Messages::SentAt,
            Messages::DeliveredAt,
            Messages::FailedAt,
        ] {
            manager.alter_table(Table::alter().table(Messages::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
