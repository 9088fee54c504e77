//! Inbound email: each business may have one secret token that authenticates the mail its
//! provider (SendGrid Inbound Parse) or relay posts to Omega. Only the token's SHA-256 hash is
//! kept, with a short public prefix to find the candidate row (compared in constant time), like
//! API keys. Rotating replaces the row's prefix and hash. Inbound emails themselves are messages
//! (EMAIL, INBOUND) deduplicated by the unique (business, provider, provider id) index, the
//! provider id being the email's `Message-ID`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EmailInboundTokens {
    Table,
    Id,
    BusinessId,
    TokenPrefix,
    TokenHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Businesses {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EmailInboundTokens::Table)
                    .if_not_exists()
                    .col(big_pk_auto(EmailInboundTokens::Id))
                    .col(big_integer_uniq(EmailInboundTokens::BusinessId))
                    .col(string_len(EmailInboundTokens::TokenPrefix, 16))
                    .col(string_len_uniq(EmailInboundTokens::TokenHash, 64))
                    .col(timestamp_with_time_zone(EmailInboundTokens::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(EmailInboundTokens::Table, EmailInboundTokens::BusinessId)
                            .to(Businesses::Table, Businesses::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_email_inbound_tokens_prefix")
                    .table(EmailInboundTokens::Table)
                    .col(EmailInboundTokens::TokenPrefix)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(EmailInboundTokens::Table).to_owned()).await
    }
}
