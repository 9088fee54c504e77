//! Command line and `OMEGA_*` environment configuration (flags win over the environment).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/omega.db?mode=rwc";
/// Omega's deadline for one call; Envoy's route timeout follows it.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
/// Downstream connections one Envoy holds at once.
pub const DEFAULT_ENVOY_MAX_CONNECTIONS: u64 = 10_000;

#[derive(Debug, Parser)]
#[command(name = "omega", version, about = "Omnichannel messaging backend: gRPC, gRPC-Web and REST (through Envoy)")]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (gRPC, gRPC-Web, health, reflection) until SIGTERM/SIGINT.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Create, list and revoke API keys; re-seal stored secrets under the current secrets key.
    Keys {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        secrets: SecretsArgs,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Write the FileDescriptorSet (for Envoy's transcoder, grpcurl, buf) or list the services.
    Descriptor(DescriptorArgs),
    /// Render `envoy/envoy.yaml` and the descriptor set into a directory, ready for `envoy -c`.
    EnvoyConfig(EnvoyConfigArgs),
    /// Write the OpenAPI 3 document of the REST surface (generated from the protos).
    Openapi {
        /// Where to write it (stdout when omitted).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

// Out-of-range values are refused at start-up with the setting's name, never clamped: a value
// that silently became another would hide a typo until it mattered.

/// A count or a number of seconds that zero would turn into a busy loop or an instant failure.
fn at_least_one() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..)
}

/// Messages per second: 0 (unpaced) or a positive, finite rate.
fn rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value.parse().map_err(|_| format!("{value:?} is not a number"))?;
    if !rate.is_finite() || rate < 0.0 {
        return Err(format!("{value:?} must be 0 (unpaced) or a positive number of messages per second"));
    }
    Ok(rate)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, global = true, env = "OMEGA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,omega=debug`).
    #[arg(long, global = true, env = "OMEGA_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `sqlite://PATH?mode=rwc` (embedded, the default) or `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "OMEGA_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// Connections this process opens at most: PostgreSQL's pool; on SQLite the readers beside
    /// its one writer. Opened as needed.
    #[arg(long, env = "OMEGA_DATABASE_MAX_CONNECTIONS", default_value_t = crate::store::DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address to serve gRPC and gRPC-Web on (port 0 picks a free port).
    #[arg(long, env = "OMEGA_LISTEN_ADDR", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Write the bound address to this file once serving (useful with port 0).
    #[arg(long, env = "OMEGA_ADDRESS_FILE")]
    pub address_file: Option<PathBuf>,
    /// Serve Prometheus metrics at `/metrics` on this address (its own port; off when unset).
    #[arg(long, env = "OMEGA_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Address of the ActionCable websocket (`/cable`, for chat widgets); `off` serves none.
    /// A port of its own: tonic's server cannot upgrade a connection to a websocket. Envoy
    /// routes `/cable` here (`OMEGA_CABLE_UPSTREAM`).
    #[arg(long, env = "OMEGA_CABLE_LISTEN_ADDR", default_value = "127.0.0.1:50052")]
    pub cable_listen: String,
    /// Write the websocket's bound address to this file (before `OMEGA_ADDRESS_FILE`).
    #[arg(long, env = "OMEGA_CABLE_ADDRESS_FILE")]
    pub cable_address_file: Option<PathBuf>,
    /// Seconds between the pings of `/cable` connections (ActionCable's is 3; its clients
    /// reconnect after 6 without one).
    #[arg(long, env = "OMEGA_CABLE_PING_SECS", default_value_t = 3)]
    pub cable_ping_secs: u64,
    /// Latest events of each business kept in memory for its live streams (a stream further
    /// behind reads the log itself until it catches up).
    #[arg(long, env = "OMEGA_EVENT_FEED_ROWS", default_value_t = crate::store::events::DEFAULT_FEED_ROWS, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub event_feed_rows: u64,
    /// Apply pending migrations before serving.
    #[arg(long, env = "OMEGA_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,
    /// A platform API key to install on start if it was never stored (≥ 32 characters).
    #[arg(long, env = "OMEGA_BOOTSTRAP_API_KEY", hide_env_values = true)]
    pub bootstrap_api_key: Option<String>,
    /// Origins allowed by CORS for browser (gRPC-Web) calls, comma-separated; `*` for any.
    #[arg(long, env = "OMEGA_CORS_ALLOWED_ORIGINS", value_delimiter = ',', default_value = "*")]
    pub cors_allowed_origins: Vec<String>,
    /// Seconds between the database checks that drive `grpc.health.v1`.
    #[arg(long, env = "OMEGA_HEALTH_CHECK_INTERVAL_SECS", default_value_t = 1, value_parser = at_least_one())]
    pub health_check_interval_secs: u64,
    /// Seconds a call may take before Omega answers CANCELLED (a client's shorter `grpc-timeout`
    /// wins). `omega envoy-config` reads the same setting for Envoy's route timeout.
    #[arg(long, env = "OMEGA_REQUEST_TIMEOUT_SECS", default_value_t = DEFAULT_REQUEST_TIMEOUT_SECS, value_parser = at_least_one())]
    pub request_timeout_secs: u64,
    /// On SIGTERM: seconds spent reporting NOT_SERVING while still serving every call, so that
    /// Envoy's health check takes this replica out of rotation before it stops listening.
    #[arg(long, env = "OMEGA_DRAIN_SECS", default_value_t = 5)]
    pub drain_secs: u64,
    /// Seconds between checks for snoozed conversations whose time has come.
    #[arg(long, env = "OMEGA_SNOOZE_CHECK_INTERVAL_SECS", default_value_t = 5, value_parser = at_least_one())]
    pub snooze_check_interval_secs: u64,
    /// Secret that signs access tokens (≥ 32 characters; the same on every replica).
    #[arg(long, env = "OMEGA_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// The secret before the last rotation: its tokens keep working until they expire.
    #[arg(long, env = "OMEGA_TOKEN_PREVIOUS_SECRET", hide_env_values = true)]
    pub token_previous_secret: Option<String>,
    /// Failed authentications allowed per client address per minute before it gets 429s.
    #[arg(long, env = "OMEGA_AUTH_FAILURES_PER_MINUTE", default_value_t = 30)]
    pub auth_failures_per_minute: u32,
    /// Proxies (IPs or CIDRs, comma-separated) whose `X-Forwarded-For` names the client; none by
    /// default, so that no caller can pick the address its failures count against.
    #[arg(long, env = "OMEGA_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    #[command(flatten)]
    pub secrets: SecretsArgs,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    #[command(flatten)]
    pub attachments: AttachmentArgs,
    #[command(flatten)]
    pub webhooks: OutboundWebhookArgs,
}

