//! Process and database health.

use std::time::Instant;

use super::{Error, Omega, Result};

/// The outcome of one database round trip.
pub struct DatabaseCheck {
    pub engine: &'static str,
    pub latency_ms: f64,
}

impl Omega {
    pub fn uptime_seconds(&self) -> f64 {
        self.started_at.elapsed().as_secs_f64()
    }

    /// Times one real round trip to the database. Any failure is UNAVAILABLE: the caller
    /// learns the database is down; the cause goes to the log, not to the client.
    pub async fn check_database(&self) -> Result<DatabaseCheck> {
        let started = Instant::now();
        if let Err(err) = self.store.ping().await {
            let cause = format!("{:#}", anyhow::Error::new(err));
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
