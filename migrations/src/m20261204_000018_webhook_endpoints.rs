//! Outbound webhooks: a business's endpoints, and the durable outbox of their deliveries.
//!
//! A trigger on the event log writes one `webhook_deliveries` row per (enabled endpoint whose
//! filter matches, event) in the transaction that appends the event: an event that commits has
//! its deliveries, one that rolls back has none, and the unique (endpoint, event) pair keeps a
//! replay from ever making a second row. Workers on any replica claim due rows
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the single writer on SQLite).
//!
//! `event_types` is the endpoint's filter as `,kind,kind,` ('' = every kind), so that the
//! trigger matches a kind with one string search on both databases.

use sea_orm_migration::{
    prelude::*,
    schema::*,
    sea_orm::{ConnectionTrait, DbBackend},
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Id,
    BusinessId,
    Url,
    Description,
    EventTypes,
    Enabled,
    DisabledReason,
    DisabledAt,
    Secret,
    PreviousSecret,
    PreviousSecretUntil,
    ConsecutiveFailures,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    EndpointId,
    BusinessId,
    EventId,
    State,
    AttemptCount,
    NextAttemptAt,
    LockedBy,
    LockedUntil,
    LastStatusCode,
    LastError,
    LastAttemptAt,
    DeliveredAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Businesses {
    Table,
    Id,
}

const SQLITE_TRIGGER: &str = "CREATE TRIGGER IF NOT EXISTS conversation_events_webhooks AFTER INSERT ON conversation_events \
     BEGIN \
       INSERT INTO webhook_deliveries (endpoint_id, business_id, event_id, state, attempt_count, next_attempt_at, created_at, updated_at) \
       SELECT e.id, NEW.business_id, NEW.id, 'pending', 0, NEW.created_at, NEW.created_at, NEW.created_at \
       FROM webhook_endpoints e \
       WHERE e.business_id = NEW.business_id AND e.enabled \
         AND (e.event_types = '' OR instr(e.event_types, ',' || NEW.kind || ',') > 0); \
     END";

const PG_FUNCTION: &str = "CREATE OR REPLACE FUNCTION omega_enqueue_webhooks() RETURNS trigger AS $$ \
     BEGIN \
       INSERT INTO webhook_deliveries (endpoint_id, business_id, event_id, state, attempt_count, next_attempt_at, created_at, updated_at) \
       SELECT e.id, NEW.business_id, NEW.id, 'pending', 0, NEW.created_at, NEW.created_at, NEW.created_at \
       FROM webhook_endpoints e \
       WHERE e.business_id = NEW.business_id AND e.enabled \
         AND (e.event_types = '' OR position(',' || NEW.kind || ',' in e.event_types) > 0); \
       RETURN NULL; \
     END; $$ LANGUAGE plpgsql";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookEndpoints::Table)
                    .if_not_exists()
                    .col(big_pk_auto(WebhookEndpoints::Id))
                    .col(big_integer(WebhookEndpoints::BusinessId))
                    .col(text(WebhookEndpoints::Url))
                    .col(text(WebhookEndpoints::Description).default(""))
                    .col(text(WebhookEndpoints::EventTypes).default(""))
                    .col(boolean(WebhookEndpoints::Enabled).default(true))
                    .col(text_null(WebhookEndpoints::DisabledReason))
                    .col(timestamp_with_time_zone_null(WebhookEndpoints::DisabledAt))
                    .col(text(WebhookEndpoints::Secret))
                    .col(text_null(WebhookEndpoints::PreviousSecret))
                    .col(timestamp_with_time_zone_null(WebhookEndpoints::PreviousSecretUntil))
                    .col(integer(WebhookEndpoints::ConsecutiveFailures).default(0))
                    .col(timestamp_with_time_zone(WebhookEndpoints::CreatedAt))
                    .col(timestamp_with_time_zone(WebhookEndpoints::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookEndpoints::Table, WebhookEndpoints::BusinessId)
                            .to(Businesses::Table, Businesses::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_endpoints_business")
                    .table(WebhookEndpoints::Table)
                    .col(WebhookEndpoints::BusinessId)
                    .col(WebhookEndpoints::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .if_not_exists()
                    .col(big_pk_auto(WebhookDeliveries::Id))
                    .col(big_integer(WebhookDeliveries::EndpointId))
                    .col(big_integer(WebhookDeliveries::BusinessId))
                    .col(big_integer(WebhookDeliveries::EventId))
                    .col(string_len(WebhookDeliveries::State, 16))
                    .col(integer(WebhookDeliveries::AttemptCount).default(0))
                    .col(timestamp_with_time_zone(WebhookDeliveries::NextAttemptAt))
                    .col(string_len_null(WebhookDeliveries::LockedBy, 64))
                    .col(timestamp_with_time_zone_null(WebhookDeliveries::LockedUntil))
                    .col(integer_null(WebhookDeliveries::LastStatusCode))
                    .col(text_null(WebhookDeliveries::LastError))
                    .col(timestamp_with_time_zone_null(WebhookDeliveries::LastAttemptAt))
                    .col(timestamp_with_time_zone_null(WebhookDeliveries::DeliveredAt))
                    .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                    .col(timestamp_with_time_zone(WebhookDeliveries::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookDeliveries::Table, WebhookDeliveries::EndpointId)
                            .to(WebhookEndpoints::Table, WebhookEndpoints::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One delivery per (endpoint, event): fan-out and replays are idempotent.
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_deliveries_endpoint_event")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::EndpointId)
                    .col(WebhookDeliveries::EventId)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // The delivery log, newest first, per endpoint.
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_deliveries_endpoint_id")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::EndpointId)
                    .col(WebhookDeliveries::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Claims: due rows by state.
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_deliveries_due")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::State)
                    .col(WebhookDeliveries::NextAttemptAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(PG_FUNCTION).await?;
                db.execute_unprepared("DROP TRIGGER IF EXISTS conversation_events_webhooks ON conversation_events")
                    .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER conversation_events_webhooks AFTER INSERT ON conversation_events \
                     FOR EACH ROW EXECUTE FUNCTION omega_enqueue_webhooks()",
                )
                .await?;
            }
            _ => {
                db.execute_unprepared(SQLITE_TRIGGER).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared("DROP TRIGGER IF EXISTS conversation_events_webhooks ON conversation_events")
                    .await?;
                db.execute_unprepared("DROP FUNCTION IF EXISTS omega_enqueue_webhooks()").await?;
            }
            _ => {
                db.execute_unprepared("DROP TRIGGER IF EXISTS conversation_events_webhooks").await?;
            }
        }
        manager.drop_table(Table::drop().table(WebhookDeliveries::Table).if_exists().to_owned()).await?;
        manager.drop_table(Table::drop().table(WebhookEndpoints::Table).if_exists().to_owned()).await
    }
}