/// Outbound webhooks: the workers that send a business's events to its endpoints.
#[derive(Debug, Clone, Args)]
pub struct OutboundWebhookArgs {
    /// Outbound webhook workers in this process (0: none here; other replicas send).
    #[arg(long, env = "OMEGA_WEBHOOKS_WORKERS", default_value_t = 2)]
    pub webhooks_workers: usize,
    /// Deliveries a worker claims and sends at once (1-100).
    #[arg(long, env = "OMEGA_WEBHOOKS_BATCH", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub webhooks_batch: u64,
    /// Seconds one webhook request may take, all in.
    #[arg(long, env = "OMEGA_WEBHOOKS_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub webhooks_timeout_secs: u64,
    /// The delay before each retry (ms, s, m, h), comma-separated; the delivery fails after the
    /// last one.
    #[arg(long, env = "OMEGA_WEBHOOKS_RETRY_SCHEDULE", default_value = crate::delivery::webhooks::DEFAULT_SCHEDULE, value_parser = schedule)]
    pub webhooks_retry_schedule: RetrySchedule,
    /// Deliveries ending failed in a row (after their retries, or at once on a 4xx) that
    /// disable an endpoint.
    #[arg(long, env = "OMEGA_WEBHOOKS_DISABLE_AFTER", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub webhooks_disable_after: u32,
    /// Idle workers look for due deliveries this often, in milliseconds.
    #[arg(long, env = "OMEGA_WEBHOOKS_POLL_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub webhooks_poll_ms: u64,
    /// Days delivered and failed deliveries stay in the delivery log.
    #[arg(long, env = "OMEGA_WEBHOOKS_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub webhooks_retention_days: u64,
    /// Allow endpoint URLs with plain http (otherwise https only).
    #[arg(long, env = "OMEGA_WEBHOOKS_ALLOW_HTTP", default_value_t = false, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub webhooks_allow_http: bool,
    /// Allow private, loopback, link-local and other non-public addresses (tests, private
    /// networks); otherwise such addresses are refused.
    #[arg(long, env = "OMEGA_WEBHOOKS_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub webhooks_allow_private: bool,
}

