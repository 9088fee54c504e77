//! Web-chat identity: the inbox identifier is public, so a contact inbox proves nothing about who
//! is typing. Each contact create gets its own contact inbox (several may now see one client),
//! a `pubsub_token` that is its own secret (not the source id), whether its identity was proven
//! (a valid `identifier_hash`, or staff merging it into a client) and with which identifier, and
//! what the visitor said about itself (kept as its claim, never written onto a client's record).
//!
//! Contact inboxes made before this migration are left unproven: if they were bound to a client
//! that is not their own visitor record, Omega no longer serves them (the widget makes a new one).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ContactInboxes {
    Table,
    InboxId,
    ClientId,
    PubsubToken,
    Verified,
    VerifiedIdentifier,
    ClaimedIdentifier,
    ClaimedEmail,
    ClaimedPhone,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("uq_contact_inboxes_client").table(ContactInboxes::Table).to_owned())
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_contact_inboxes_client")
                    .table(ContactInboxes::Table)
                    .col(ContactInboxes::ClientId)
                    .col(ContactInboxes::InboxId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        for column in [
            string_len_null(ContactInboxes::PubsubToken, 64),
            boolean(ContactInboxes::Verified).default(false).to_owned(),
            string_len_null(ContactInboxes::VerifiedIdentifier, 200),
            string_len_null(ContactInboxes::ClaimedIdentifier, 200),
            string_len_null(ContactInboxes::ClaimedEmail, 320),
            string_len_null(ContactInboxes::ClaimedPhone, 32),
        ] {
            manager.alter_table(Table::alter().table(ContactInboxes::Table).add_column(column).to_owned()).await?;
        }
        // Existing contacts get a random token of their own (the old answers used the source id).
        let fill = match manager.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => {
                "UPDATE contact_inboxes SET pubsub_token = replace(gen_random_uuid()::text, '-', '') || \
                 replace(gen_random_uuid()::text, '-', '') WHERE pubsub_token IS NULL"
            }
            _ => "UPDATE contact_inboxes SET pubsub_token = lower(hex(randomblob(24))) WHERE pubsub_token IS NULL",
        };
        manager.get_connection().execute_unprepared(fill).await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_contact_inboxes_pubsub_token")
                    .table(ContactInboxes::Table)
                    .col(ContactInboxes::PubsubToken)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("uq_contact_inboxes_pubsub_token").table(ContactInboxes::Table).to_owned())
            .await?;
        for column in [
            ContactInboxes::PubsubToken,
            ContactInboxes::Verified,
            ContactInboxes::VerifiedIdentifier,
            ContactInboxes::ClaimedIdentifier,
            ContactInboxes::ClaimedEmail,
            ContactInboxes::ClaimedPhone,
        ] {
            manager.alter_table(Table::alter().table(ContactInboxes::Table).drop_column(column).to_owned()).await?;
        }
        manager
            .drop_index(Index::drop().name("idx_contact_inboxes_client").table(ContactInboxes::Table).to_owned())
            .await?;
        // Only possible while every client has at most one contact per inbox.
        manager
            .create_index(
                Index::create()
                    .name("uq_contact_inboxes_client")
                    .table(ContactInboxes::Table)
                    .col(ContactInboxes::InboxId)
                    .col(ContactInboxes::ClientId)
                    .unique()
                    .to_owned(),
            )
            .await
    }
}
