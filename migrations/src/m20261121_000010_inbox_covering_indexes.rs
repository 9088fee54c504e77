//! The inbox's two main indexes carry the columns the other filters test (channels seen, unread
//! count), so that a filtered page and its capped total are read from the index alone instead
//! of one table lookup per candidate row (benchmark P2: status + channel at a million
//! conversations went from 21 ms to what the ten-thousand inbox takes).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Conversations {
    Table,
    BusinessId,
    Status,
    LastActivityAt,
    Id,
    ChannelMask,
    UnreadCount,
}

fn replacement(name: &str, with_status: bool) -> IndexCreateStatement {
    let mut index = Index::create().name(name).table(Conversations::Table).if_not_exists().to_owned();
    index.col(Conversations::BusinessId);
    if with_status {
        index.col(Conversations::Status);
    }
    index
        .col(Conversations::LastActivityAt)
        .col(Conversations::Id)
        .col(Conversations::ChannelMask)
        .col(Conversations::UnreadCount);
    index
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_index(replacement("idx_conversations_activity_covering", false)).await?;
        manager.create_index(replacement("idx_conversations_status_activity_covering", true)).await?;
        for old in ["idx_conversations_activity", "idx_conversations_status_activity"] {
            manager.drop_index(Index::drop().name(old).table(Conversations::Table).if_exists().to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut activity = Index::create().name("idx_conversations_activity").table(Conversations::Table).to_owned();
        activity.col(Conversations::BusinessId).col(Conversations::LastActivityAt).col(Conversations::Id);
        manager.create_index(activity).await?;
        let mut status =
            Index::create().name("idx_conversations_status_activity").table(Conversations::Table).to_owned();
        status
            .col(Conversations::BusinessId)
            .col(Conversations::Status)
            .col(Conversations::LastActivityAt)
            .col(Conversations::Id);
        manager.create_index(status).await?;
        for new in ["idx_conversations_activity_covering", "idx_conversations_status_activity_covering"] {
            manager.drop_index(Index::drop().name(new).table(Conversations::Table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}