/// A retry schedule such as `5s,5m,2h`: the delay before each retry.
#[derive(Debug, Clone)]
pub struct RetrySchedule(pub Vec<std::time::Duration>);

fn schedule(value: &str) -> Result<RetrySchedule, String> {
    crate::delivery::webhooks::parse_schedule(value).map(RetrySchedule)
}

impl OutboundWebhookArgs {
    pub fn settings(&self) -> crate::domain::webhook_endpoints::OutboundSettings {
        crate::domain::webhook_endpoints::OutboundSettings {
            allow_http: self.webhooks_allow_http,
            allow_private: self.webhooks_allow_private,
        }
    }

    pub fn to_config(&self) -> crate::delivery::webhooks::WebhookDeliveryConfig {
        crate::delivery::webhooks::WebhookDeliveryConfig {
            workers: self.webhooks_workers,
            batch: self.webhooks_batch,
            timeout: std::time::Duration::from_secs(self.webhooks_timeout_secs),
            schedule: self.webhooks_retry_schedule.0.clone(),
            disable_after: self.webhooks_disable_after,
            poll_interval: std::time::Duration::from_millis(self.webhooks_poll_ms),
            allow_private: self.webhooks_allow_private,
            retention: std::time::Duration::from_secs(self.webhooks_retention_days * 86_400),
        }
    }
}

/// Where attachment files are kept, and how large they may be.
#[derive(Debug, Clone, Args)]
pub struct AttachmentArgs {
    /// The directory holding attachment files (default: `attachments` next to the SQLite
    /// database, else `data/attachments`). One replica only: several need OMEGA_ATTACHMENTS_URL.
    #[arg(long, env = "OMEGA_ATTACHMENTS_DIR")]
    pub attachments_dir: Option<PathBuf>,
    /// An S3-compatible bucket for attachment files, `s3://BUCKET[/PREFIX]` (credentials,
    /// region and endpoint from the AWS_* variables); replaces the directory.
    #[arg(long, env = "OMEGA_ATTACHMENTS_URL")]
    pub attachments_url: Option<String>,
    /// The largest attachment accepted, in bytes (a request through Envoy carries at most 4 MiB).
    #[arg(long, env = "OMEGA_ATTACHMENT_MAX_BYTES", default_value_t = 3 * 1024 * 1024)]
    pub attachment_max_bytes: usize,
    /// The most attachments on one message.
    #[arg(long, env = "OMEGA_ATTACHMENT_MAX_FILES", default_value_t = 10)]
    pub attachment_max_files: usize,
}

impl AttachmentArgs {
    pub fn store(&self, database_url: &str) -> anyhow::Result<crate::files::FileStore> {
        if let Some(url) = &self.attachments_url {
            return crate::files::FileStore::s3(url);
        }
        let dir = self.attachments_dir.clone().unwrap_or_else(|| {
            match crate::store::sqlite_file(database_url).and_then(|file| std::path::Path::new(file).parent()) {
                Some(dir) => dir.join("attachments"),
                None => PathBuf::from("data/attachments"),
            }
        });
        crate::files::FileStore::local(&dir)
    }

    pub fn limits(&self) -> crate::domain::attachments::AttachmentLimits {
        crate::domain::attachments::AttachmentLimits {
            max_bytes: self.attachment_max_bytes.max(1),
            max_files: self.attachment_max_files.max(1),
        }
    }
}

/// The key that encrypts stored provider credentials, and the keys it replaced.
#[derive(Clone, Args)]
pub struct SecretsArgs {
    /// 32 random bytes, base64 (`openssl rand -base64 32`); the same on every replica. Without
    /// it, a key file is used (see --secrets-key-file).
    #[arg(long, env = "OMEGA_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,
    /// The id stored with every value sealed by the key (default: derived from the key).
    #[arg(long, env = "OMEGA_SECRETS_KEY_ID")]
    pub secrets_key_id: Option<String>,
    /// Keys rotated out, still read until `omega keys rotate-secrets` has run: comma-separated
    /// `ID:BASE64` (or BASE64 when the id was derived).
    #[arg(long, env = "OMEGA_SECRETS_PREVIOUS_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub secrets_previous_keys: Vec<String>,
    /// Used when OMEGA_SECRETS_KEY is not set: holds the key, created on first start (default:
    /// `omega-secrets.key` next to the SQLite database, else `data/omega-secrets.key`).
    #[arg(long, env = "OMEGA_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
}

