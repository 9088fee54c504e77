//! Omega's schema as one ordered set of sea-orm migrations, run unchanged on SQLite and
//! PostgreSQL (on start by `omega serve`, or by `omega migrate`).

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_businesses_and_api_keys;
mod m20261121_000002_directory_and_conversations;
mod m20261121_000003_delivery;
mod m20261121_000004_webhooks;
mod m20261121_000005_sessions;
mod m20261121_000006_chat_inboxes;
mod m20261121_000007_client_text_index;
mod m20261121_000008_conversation_scoped_search;
mod m20261121_000009_conversation_search_index;
mod m20261121_000010_inbox_covering_indexes;
mod m20261201_000011_chat_identity;
mod m20261201_000012_provider_ownership;
mod m20261201_000014_failed_message_index;
mod m20261201_000015_custom_attributes;
mod m20261201_000016_attachments;
mod m20261202_000017_event_stream;
mod m20261204_000018_webhook_endpoints;
mod m20261204_000019_inbound_email;
mod m20261204_000020_inbound_calls;
mod m20261204_000021_business_search;
mod m20261204_000023_notify_after_commit;
mod m20261206_000024_conversation_keyed_search;
mod m20261206_000025_conversation_terms_index;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_businesses_and_api_keys::Migration),
            Box::new(m20261121_000002_directory_and_conversations::Migration),
            Box::new(m20261121_000003_delivery::Migration),
            Box::new(m20261121_000004_webhooks::Migration),
            Box::new(m20261121_000005_sessions::Migration),
            Box::new(m20261121_000006_chat_inboxes::Migration),
            Box::new(m20261121_000007_client_text_index::Migration),
            Box::new(m20261121_000008_conversation_scoped_search::Migration),
            Box::new(m20261121_000009_conversation_search_index::Migration),
            Box::new(m20261121_000010_inbox_covering_indexes::Migration),
            Box::new(m20261201_000011_chat_identity::Migration),
            Box::new(m20261201_000012_provider_ownership::Migration),
            Box::new(m20261201_000014_failed_message_index::Migration),
            Box::new(m20261201_000015_custom_attributes::Migration),
            Box::new(m20261201_000016_attachments::Migration),
            Box::new(m20261202_000017_event_stream::Migration),
            Box::new(m20261204_000018_webhook_endpoints::Migration),
            Box::new(m20261204_000019_inbound_email::Migration),
            Box::new(m20261204_000020_inbound_calls::Migration),
            Box::new(m20261204_000021_business_search::Migration),
            Box::new(m20261204_000023_notify_after_commit::Migration),
            Box::new(m20261206_000024_conversation_keyed_search::Migration),
            Box::new(m20261206_000025_conversation_terms_index::Migration),
        ]
    }
}
