//! A business's directory (locations and their sender numbers, staff, clients) and its inbox
//! (one conversation per client, messages, per-bucket counters and the ordered event log).
//!
//! Uniqueness is enforced here, not by check-then-insert: a client's phone, email and
//! external reference are unique within a business; a sender number and a messaging service
//! belong to one business platform-wide; a business has one conversation per client.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Businesses {
    Table,
    Id,
    ExternalRef,
    TimeZone,
    DefaultCallingCode,
    SmsEnabled,
    EmailEnabled,
    VoiceEnabled,
    ChatEnabled,
}

#[derive(DeriveIden)]
enum Locations {
    Table,
    Id,
    BusinessId,
    ExternalRef,
    Name,
    TimeZone,
    MessagingServiceSid,
    EmailSender,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum LocationPhoneNumbers {
    Table,
    Id,
    BusinessId,
    LocationId,
    PhoneE164,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Staff {
    Table,
    Id,
    BusinessId,
    ExternalRef,
    Name,
    Email,
    Role,
    Active,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Clients {
    Table,
    Id,
    BusinessId,
    ExternalRef,
    Name,
    PhoneE164,
    Email,
    SmsConsent,
    SmsConsentUpdatedAt,
    SearchText,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
    BusinessId,
    ClientId,
    LocationId,
    Status,
    SnoozedUntil,
    AssignedStaffId,
    ResolvedAt,
    ResolvedByStaffId,
    ResolutionNote,
    UnreadCount,
    ChannelMask,
    LastMessageAt,
    LastMessagePreview,
    LastMessageChannel,
    LastMessageDirection,
    LastActivityAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ConversationCounts {
    Table,
    BusinessId,
    Status,
    AssigneeId,
    Count,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    PublicId,
    BusinessId,
    ConversationId,
    ClientId,
    Channel,
    Direction,
    SenderType,
    SenderStaffId,
    Content,
    Subject,
    NoteCategory,
    RequestId,
    Provider,
    ProviderMessageId,
    Status,
    StatusUpdatedAt,
    ErrorCode,
    ErrorMessage,
    AttemptCount,
    ReadAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ConversationEvents {
    Table,
    Id,
    BusinessId,
    ConversationId,
    Kind,
    ActorKeyId,
    ActorStaffId,
    Data,
    CreatedAt,
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
) -> ForeignKeyCreateStatement {
    ForeignKey::create().name(name).from(from.0, from.1).to(to.0, to.1).on_delete(ForeignKeyAction::Cascade).to_owned()
}

fn index(name: &str, table: impl IntoIden, cols: Vec<DynIden>, unique: bool) -> IndexCreateStatement {
    let mut stmt = Index::create().name(name).table(table).if_not_exists().to_owned();
    for col in cols {
        stmt.col(col);
    }
    if unique {
        stmt.unique();
    }
    stmt
}

/// Shorthand for the column lists of [`index`].
macro_rules! cols {
    ($($col:expr),+ $(,)?) => { vec![$($col.into_iden()),+] };
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite alters one column per statement.
        let business_columns = [
            string_null(Businesses::ExternalRef),
            string(Businesses::TimeZone).default("UTC").to_owned(),
            string_len(Businesses::DefaultCallingCode, 4).default("1").to_owned(),
            boolean(Businesses::SmsEnabled).default(true).to_owned(),
            boolean(Businesses::EmailEnabled).default(true).to_owned(),
            boolean(Businesses::VoiceEnabled).default(true).to_owned(),
            boolean(Businesses::ChatEnabled).default(true).to_owned(),
        ];
        for mut column in business_columns {
            manager.alter_table(Table::alter().table(Businesses::Table).add_column(&mut column).to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(Locations::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Locations::Id))
                    .col(big_integer(Locations::BusinessId))
                    .col(string_null(Locations::ExternalRef))
                    .col(string(Locations::Name))
                    .col(string_null(Locations::TimeZone))
                    .col(string_null(Locations::MessagingServiceSid))
                    .col(string_null(Locations::EmailSender))
                    .col(timestamp_with_time_zone(Locations::CreatedAt))
                    .col(timestamp_with_time_zone(Locations::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_locations_business",
                        (Locations::Table, Locations::BusinessId),
                        (Businesses::Table, Businesses::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(LocationPhoneNumbers::Table)
                    .if_not_exists()
                    .col(big_pk_auto(LocationPhoneNumbers::Id))
                    .col(big_integer(LocationPhoneNumbers::BusinessId))
                    .col(big_integer(LocationPhoneNumbers::LocationId))
                    .col(string(LocationPhoneNumbers::PhoneE164))
                    .col(timestamp_with_time_zone(LocationPhoneNumbers::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_location_phone_numbers_location",
                        (LocationPhoneNumbers::Table, LocationPhoneNumbers::LocationId),
                        (Locations::Table, Locations::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Staff::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Staff::Id))
                    .col(big_integer(Staff::BusinessId))
                    .col(string_null(Staff::ExternalRef))
                    .col(string(Staff::Name))
                    .col(string_null(Staff::Email))
                    .col(string_len(Staff::Role, 32))
                    .col(boolean(Staff::Active))
                    .col(timestamp_with_time_zone(Staff::CreatedAt))
                    .col(timestamp_with_time_zone(Staff::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_staff_business",
                        (Staff::Table, Staff::BusinessId),
                        (Businesses::Table, Businesses::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Clients::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Clients::Id))
                    .col(big_integer(Clients::BusinessId))
                    .col(string_null(Clients::ExternalRef))
                    .col(string(Clients::Name))
                    .col(string_null(Clients::PhoneE164))
                    .col(string_null(Clients::Email))
                    .col(boolean(Clients::SmsConsent))
                    .col(timestamp_with_time_zone_null(Clients::SmsConsentUpdatedAt))
                    // Lower-cased name, phone and email: what the inbox's text filter matches.
                    .col(text(Clients::SearchText))
                    .col(timestamp_with_time_zone(Clients::CreatedAt))
                    .col(timestamp_with_time_zone(Clients::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_clients_business",
                        (Clients::Table, Clients::BusinessId),
                        (Businesses::Table, Businesses::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Conversations::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Conversations::Id))
                    .col(big_integer(Conversations::BusinessId))
                    .col(big_integer(Conversations::ClientId))
                    .col(big_integer_null(Conversations::LocationId))
                    .col(string_len(Conversations::Status, 16))
                    .col(timestamp_with_time_zone_null(Conversations::SnoozedUntil))
                    .col(big_integer_null(Conversations::AssignedStaffId))
                    .col(timestamp_with_time_zone_null(Conversations::ResolvedAt))
                    .col(big_integer_null(Conversations::ResolvedByStaffId))
                    .col(text_null(Conversations::ResolutionNote))
                    .col(integer(Conversations::UnreadCount).default(0))
                    // One bit per channel that has carried a message (see domain::channel).
                    .col(integer(Conversations::ChannelMask).default(0))
                    .col(timestamp_with_time_zone_null(Conversations::LastMessageAt))
                    .col(text_null(Conversations::LastMessagePreview))
                    .col(string_len_null(Conversations::LastMessageChannel, 16))
                    .col(string_len_null(Conversations::LastMessageDirection, 16))
                    .col(timestamp_with_time_zone(Conversations::LastActivityAt))
                    .col(timestamp_with_time_zone(Conversations::CreatedAt))
                    .col(timestamp_with_time_zone(Conversations::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_conversations_business",
                        (Conversations::Table, Conversations::BusinessId),
                        (Businesses::Table, Businesses::Id),
                    ))
                    .foreign_key(&mut fk(
                        "fk_conversations_client",
                        (Conversations::Table, Conversations::ClientId),
                        (Clients::Table, Clients::Id),
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_conversations_location")
                            .from(Conversations::Table, Conversations::LocationId)
                            .to(Locations::Table, Locations::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_conversations_assignee")
                            .from(Conversations::Table, Conversations::AssignedStaffId)
                            .to(Staff::Table, Staff::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ConversationCounts::Table)
                    .if_not_exists()
                    .col(big_integer(ConversationCounts::BusinessId))
                    .col(string_len(ConversationCounts::Status, 16))
                    // 0 for unassigned conversations.
                    .col(big_integer(ConversationCounts::AssigneeId))
                    .col(big_integer(ConversationCounts::Count))
                    .primary_key(
                        Index::create()
                            .col(ConversationCounts::BusinessId)
                            .col(ConversationCounts::Status)
                            .col(ConversationCounts::AssigneeId),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Messages::Id))
                    .col(string_len_uniq(Messages::PublicId, 36))
                    .col(big_integer(Messages::BusinessId))
                    .col(big_integer(Messages::ConversationId))
                    .col(big_integer(Messages::ClientId))
                    .col(string_len(Messages::Channel, 16))
                    .col(string_len(Messages::Direction, 16))
                    .col(string_len(Messages::SenderType, 16))
                    .col(big_integer_null(Messages::SenderStaffId))
                    .col(text(Messages::Content))
                    .col(text_null(Messages::Subject))
                    .col(string_len_null(Messages::NoteCategory, 32))
                    .col(string_len_null(Messages::RequestId, 64))
                    .col(string_len_null(Messages::Provider, 32))
                    .col(string_null(Messages::ProviderMessageId))
                    .col(string_len(Messages::Status, 32))
                    .col(timestamp_with_time_zone_null(Messages::StatusUpdatedAt))
                    .col(string_len_null(Messages::ErrorCode, 32))
                    .col(text_null(Messages::ErrorMessage))
                    .col(integer(Messages::AttemptCount).default(0))
                    .col(timestamp_with_time_zone_null(Messages::ReadAt))
                    .col(timestamp_with_time_zone(Messages::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_messages_conversation",
                        (Messages::Table, Messages::ConversationId),
                        (Conversations::Table, Conversations::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ConversationEvents::Table)
                    .if_not_exists()
                    .col(big_pk_auto(ConversationEvents::Id))
                    .col(big_integer(ConversationEvents::BusinessId))
                    .col(big_integer_null(ConversationEvents::ConversationId))
                    .col(string_len(ConversationEvents::Kind, 48))
                    .col(big_integer_null(ConversationEvents::ActorKeyId))
                    .col(big_integer_null(ConversationEvents::ActorStaffId))
                    .col(text(ConversationEvents::Data))
                    .col(timestamp_with_time_zone(ConversationEvents::CreatedAt))
                    .to_owned(),
            )
            .await?;

        let indexes = [
            index("uq_businesses_external_ref", Businesses::Table, cols![Businesses::ExternalRef], true),
            index(
                "uq_locations_external_ref",
                Locations::Table,
                cols![Locations::BusinessId, Locations::ExternalRef],
                true,
            ),
            index("uq_locations_messaging_service", Locations::Table, cols![Locations::MessagingServiceSid], true),
            index("idx_locations_business", Locations::Table, cols![Locations::BusinessId, Locations::Id], false),
            index(
                "uq_location_phone_numbers_phone",
                LocationPhoneNumbers::Table,
                cols![LocationPhoneNumbers::PhoneE164],
                true,
            ),
            index(
                "idx_location_phone_numbers_location",
                LocationPhoneNumbers::Table,
                cols![LocationPhoneNumbers::LocationId],
                false,
            ),
            index("uq_staff_external_ref", Staff::Table, cols![Staff::BusinessId, Staff::ExternalRef], true),
            index("uq_staff_email", Staff::Table, cols![Staff::BusinessId, Staff::Email], true),
            index("idx_staff_business", Staff::Table, cols![Staff::BusinessId, Staff::Id], false),
            index("uq_clients_external_ref", Clients::Table, cols![Clients::BusinessId, Clients::ExternalRef], true),
            index("uq_clients_phone", Clients::Table, cols![Clients::BusinessId, Clients::PhoneE164], true),
            index("uq_clients_email", Clients::Table, cols![Clients::BusinessId, Clients::Email], true),
            index("idx_clients_business", Clients::Table, cols![Clients::BusinessId, Clients::Id], false),
            // One thread per business and client: concurrent create-or-retrieve calls meet here.
            index(
                "uq_conversations_client",
                Conversations::Table,
                cols![Conversations::BusinessId, Conversations::ClientId],
                true,
            ),
            // The inbox's sort (last activity, newest first), alone and behind each filter.
            index(
                "idx_conversations_activity",
                Conversations::Table,
                cols![Conversations::BusinessId, Conversations::LastActivityAt, Conversations::Id],
                false,
            ),
            index(
                "idx_conversations_status_activity",
                Conversations::Table,
                cols![
                    Conversations::BusinessId,
                    Conversations::Status,
                    Conversations::LastActivityAt,
                    Conversations::Id
                ],
                false,
            ),
            index(
                "idx_conversations_assignee_activity",
                Conversations::Table,
                cols![
                    Conversations::BusinessId,
                    Conversations::AssignedStaffId,
                    Conversations::LastActivityAt,
                    Conversations::Id
                ],
                false,
            ),
            index(
                "idx_conversations_location_activity",
                Conversations::Table,
                cols![
                    Conversations::BusinessId,
                    Conversations::LocationId,
                    Conversations::LastActivityAt,
                    Conversations::Id
                ],
                false,
            ),
            // The snooze sweeper's lookup.
            index(
                "idx_conversations_snoozed",
                Conversations::Table,
                cols![Conversations::Status, Conversations::SnoozedUntil],
                false,
            ),
            index(
                "idx_messages_conversation",
                Messages::Table,
                cols![Messages::ConversationId, Messages::CreatedAt, Messages::Id],
                false,
            ),
            index("idx_messages_request", Messages::Table, cols![Messages::BusinessId, Messages::RequestId], false),
            index(
                "uq_messages_provider_id",
                Messages::Table,
                cols![Messages::Provider, Messages::ProviderMessageId],
                true,
            ),
            index(
                "idx_conversation_events_business",
                ConversationEvents::Table,
                cols![ConversationEvents::BusinessId, ConversationEvents::Id],
                false,
            ),
            index(
                "idx_conversation_events_conversation",
                ConversationEvents::Table,
                cols![ConversationEvents::ConversationId, ConversationEvents::Id],
                false,
            ),
        ];
        for stmt in indexes {
            manager.create_index(stmt).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ConversationEvents::Table.into_iden(),
            Messages::Table.into_iden(),
            ConversationCounts::Table.into_iden(),
            Conversations::Table.into_iden(),
            Clients::Table.into_iden(),
            Staff::Table.into_iden(),
            LocationPhoneNumbers::Table.into_iden(),
            Locations::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        for column in [
            Businesses::ExternalRef.into_iden(),
            Businesses::TimeZone.into_iden(),
            Businesses::DefaultCallingCode.into_iden(),
            Businesses::SmsEnabled.into_iden(),
            Businesses::EmailEnabled.into_iden(),
            Businesses::VoiceEnabled.into_iden(),
            Businesses::ChatEnabled.into_iden(),
        ] {
            manager.alter_table(Table::alter().table(Businesses::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