// By hand: the derived Debug would print the keys.
impl std::fmt::Debug for SecretsArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsArgs")
            .field("secrets_key_id", &self.secrets_key_id)
            .field("secrets_key_file", &self.secrets_key_file)
            .finish_non_exhaustive()
    }
}

impl SecretsArgs {
    pub fn keys(&self, database_url: &str) -> anyhow::Result<crate::secrets::SecretKeys> {
        use crate::secrets::{SecretKeys, default_key_file, key_from_file};
        let key = match &self.secrets_key {
            Some(key) => key.clone(),
            None => {
                let path = self.secrets_key_file.clone().unwrap_or_else(|| default_key_file(database_url));
                let key = key_from_file(&path)?;
                tracing::info!(file = %path.display(), "no OMEGA_SECRETS_KEY: stored secrets are sealed with the key file's key");
                key
            }
        };
        SecretKeys::new(self.secrets_key_id.as_deref(), &key, &self.secrets_previous_keys)
    }
}

/// The delivery pipeline and its providers.
#[derive(Debug, Clone, Args)]
pub struct DeliveryArgs {
    /// Delivery workers in this process (0 disables delivery here).
    #[arg(long, env = "OMEGA_DELIVERY_WORKERS", default_value_t = 4)]
    pub delivery_workers: usize,
    /// Jobs a worker claims per round trip (each is marked as sending only right before its own
    /// provider call).
    #[arg(long, env = "OMEGA_DELIVERY_BATCH", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=500))]
    pub delivery_batch: u64,
    /// Provider calls a worker has in flight at once (the most a killed worker can leave
    /// with an unknown outcome). 16 × the 4 default workers keeps a replica under Twilio's
    /// default of 100 concurrent API requests per account, and is what dispatches 2,000+ msg/s
    /// on PostgreSQL, where each call waits for its `sending` mark to commit.
    #[arg(long, env = "OMEGA_DELIVERY_CONCURRENCY", default_value_t = 16, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=500))]
    pub delivery_concurrency: usize,
    /// Seconds after an ambiguous SMS before it is looked up in Twilio's message list.
    #[arg(long, env = "OMEGA_DELIVERY_RECONCILE_AFTER_SECS", default_value_t = 60)]
    pub delivery_reconcile_after_secs: u64,
    /// Attempts before a message that keeps failing retryably is FAILED.
    #[arg(long, env = "OMEGA_DELIVERY_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub delivery_max_attempts: i32,
    /// First retry delay in milliseconds (doubled per attempt, with jitter).
    #[arg(long, env = "OMEGA_DELIVERY_RETRY_BASE_MS", default_value_t = 2_000)]
    pub delivery_retry_base_ms: u64,
    /// How often idle workers look for due jobs, in milliseconds.
    #[arg(long, env = "OMEGA_DELIVERY_POLL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..))]
    pub delivery_poll_ms: u64,
    /// Seconds a claimed job stays with its worker before another may take it.
    #[arg(long, env = "OMEGA_DELIVERY_LEASE_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..))]
    pub delivery_lease_secs: u64,
    /// SMS per second per sender (number or messaging service); 0 = unpaced.
    #[arg(long, env = "OMEGA_SMS_SENDER_RATE", default_value_t = 1.0, value_parser = rate)]
    pub sms_sender_rate: f64,
    /// Emails per second per sender address; 0 = unpaced.
    #[arg(long, env = "OMEGA_EMAIL_SENDER_RATE", default_value_t = 0.0, value_parser = rate)]
    pub email_sender_rate: f64,
    #[arg(long, env = "OMEGA_TWILIO_BASE_URL", default_value = "https://api.twilio.com")]
    pub twilio_base_url: String,
    #[arg(long, env = "OMEGA_SENDGRID_BASE_URL", default_value = "https://api.sendgrid.com")]
    pub sendgrid_base_url: String,
    /// Seconds a provider call may take, all in.
    #[arg(long, env = "OMEGA_PROVIDER_TIMEOUT_SECS", default_value_t = 10, value_parser = at_least_one())]
    pub provider_timeout_secs: u64,
    /// Omega's public base URL, for provider callbacks (e.g. https://api.example.com).
    #[arg(long, env = "OMEGA_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Twilio account used for businesses that have not set their own.
    #[arg(long, env = "OMEGA_TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,
    #[arg(long, env = "OMEGA_TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,
    /// Twilio API key (SK…) and secret that sign voice access tokens.
    #[arg(long, env = "OMEGA_TWILIO_API_KEY_SID")]
    pub twilio_api_key_sid: Option<String>,
    #[arg(long, env = "OMEGA_TWILIO_API_KEY_SECRET", hide_env_values = true)]
    pub twilio_api_key_secret: Option<String>,
    /// The TwiML app (AP…) whose Voice URL is Omega's /omega/voice-calls/twiml.
    #[arg(long, env = "OMEGA_TWILIO_TWIML_APP_SID")]
    pub twilio_twiml_app_sid: Option<String>,
    /// SendGrid's Event Webhook verification key (base64 SPKI, from SendGrid's settings).
    #[arg(long, env = "OMEGA_SENDGRID_WEBHOOK_PUBLIC_KEY")]
    pub sendgrid_webhook_public_key: Option<String>,
    /// Inbound calls: seconds the conversation's assignee is rung before the other staff are.
    #[arg(long, env = "OMEGA_VOICE_ASSIGNEE_RING_SECS", default_value_t = 15, value_parser = clap::value_parser!(u32).range(5..=600))]
    pub voice_assignee_ring_secs: u32,
    /// Inbound calls: seconds the other active staff are rung before voicemail.
    #[arg(long, env = "OMEGA_VOICE_STAFF_RING_SECS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(5..=600))]
    pub voice_staff_ring_secs: u32,
    /// Inbound calls: the longest voicemail recorded, in seconds.
    #[arg(long, env = "OMEGA_VOICEMAIL_MAX_SECS", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub voicemail_max_secs: u32,
    /// A domain whose mail is routed to Omega's inbound email (e.g. `in.example.com`): emails
    /// sent then carry `Reply-To: reply+{message id}@{domain}`, which threads replies.
    #[arg(long, env = "OMEGA_EMAIL_INBOUND_DOMAIN", value_parser = inbound_domain)]
    pub email_inbound_domain: Option<String>,
}

