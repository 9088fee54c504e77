//! The rules of Omega, independent of any transport. API handlers call into this layer with an
//! authenticated [`auth::Caller`]; it talks to the database only through [`crate::store`].

pub mod attachments;
pub mod auth;
pub mod calls;
pub mod chat;
pub mod conversations;
pub mod directory;
mod error;
pub mod events;
pub mod health;
pub mod inbound_email;
pub mod messages;
pub mod pagination;
pub mod providers;
pub mod tokens;
pub mod values;
pub mod views;
pub mod webhook_endpoints;
pub mod webhooks;

use std::sync::Arc;

use tokio::sync::Notify;

pub use error::{Error, FieldViolation, Result, Violations};

use crate::store::Store;

/// Omega's application core, shared by every transport and handler.
#[derive(Clone, Debug)]
pub struct Omega {
    store: Store,
    /// Businesses, locations, staff and clients.
    pub directory: directory::Directory,
    /// Wakes the delivery workers when messages are queued (they also poll, for other replicas'
    /// work and for retries that come due).
    pub delivery_wakeup: Arc<Notify>,
    /// What provider webhooks and voice tokens need (public URL, verification keys).
    pub webhooks: Arc<webhooks::WebhookSettings>,
    /// Access tokens and their sessions.
    pub tokens: tokens::Tokens,
    /// Businesses' provider credentials and settings.
    pub providers: providers::Providers,
    /// The keys that seal stored provider credentials.
    pub secrets: Arc<crate::secrets::SecretKeys>,
    /// Files attached to messages.
    pub attachments: attachments::Attachments,
    /// The business's event log, as pages and live streams.
    pub events: events::Events,
    /// Whether the process and its database are up.
    pub health: health::Health,
    /// Outbound webhook endpoints and their delivery log.
    pub webhook_endpoints: webhook_endpoints::WebhookEndpoints,
}

impl Omega {
    /// With default settings and a random secrets key that ends with the process.
    pub fn new(store: Store) -> Self {
        let secrets = crate::secrets::SecretKeys::new(None, &crate::secrets::SecretKeys::generate_key(), &[])
            .expect("a generated key is valid");
        Self::with_settings(store, webhooks::WebhookSettings::default(), tokens::TokenSettings::default(), secrets)
    }

    pub fn with_settings(
        store: Store,
        webhooks: webhooks::WebhookSettings,
        tokens: tokens::TokenSettings,
        secrets: crate::secrets::SecretKeys,
    ) -> Self {
        let (webhooks, secrets) = (Arc::new(webhooks), Arc::new(secrets));
        // The areas with their own service; the rest are still `impl Omega` in their modules.
        let directory = directory::Directory::new(store.clone());
        Self {
            providers: providers::Providers::new(store.clone(), directory.clone(), secrets.clone(), webhooks.clone()),
            webhook_endpoints: webhook_endpoints::WebhookEndpoints::new(
                store.clone(),
                directory.clone(),
                secrets.clone(),
            ),
            attachments: attachments::Attachments::new(store.clone(), directory.clone()),
            events: events::Events::new(store.clone()),
            health: health::Health::new(store.clone()),
            tokens: tokens::Tokens::new(store.clone(), tokens, directory.clone()),
            directory,
            store,
            delivery_wakeup: Arc::new(Notify::new()),
            webhooks,
            secrets,
        }
    }

    /// With this attachment store and these limits.
    pub fn with_files(mut self, files: crate::files::FileStore, limits: attachments::AttachmentLimits) -> Self {
        self.attachments.files = files;
        self.attachments.limits = limits;
        self
    }

    /// With these outbound webhook settings.
    pub fn with_outbound(mut self, outbound: webhook_endpoints::OutboundSettings) -> Self {
        self.webhook_endpoints = self.webhook_endpoints.with_outbound(outbound);
        self
    }

    pub async fn authenticate(&self, presented_key: &str) -> Result<auth::Caller> {
        auth::authenticate(&self.store, presented_key).await
    }

    /// Housekeeping: sessions a day past expiry and provider events a week old are deleted
    /// (every replica may run it; deletes are idempotent). Answers how many rows went.
    pub async fn purge_stale_records(&self) -> Result<u64> {
        let sessions = self.tokens.purge_expired_sessions().await?;
        let week_ago = values::now() - chrono::Duration::days(7);
        let events = crate::store::webhook_events::purge_webhook_events(self.store.writer(), week_ago).await?;
        Ok(sessions + events)
    }

    /// Tells when the server is stopping (the event log's wake-ups carry it), for long-lived
    /// connections that must end then.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.store.event_wakeups().subscribe().1
    }
}
