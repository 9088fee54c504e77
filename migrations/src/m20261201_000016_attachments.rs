//! Files attached to messages (web chat uploads now; MMS media and email attachments next). The
//! bytes live in the attachment store (a local directory or an S3-compatible bucket); a row here
//! says where, what they are, and whose message they belong to (a reader's access follows the
//! message, which may move to another conversation when a visitor is merged). Each message
//! also keeps a JSON summary of its attachments, written with them, so that a page of messages
//! renders without a query per message.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Attachments {
    Table,
    Id,
    BusinessId,
    MessageId,
    StorageKey,
    FileName,
    ContentType,
    FileType,
    FileSize,
    Width,
    Height,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    Attachments,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Attachments::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Attachments::Id))
                    .col(big_integer(Attachments::BusinessId))
                    .col(big_integer(Attachments::MessageId))
                    .col(string_len_uniq(Attachments::StorageKey, 200))
                    .col(string_len(Attachments::FileName, 255))
                    .col(string_len(Attachments::ContentType, 255))
                    .col(string_len(Attachments::FileType, 16))
                    .col(big_integer(Attachments::FileSize))
                    .col(integer_null(Attachments::Width))
                    .col(integer_null(Attachments::Height))
                    .col(timestamp_with_time_zone(Attachments::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Attachments::Table, Attachments::MessageId)
                            .to(Messages::Table, Messages::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_attachments_message")
                    .table(Attachments::Table)
                    .col(Attachments::MessageId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(Table::alter().table(Messages::Table).add_column(text_null(Messages::Attachments)).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Messages::Table).drop_column(Messages::Attachments).to_owned())
            .await?;
        manager.drop_table(Table::drop().table(Attachments::Table).to_owned()).await
    }
}
