//! Chatwoot's `custom_attributes`: a JSON object on a client (what a widget's contact sets about
//! itself) and on a conversation. Stored as JSON text so that both databases keep them alike;
//! Omega validates and caps them on the way in.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Clients {
    Table,
    CustomAttributes,
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    CustomAttributes,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(Clients::Table).add_column(text_null(Clients::CustomAttributes)).to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Conversations::Table)
                    .add_column(text_null(Conversations::CustomAttributes))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(Conversations::Table).drop_column(Conversations::CustomAttributes).to_owned(),
            )
            .await?;
        manager
            .alter_table(Table::alter().table(Clients::Table).drop_column(Clients::CustomAttributes).to_owned())
            .await
    }
}
