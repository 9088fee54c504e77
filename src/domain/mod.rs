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

use std::{sync::Arc, time::Instant};

use tokio::sync::Notify;

pub use error::{Error, FieldViolation, Result, Violations};

use crate::store::Store;

/// Omega's application core, shared by every transport and handler.
#[derive(Clone, Debug)]
pub struct Omega {
    store: Store,
    /// Businesses, locations, staff and clients.
    pub directory: directory::Directory,
    pub started_at: Instant,
    /// Wakes the delivery workers when messages are queued (they also poll, for other replicas'
    /// work and for retries that come due).
    pub delivery_wakeup: Arc<Notify>,
    /// What provider webhooks and voice tokens need (public URL, verification keys).
    pub webhooks: Arc<webhooks::WebhookSettings>,
    /// Access-token signing secrets and the session liveness cache.
    pub tokens: Arc<tokens::TokenSettings>,
    /// The keys that seal stored provider credentials.
    pub secrets: Arc<crate::secrets::SecretKeys>,
    /// Where attachment bytes are kept (in memory unless `with_files` says otherwise).
    pub files: crate::files::FileStore,
    pub attachment_limits: attachments::AttachmentLimits,
    /// How outbound webhook URLs may be addressed.
    pub outbound: webhook_endpoints::OutboundSettings,
    /// Wakes the outbound webhook workers (a replay; new events wake them through the event
    /// log's wake-ups).
    pub webhook_wakeup: Arc<Notify>,
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
        Self {
            directory: directory::Directory::new(store.clone()),
            store,
            started_at: Instant::now(),
            delivery_wakeup: Arc::new(Notify::new()),
            webhooks: Arc::new(webhooks),
            tokens: Arc::new(tokens),
            secrets: Arc::new(secrets),
            files: crate::files::FileStore::in_memory(),
            attachment_limits: attachments::AttachmentLimits::default(),
            outbound: webhook_endpoints::OutboundSettings::default(),
            webhook_wakeup: Arc::new(Notify::new()),
        }
    }

    /// With this attachment store and these limits.
    pub fn with_files(mut self, files: crate::files::FileStore, limits: attachments::AttachmentLimits) -> Self {
        self.files = files;
        self.attachment_limits = limits;
        self
    }

    /// With these outbound webhook settings.
    pub fn with_outbound(mut self, outbound: webhook_endpoints::OutboundSettings) -> Self {
        self.outbound = outbound;
        self
    }

    pub async fn authenticate(&self, presented_key: &str) -> Result<auth::Caller> {
        auth::authenticate(&self.store, presented_key).await
    }

    /// Tells when the server is stopping (the event log's wake-ups carry it), for long-lived
    /// connections that must end then.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.store.event_wakeups().subscribe().1
    }
}
