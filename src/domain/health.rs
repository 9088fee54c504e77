//! Process and database health.

use std::time::Instant;

use super::{Error, Result};
use crate::store::Store;

/// The outcome of one database round trip.
pub struct DatabaseCheck {
    pub engine: &'static str,
    pub latency_ms: f64,
}

/// Whether the process and its database are up.
#[derive(Clone, Debug)]
pub struct Health {
    store: Store,
    started_at: Instant,
}

impl Health {
    pub(super) fn new(store: Store) -> Self {
        Self { store, started_at: Instant::now() }
    }

    pub fn uptime_seconds(&self) -> f64 {
        self.started_at.elapsed().as_secs_f64()
    }

    /// Times one real round trip to the database. Any failure is UNAVAILABLE: the caller
    /// learns the database is down; the cause goes to the log, not to the client.
    pub async fn check_database(&self) -> Result<DatabaseCheck> {
        let started = Instant::now();
        // A check that cannot finish within a second says the database is down: health must
        // follow an outage within about a second, not after the pool's own timeouts.
        let ping = tokio::time::timeout(std::time::Duration::from_secs(1), self.store.ping()).await;
        let failure = match ping {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(format!("{:#}", anyhow::Error::new(err))),
            Err(_) => Some("no answer within 1 s".to_owned()),
        };
        if let Some(cause) = failure {
            tracing::warn!(error = %cause, "database check failed");
            return Err(Error::Unavailable("the database is unreachable".into()));
        }
        Ok(DatabaseCheck {
            engine: self.store.engine(),
            // Microsecond precision is all a latency needs (and keeps the JSON short).
            latency_ms: (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0,
        })
    }
}
