//! A business's provider credentials: stored sealed (see `crate::secrets`), never returned,
//! never logged. A Twilio account belongs to one business: the platform's account and an account
//! another business registered cannot be claimed (webhooks are verified with the token of the
//! account that owns what they address, so a second claimant could forge them).

use std::sync::Arc;

use serde_json::json;

use super::{Error, Result, Violations, auth::Caller, directory::Directory, values::now, webhooks::WebhookSettings};
use crate::{
    secrets::SecretKeys,
    store::{
        Store, directory,
        provider_credentials::{self as db, SendGridCredentials, SmtpCredentials, TwilioCredentials},
    },
};

/// Businesses' provider credentials and settings.
#[derive(Clone, Debug)]
pub struct Providers {
    store: Store,
    directory: Directory,
    secrets: Arc<SecretKeys>,
    /// The platform's own Twilio accounts, which no business may claim.
    webhooks: Arc<WebhookSettings>,
}

/// What is configured, without secrets.
pub struct ProviderSettings {
    pub twilio_account_sid: Option<String>,
    pub email_provider: Option<String>,
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    pub transcribe_voicemail: bool,
}

fn sid_like(value: &str, prefix: &str) -> bool {
    value.len() == 34 && value.starts_with(prefix) && value[2..].chars().all(|c| c.is_ascii_hexdigit())
}

impl Providers {
    pub(super) fn new(
        store: Store,
        directory: Directory,
        secrets: Arc<SecretKeys>,
        webhooks: Arc<WebhookSettings>,
    ) -> Self {
        Self { store, directory, secrets, webhooks }
    }

    pub async fn set_twilio_credentials(
        &self,
        caller: &Caller,
        business_id: i64,
        account_sid: &str,
        auth_token: &str,
    ) -> Result<ProviderSettings> {
        self.directory.business(caller, business_id).await?;
        let mut v = Violations::default();
        if !sid_like(account_sid.trim(), "AC") {
            v.add("account_sid", "must be a Twilio account SID (AC followed by 32 hex digits)");
        }
        if auth_token.trim().len() < 16 || auth_token.trim().len() > 128 {
            v.add("auth_token", "must be the account's auth token");
        }
        let platform = [
            self.webhooks.platform_twilio.as_ref().map(|p| p.account_sid.as_str()),
            self.webhooks.voice.as_ref().map(|voice| voice.account_sid.as_str()),
        ];
        if platform.into_iter().flatten().any(|sid| sid.eq_ignore_ascii_case(account_sid.trim())) {
            v.add("account_sid", "is the platform's Twilio account, which no business can register as its own");
        }
        v.finish()?;
        // One spelling per account (Twilio's: lower-case hex), so that the unique index holds.
        let account_sid = format!("AC{}", account_sid.trim()[2..].to_ascii_lowercase());
        let creds = TwilioCredentials { account_sid, auth_token: auth_token.trim().into() };
        let account = Some(creds.account_sid.clone());
        let stored = self
            .store_credentials(
                business_id,
                "twilio",
                serde_json::to_string(&creds).map_err(anyhow::Error::new)?,
                account,
            )
            .await;
        match stored {
            // The unique index on the account: another business registered it (which one is not
            // said).
            Err(Error::Conflict(_)) => Err(Error::Conflict(
                "account_sid: this Twilio account is registered by another business; an account belongs to one \
                 business"
                    .into(),
            )),
            other => other,
        }
    }

