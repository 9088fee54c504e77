//! Twilio Programmable Messaging: sending an SMS/MMS, and reading a message back.
//!
//! Plain reqwest against the 2010-04-01 REST API (Twilio's Rust crates are stale): form-encoded
//! requests, HTTP Basic auth with the account SID and auth token, JSON answers.

use std::{fmt, time::Duration};

use serde::Deserialize;

use super::{Accepted, ProviderError};

/// Where and as whom to call Twilio.
#[derive(Clone)]
pub struct TwilioConfig {
    /// `https://api.twilio.com`; a fake's loopback address in tests.
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    /// Bounds a whole call: connecting, sending and reading Twilio's full answer.
    pub timeout: Duration,
}

impl fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One outbound SMS or MMS.
#[derive(Debug, Clone, Default)]
pub struct SmsRequest {
    /// E.164, e.g. `+14155550199`.
    pub to: String,
    /// A number the account owns; with a messaging service it picks this sender from the pool.
    pub from: Option<String>,
    /// `MG…`: lets Twilio choose the sender from the service's pool.
    pub messaging_service_sid: Option<String>,
    /// Up to 1600 characters; may be empty when `media_urls` is not.
    pub body: String,
    /// Public URLs Twilio fetches and attaches (MMS), at most 10.
    pub media_urls: Vec<String>,
    /// Where Twilio posts this message's status changes.
    pub status_callback: Option<String>,
}

/// Sends messages through one Twilio account.
pub struct TwilioClient {
    http: reqwest::Client,
    /// `{base}/2010-04-01/Accounts/{AccountSid}/`, parsed once.
    base_url: reqwest::Url,
    account_sid: String,
    auth_token: String,
    timeout: Duration,
}

impl fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioClient")
            .field("base_url", &self.base_url.as_str())
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The part of Twilio's Message resource Omega reads.
#[derive(Debug, Deserialize)]
struct MessageResource {
    sid: String,
    status: String,
}

/// Twilio's error answer: `{"code": 21211, "message": "…", "more_info": "…", "status": 400}`.
#[derive(Debug, Default, Deserialize)]
struct TwilioErrorBody {
    /// A number in practice; taken as any JSON value so an odd one still parses.
    code: Option<serde_json::Value>,
    message: Option<String>,
}

impl TwilioClient {
    /// Checks the configuration (the base URL must be http(s), the credentials present) and
    /// builds the HTTP client.
    pub fn new(config: TwilioConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(!config.account_sid.trim().is_empty(), "Twilio account SID is empty");
        anyhow::ensure!(!config.auth_token.is_empty(), "Twilio auth token is empty");
        let base_url = super::parse_base_url(&config.base_url)?;
        let http = super::http_client(config.timeout)?;
        Ok(Self {
            http,
            base_url,
            account_sid: config.account_sid,
            auth_token: config.auth_token,
            timeout: config.timeout,
        })
    }

    /// Creates the message (`POST …/Messages.json`). Message creation has no idempotency key:
    /// after [`ProviderError::Ambiguous`] the message may exist, so look before resending.
    pub async fn send_sms(&self, request: &SmsRequest) -> Result<Accepted, ProviderError> {
        let url = self.account_endpoint(&["Messages.json"]);
        let form = message_form(request);
        let call = self.http.post(url).basic_auth(&self.account_sid, Some(&self.auth_token)).form(&form);
        self.call(call).await
    }

    /// Reads a message back (`GET …/Messages/{sid}.json`): its current status, e.g. to
    /// reconcile when status callbacks did not arrive. A read is always safe to repeat, whatever
    /// the error says. An unknown SID is [`ProviderError::Rejected`] with code `20404`.
    pub async fn fetch_message(&self, sid: &str) -> Result<Accepted, ProviderError> {
        let url = self.account_endpoint(&["Messages", &format!("{sid}.json")]);
        let call = self.http.get(url).basic_auth(&self.account_sid, Some(&self.auth_token));
        self.call(call).await
    }

    fn account_endpoint(&self, rest: &[&str]) -> reqwest::Url {
        let mut segments = vec!["2010-04-01", "Accounts", self.account_sid.as_str()];
        segments.extend_from_slice(rest);
        super::endpoint(&self.base_url, &segments)
    }

    async fn call(&self, call: reqwest::RequestBuilder) -> Result<Accepted, ProviderError> {
        let response = call.send().await.map_err(|e| super::transport_error("Twilio", &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await;
        if status.is_success() {
            // Twilio has acted on the request: from here on, only its answer can be lost.
            let body = body.map_err(|e| ProviderError::Ambiguous {
                reason: format!("Twilio answered {status} but its body was lost: {}", super::error_chain(&e)),
            })?;
            let message: MessageResource = serde_json::from_slice(&body).map_err(|e| ProviderError::Ambiguous {
                reason: format!(
                    "Twilio answered {status} with an unreadable message ({e}): {}",
                    super::excerpt(&body, 200)
                ),
            })?;
            return Ok(Accepted { provider_message_id: message.sid, status: message.status });
        }
        let body = body.unwrap_or_default();
        let error: TwilioErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        let code = match error.code {
            Some(serde_json::Value::Number(code)) => code.to_string(),
            Some(serde_json::Value::String(code)) if !code.is_empty() => code,
            _ => status.as_u16().to_string(),
        };
        let message = error.message.unwrap_or_else(|| super::excerpt(&body, 200));
        Err(classify_failure(status, &headers, code, message))
    }
}

/// Sorts a non-2xx answer by whether Twilio could have sent the message.
fn classify_failure(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    code: String,
    message: String,
) -> ProviderError {
    match status.as_u16() {
        // 429 (Twilio 20429): "never processed, always safe to retry". 408: the request never
        // fully arrived.
        429 | 408 => ProviderError::Retryable {
            reason: format!("Twilio {status} ({code}): {message}"),
            retry_after: super::retry_after(headers),
        },
        400..=499 => ProviderError::Rejected { code, message },
        _ => ProviderError::Ambiguous { reason: format!("Twilio {status} ({code}): {message}") },
    }
}

/// The form Twilio's Messages endpoint takes: `MediaUrl` repeated once per attachment, absent
/// parameters left out. An empty body is left out too, so that a message with neither text nor
/// media is Twilio's to refuse (21602), like any other invalid message.
fn message_form(request: &SmsRequest) -> Vec<(&'static str, &str)> {
    let mut form = vec![("To", request.to.as_str())];
    if let Some(from) = &request.from {
        form.push(("From", from));
    }
    if let Some(service) = &request.messaging_service_sid {
        form.push(("MessagingServiceSid", service));
    }
    if !request.body.is_empty() {
        form.push(("Body", &request.body));
    }
    form.extend(request.media_urls.iter().map(|url| ("MediaUrl", url.as_str())));
    if let Some(callback) = &request.status_callback {
        form.push(("StatusCallback", callback));
    }
    form
}