/// A mail domain: letters, digits, dots and hyphens, with a dot.
fn inbound_domain(value: &str) -> Result<String, String> {
    let domain = value.trim().trim_start_matches('@').to_ascii_lowercase();
    let valid = domain.contains('.')
        && domain.len() <= 253
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if valid { Ok(domain) } else { Err(format!("{value:?} is not a mail domain (e.g. in.example.com)")) }
}

impl DeliveryArgs {
    pub fn webhook_settings(&self) -> crate::domain::webhooks::WebhookSettings {
        let voice = match (
            &self.twilio_account_sid,
            &self.twilio_api_key_sid,
            &self.twilio_api_key_secret,
            &self.twilio_twiml_app_sid,
        ) {
            (Some(account_sid), Some(api_key_sid), Some(api_key_secret), Some(twiml_app_sid)) => {
                Some(crate::domain::webhooks::VoiceSettings {
                    account_sid: account_sid.clone(),
                    api_key_sid: api_key_sid.clone(),
                    api_key_secret: api_key_secret.clone(),
                    twiml_app_sid: twiml_app_sid.clone(),
                })
            }
            _ => None,
        };
        crate::domain::webhooks::WebhookSettings {
            public_url: self.public_url.clone(),
            platform_twilio: self.to_config().platform_twilio,
            sendgrid_public_key: self.sendgrid_webhook_public_key.clone(),
            voice,
            calls: crate::domain::calls::CallSettings {
                assignee_ring_secs: self.voice_assignee_ring_secs,
                staff_ring_secs: self.voice_staff_ring_secs,
                voicemail_max_secs: self.voicemail_max_secs,
            },
        }
    }

