//! What provider webhooks need: finding credentials by the provider's account id (to check a
//! signature before anything else), remembering events already applied (providers retry), and
//! call details (duration, the order of status callbacks).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ProviderCredentials {
    Table,
    Kind,
    AccountRef,
}

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    Provider,
    EventId,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    DurationSeconds,
    ProviderSequence,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The provider's public account id (Twilio's AC… SID), so a webhook finds its token.
        manager
            .alter_table(
                Table::alter()
                    .table(ProviderCredentials::Table)
                    .add_column(string_null(ProviderCredentials::AccountRef))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_provider_credentials_account")
                    .table(ProviderCredentials::Table)
                    .col(ProviderCredentials::Kind)
                    .col(ProviderCredentials::AccountRef)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookEvents::Table)
                    .if_not_exists()
                    .col(string_len(WebhookEvents::Provider, 32))
                    .col(string(WebhookEvents::EventId))
                    .col(timestamp_with_time_zone(WebhookEvents::ReceivedAt))
                    .primary_key(Index::create().col(WebhookEvents::Provider).col(WebhookEvents::EventId))
                    .to_owned(),
            )
            .await?;
        for mut column in [integer_null(Messages::DurationSeconds), integer_null(Messages::ProviderSequence)] {
            manager.alter_table(Table::alter().table(Messages::Table).add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Messages::DurationSeconds, Messages::ProviderSequence] {
            manager.alter_table(Table::alter().table(Messages::Table).drop_column(column).to_owned()).await?;
        }
        manager.drop_table(Table::drop().table(WebhookEvents::Table).to_owned()).await?;
        manager
            .drop_index(
                Index::drop().name("idx_provider_credentials_account").table(ProviderCredentials::Table).to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ProviderCredentials::Table)
                    .drop_column(ProviderCredentials::AccountRef)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
