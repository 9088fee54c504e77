//! Provider accounts belong to one business: a Twilio Account SID is stored by at most one
//! business (sender numbers and messaging service SIDs are unique already), so a webhook's
//! account names exactly one owner. And a provider's message id is unique within a business,
//! not across businesses: whether another business holds an id must not show.
//!
//! Should two businesses hold the same Twilio account, the claim updated first is kept and the
//! later ones are removed (those businesses send with the platform account until they set
//! credentials of their own again): the database cannot tell which one is the owner, and
//! keeping both would keep the cross-business forgery open.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ProviderCredentials {
    Table,
    Kind,
    AccountRef,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    BusinessId,
    Provider,
    ProviderMessageId,
}

const REMOVE_LATER_CLAIMS: &str = "DELETE FROM provider_credentials WHERE kind = 'twilio' AND account_ref IS NOT NULL \
     AND EXISTS (SELECT 1 FROM provider_credentials AS earlier WHERE earlier.kind = 'twilio' \
     AND earlier.account_ref = provider_credentials.account_ref \
     AND (earlier.updated_at < provider_credentials.updated_at OR (earlier.updated_at = provider_credentials.updated_at \
     AND earlier.business_id < provider_credentials.business_id)))";

fn account_index(name: &str, unique: bool) -> IndexCreateStatement {
    let mut index = Index::create()
        .name(name)
        .table(ProviderCredentials::Table)
        .col(ProviderCredentials::Kind)
        .col(ProviderCredentials::AccountRef)
        .if_not_exists()
        .to_owned();
    if unique {
        index.unique();
    }
    index
}

fn provider_id_index(name: &str, per_business: bool, unique: bool) -> IndexCreateStatement {
    let mut index = Index::create().name(name).table(Messages::Table).if_not_exists().to_owned();
    if per_business {
        index.col(Messages::BusinessId);
    }
    index.col(Messages::Provider).col(Messages::ProviderMessageId);
    if unique {
        index.unique();
    }
    index
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(REMOVE_LATER_CLAIMS).await?;
        // NULL account refs (SendGrid, SMTP) are distinct in a unique index on both engines.
        manager.create_index(account_index("uq_provider_credentials_account", true)).await?;
        manager
            .drop_index(
                Index::drop().name("idx_provider_credentials_account").table(ProviderCredentials::Table).to_owned(),
            )
            .await?;
        manager.create_index(provider_id_index("uq_messages_business_provider_id", true, true)).await?;
        // Webhooks still find a message by the provider's id alone (then check its owner).
        manager.create_index(provider_id_index("idx_messages_provider_id", false, false)).await?;
        manager.drop_index(Index::drop().name("uq_messages_provider_id").table(Messages::Table).to_owned()).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_index(provider_id_index("uq_messages_provider_id", false, true)).await?;
        for name in ["idx_messages_provider_id", "uq_messages_business_provider_id"] {
            manager.drop_index(Index::drop().name(name).table(Messages::Table).to_owned()).await?;
        }
        manager.create_index(account_index("idx_provider_credentials_account", false)).await?;
        manager
            .drop_index(
                Index::drop().name("uq_provider_credentials_account").table(ProviderCredentials::Table).to_owned(),
            )
            .await?;
        Ok(())
    }
}