    pub fn to_config(&self) -> crate::delivery::DeliveryConfig {
        use std::time::Duration;
        let interval = |rate: f64| (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
        crate::delivery::DeliveryConfig {
            workers: self.delivery_workers,
            batch: self.delivery_batch,
            concurrency: self.delivery_concurrency,
            reconcile_after: Duration::from_secs(self.delivery_reconcile_after_secs),
            max_attempts: self.delivery_max_attempts,
            lease: Duration::from_secs(self.delivery_lease_secs),
            poll_interval: Duration::from_millis(self.delivery_poll_ms),
            retry_base: Duration::from_millis(self.delivery_retry_base_ms),
            sms_sender_interval: interval(self.sms_sender_rate),
            email_sender_interval: interval(self.email_sender_rate),
            twilio_base_url: self.twilio_base_url.clone(),
            sendgrid_base_url: self.sendgrid_base_url.clone(),
            provider_timeout: Duration::from_secs(self.provider_timeout_secs),
            public_url: self.public_url.clone(),
            email_inbound_domain: self.email_inbound_domain.clone(),
            platform_twilio: match (&self.twilio_account_sid, &self.twilio_auth_token) {
                (Some(account_sid), Some(auth_token)) => Some(crate::store::provider_credentials::TwilioCredentials {
                    account_sid: account_sid.clone(),
                    auth_token: auth_token.clone(),
                }),
                _ => None,
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct DescriptorArgs {
    /// Where to write the descriptor set (stdout when omitted).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the fully qualified service names instead.
    #[arg(long)]
    pub services: bool,
}

#[derive(Debug, Args)]
pub struct EnvoyConfigArgs {
    /// The config template shipped in the repository.
    #[arg(long, env = "OMEGA_ENVOY_TEMPLATE", default_value = "envoy/envoy.yaml")]
    pub template: PathBuf,
    /// Directory that receives `envoy.yaml` and `omega.pb`.
    #[arg(long, env = "OMEGA_ENVOY_OUT_DIR", default_value = "target/envoy")]
    pub out_dir: PathBuf,
    /// Address Envoy listens on for REST, gRPC and gRPC-Web.
    #[arg(long, env = "OMEGA_ENVOY_LISTEN_ADDR", default_value = "0.0.0.0")]
    pub listen_address: String,
    #[arg(long, env = "OMEGA_ENVOY_PORT", default_value_t = 8080)]
    pub listen_port: u16,
    /// Envoy's admin interface, always on loopback.
    #[arg(long, env = "OMEGA_ENVOY_ADMIN_PORT", default_value_t = 9901)]
    pub admin_port: u16,
    /// Where the Omega replicas serve gRPC: `host:port`, repeated or comma-separated. A host
    /// name is resolved by Envoy (every address it has is a replica, re-resolved every 5 s).
    #[arg(long, env = "OMEGA_UPSTREAM", value_delimiter = ',', default_value = "127.0.0.1:50051")]
    pub upstream: Vec<String>,
    /// Where the replicas serve the `/cable` websocket (`OMEGA_CABLE_LISTEN_ADDR`), the same
    /// way; empty: `/cable` answers 503.
    #[arg(long, env = "OMEGA_CABLE_UPSTREAM", value_delimiter = ',', default_value = "127.0.0.1:50052")]
    pub cable_upstream: Vec<String>,
    /// Omega's own call deadline (the same variable as `serve`'s); Envoy waits a second longer.
    #[arg(long, env = "OMEGA_REQUEST_TIMEOUT_SECS", default_value_t = DEFAULT_REQUEST_TIMEOUT_SECS, value_parser = at_least_one())]
    pub request_timeout_secs: u64,
    /// The same setting as `serve`'s: origins whose pages may call through Envoy (`*`: any,
    /// without cookies; named origins may send them).
    #[arg(long, env = "OMEGA_CORS_ALLOWED_ORIGINS", value_delimiter = ',', default_value = "*")]
    pub cors_allowed_origins: Vec<String>,
    /// Downstream connections Envoy accepts at once; more are refused.
    #[arg(long, env = "OMEGA_ENVOY_MAX_CONNECTIONS", default_value_t = DEFAULT_ENVOY_MAX_CONNECTIONS, value_parser = at_least_one())]
    pub max_connections: u64,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once: the platform's (default) or one business's.
    Create {
        /// What the key is for, shown in listings.
        #[arg(long)]
        label: String,
        /// Scope the key to this business instead of the whole platform.
        #[arg(long)]
        business_id: Option<i64>,
    },
    /// List keys (prefix, scope, dates; never the secret).
    List {
        #[arg(long)]
        business_id: Option<i64>,
    },
    /// Revoke a key at once.
    Revoke { key_id: i64 },
    /// Seal every stored provider credential again with the current secrets key (after a new
    /// OMEGA_SECRETS_KEY, with the old one in OMEGA_SECRETS_PREVIOUS_KEYS); plaintext rows from
    /// before encryption are sealed too. Afterwards the previous keys can be dropped.
    RotateSecrets,
}
