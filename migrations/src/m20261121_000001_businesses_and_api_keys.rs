//! Businesses (the tenants) and the API keys that authenticate callers, either for the whole
//! platform or for one business. Keys are stored only as SHA-256 hashes.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Businesses {
    Table,
    Id,
    Name,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    KeyPrefix,
    KeyHash,
    Label,
    Scope,
    BusinessId,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Businesses::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Businesses::Id))
                    .col(string(Businesses::Name))
                    .col(timestamp_with_time_zone(Businesses::CreatedAt))
                    .col(timestamp_with_time_zone(Businesses::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(big_pk_auto(ApiKeys::Id))
                    // The public start of the key: finds candidate rows and names the key in
                    // listings, without revealing the secret part.
                    .col(string_len(ApiKeys::KeyPrefix, 16))
                    // Hex SHA-256 of the whole key.
                    .col(string_len_uniq(ApiKeys::KeyHash, 64))
                    .col(string(ApiKeys::Label))
                    // "platform" or "business".
                    .col(string_len(ApiKeys::Scope, 16))
                    .col(big_integer_null(ApiKeys::BusinessId))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::LastUsedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                    .check(
                        Expr::col(ApiKeys::Scope).eq("platform").and(Expr::col(ApiKeys::BusinessId).is_null()).or(
                            Expr::col(ApiKeys::Scope).eq("business").and(Expr::col(ApiKeys::BusinessId).is_not_null()),
                        ),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_api_keys_business")
                            .from(ApiKeys::Table, ApiKeys::BusinessId)
                            .to(Businesses::Table, Businesses::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_index(
                Index::create()
                    .name("idx_api_keys_prefix")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::KeyPrefix)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_api_keys_business")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::BusinessId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ApiKeys::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Businesses::Table).to_owned()).await?;
        Ok(())
    }
}