    pub async fn set_sendgrid_credentials(
        &self,
        caller: &Caller,
        business_id: i64,
        api_key: &str,
    ) -> Result<ProviderSettings> {
        self.directory.business(caller, business_id).await?;
        let key = api_key.trim();
        if key.len() < 16 || key.len() > 256 || key.contains(char::is_whitespace) {
            return Err(Error::invalid("api_key", "must be a SendGrid API key"));
        }
        let creds = SendGridCredentials { api_key: key.into() };
        self.store_credentials(
            business_id,
            "sendgrid",
            serde_json::to_string(&creds).map_err(anyhow::Error::new)?,
            None,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn set_smtp_credentials(
        &self,
        caller: &Caller,
        business_id: i64,
        host: &str,
        port: u32,
        tls: &str,
        username: &str,
        password: &str,
    ) -> Result<ProviderSettings> {
        self.directory.business(caller, business_id).await?;
        let mut v = Violations::default();
        let host = host.trim();
        if host.is_empty() || host.len() > 253 || host.contains(char::is_whitespace) {
            v.add("host", "must be the SMTP server's host name");
        }
        let port = if port == 0 { 587 } else { port };
        if port > 65_535 {
            v.add("port", "must be a TCP port");
        }
        let tls = match tls.trim().to_ascii_lowercase().as_str() {
            "" | "starttls" => "starttls",
            "tls" => "tls",
            "none" => "none",
            _ => {
                v.add("tls", "must be starttls, tls or none");
                "starttls"
            }
        };
        if username.is_empty() != password.is_empty() {
            v.add("password", "give username and password together");
        }
        v.finish()?;
        let creds = SmtpCredentials {
            host: host.into(),
            port: port as u16,
            tls: tls.into(),
            username: (!username.is_empty()).then(|| username.into()),
            password: (!password.is_empty()).then(|| password.into()),
        };
        self.store_credentials(business_id, "smtp", serde_json::to_string(&creds).map_err(anyhow::Error::new)?, None)
            .await
    }

    async fn store_credentials(
        &self,
        business_id: i64,
        kind: &str,
        config: String,
        account: Option<String>,
    ) -> Result<ProviderSettings> {
        db::set_credentials(self.store.writer(), &self.secrets, business_id, kind, config, account, now()).await?;
        tracing::info!(business_id, kind, "provider credentials updated");
        self.settings_of(business_id).await
    }

    /// The business's voice settings (whether Twilio transcribes its voicemail).
    pub async fn set_voice_settings(
        &self,
        caller: &Caller,
        business_id: i64,
        transcribe_voicemail: bool,
    ) -> Result<ProviderSettings> {
        self.directory.business(caller, business_id).await?;
        directory::set_transcribe_voicemail(self.store.writer(), business_id, transcribe_voicemail, now()).await?;
        tracing::info!(business_id, transcribe_voicemail, "voice settings updated");
        self.settings_of(business_id).await
    }

    pub async fn provider_settings(&self, caller: &Caller, business_id: i64) -> Result<ProviderSettings> {
        self.directory.business(caller, business_id).await?;
        self.settings_of(business_id).await
    }

    async fn settings_of(&self, business_id: i64) -> Result<ProviderSettings> {
        let conn = self.store.connection();
        let rows = db::credentials(conn, &self.secrets, business_id).await?;
        let transcribe_voicemail =
            directory::business(conn, business_id).await?.is_some_and(|b| b.transcribe_voicemail);
        let mut settings = ProviderSettings {
            twilio_account_sid: None,
            email_provider: None,
            smtp_host: None,
            smtp_port: 0,
            transcribe_voicemail,
        };
        for row in rows {
            let value: serde_json::Value = serde_json::from_str(&row.config).unwrap_or(json!({}));
            match row.kind.as_str() {
                "twilio" => settings.twilio_account_sid = value["account_sid"].as_str().map(str::to_owned),
                "sendgrid" => {
                    settings.email_provider = Some("sendgrid".into());
                    settings.smtp_host = None;
                    settings.smtp_port = 0;
                }
                "smtp" => {
                    settings.email_provider = Some("smtp".into());
                    settings.smtp_host = value["host"].as_str().map(str::to_owned);
                    settings.smtp_port = value["port"].as_u64().unwrap_or(0) as u16;
                }
                _ => {}
            }
        }
        Ok(settings)
    }
}
