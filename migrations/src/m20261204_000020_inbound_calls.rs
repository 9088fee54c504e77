//! Inbound calls: who of the staff answered a client's call (`messages.answered_by_staff_id`),
//! and whether a business has Twilio transcribe its voicemail (`businesses.transcribe_voicemail`,
//! off unless the business turns it on: a transcription is billed by Twilio).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Businesses {
    Table,
    TranscribeVoicemail,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    AnsweredByStaffId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Businesses::Table)
                    .add_column(boolean(Businesses::TranscribeVoicemail).default(false).to_owned())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .add_column(big_integer_null(Messages::AnsweredByStaffId))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Messages::Table).drop_column(Messages::AnsweredByStaffId).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter().table(Businesses::Table).drop_column(Businesses::TranscribeVoicemail).to_owned(),
            )
            .await
    }
}
