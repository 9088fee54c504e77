//! Web chat through the Chatwoot-compatible public API: inboxes (a business's chat channel,
//! named by an unguessable identifier), the contacts seen through each inbox (a client and the
//! source id Omega issued), and what the widget shows (last-seen times, message attributes).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Inboxes {
    Table,
    Id,
    BusinessId,
    LocationId,
    Name,
    Identifier,
    HmacToken,
    HmacMandatory,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ContactInboxes {
    Table,
    Id,
    InboxId,
    ClientId,
    SourceId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    ContactLastSeenAt,
    AgentLastSeenAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    ContentAttributes,
}

#[derive(DeriveIden)]
enum Businesses {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Clients {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Inboxes::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Inboxes::Id))
                    .col(big_integer(Inboxes::BusinessId))
                    .col(big_integer_null(Inboxes::LocationId))
                    .col(string(Inboxes::Name))
                    .col(string_len_uniq(Inboxes::Identifier, 64))
                    // Signs contacts' identifiers (identifier_hash = HMAC-SHA256(token, identifier)).
                    .col(string_len(Inboxes::HmacToken, 64))
                    .col(boolean(Inboxes::HmacMandatory))
                    .col(timestamp_with_time_zone(Inboxes::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_inboxes_business")
                            .from(Inboxes::Table, Inboxes::BusinessId)
                            .to(Businesses::Table, Businesses::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ContactInboxes::Table)
                    .if_not_exists()
                    .col(big_pk_auto(ContactInboxes::Id))
                    .col(big_integer(ContactInboxes::InboxId))
                    .col(big_integer(ContactInboxes::ClientId))
                    .col(string_len_uniq(ContactInboxes::SourceId, 64))
                    .col(timestamp_with_time_zone(ContactInboxes::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_contact_inboxes_inbox")
                            .from(ContactInboxes::Table, ContactInboxes::InboxId)
                            .to(Inboxes::Table, Inboxes::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_contact_inboxes_client")
                            .from(ContactInboxes::Table, ContactInboxes::ClientId)
                            .to(Clients::Table, Clients::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_contact_inboxes_client")
                    .table(ContactInboxes::Table)
                    .col(ContactInboxes::InboxId)
                    .col(ContactInboxes::ClientId)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        for column in [
            timestamp_with_time_zone_null(Conversations::ContactLastSeenAt),
            timestamp_with_time_zone_null(Conversations::AgentLastSeenAt),
        ] {
            manager.alter_table(Table::alter().table(Conversations::Table).add_column(column).to_owned()).await?;
        }
        manager
            .alter_table(
                Table::alter().table(Messages::Table).add_column(text_null(Messages::ContentAttributes)).to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Messages::Table).drop_column(Messages::ContentAttributes).to_owned())
            .await?;
        for column in [Conversations::ContactLastSeenAt, Conversations::AgentLastSeenAt] {
            manager.alter_table(Table::alter().table(Conversations::Table).drop_column(column).to_owned()).await?;
        }
        manager.drop_table(Table::drop().table(ContactInboxes::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Inboxes::Table).to_owned()).await
    }
}
