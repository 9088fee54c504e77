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

/// A Message resource as a list prints it: enough to recognise one of ours.
#[derive(Debug, Deserialize)]
struct ListedMessage {
    sid: String,
    status: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    messaging_service_sid: Option<String>,
    /// RFC 2822, e.g. `Tue, 01 Dec 2026 19:33:00 +0000`.
    #[serde(default)]
    date_created: Option<String>,
}

/// One page of `GET …/Messages.json`.
#[derive(Debug, Deserialize)]
struct MessagePage {
    #[serde(default)]
    messages: Vec<ListedMessage>,
    #[serde(default)]
    next_page_uri: Option<String>,
}

/// What Twilio's message list says about a send whose outcome was lost.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Messages that match it (To, sender, body, created after the attempt began), oldest
    /// first: one of them is ours unless another of our messages already claims its SID.
    Found(Vec<Accepted>),
    /// Twilio holds no such message: it was certainly not sent.
    Absent,
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

    /// Looks for `request` among the messages Twilio created since `since` (`GET
    /// …/Messages.json?To=…&From=…`, newest first, paged through `next_page_uri`), matching on
    /// the sender and the body. No `DateSent` filter: a message still queued at Twilio has no
    /// send date yet and would be missed, and missing one would make it look unsent. The walk
    /// stops at the first message created well before `since` (`skew` allows for clocks that
    /// differ); a walk that cannot get that far within `MAX_PAGES` is an error (still unknown).
    pub async fn find_sent(
        &self,
        request: &SmsRequest,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Lookup, ProviderError> {
        const PAGE_SIZE: &str = "100";
        const MAX_PAGES: usize = 20;
        let skew = chrono::Duration::minutes(5);
        let mut url = self.account_endpoint(&["Messages.json"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("To", &request.to);
            if let Some(from) = &request.from {
                query.append_pair("From", from);
            }
            query.append_pair("PageSize", PAGE_SIZE);
        }
        let mut found = Vec::new();
        for _ in 0..MAX_PAGES {
            let call = self.http.get(url.clone()).basic_auth(&self.account_sid, Some(&self.auth_token));
            let page: MessagePage = self.read(call).await?;
            let mut reached_older = false;
            for listed in page.messages {
                let created = listed
                    .date_created
                    .as_deref()
                    .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
                    .map(|d| d.with_timezone(&chrono::Utc));
                if created.is_some_and(|created| created < since - skew) {
                    reached_older = true;
                    continue;
                }
                let sender_matches = match (&request.from, &request.messaging_service_sid) {
                    (Some(from), _) => listed.from.as_deref() == Some(from.as_str()),
                    (None, Some(service)) => listed.messaging_service_sid.as_deref() == Some(service.as_str()),
                    (None, None) => true,
                };
                if sender_matches
                    && listed.to.as_deref() == Some(request.to.as_str())
                    && listed.body.as_deref().unwrap_or_default() == request.body
                {
                    found.push(Accepted { provider_message_id: listed.sid, status: listed.status });
                }
            }
            match page.next_page_uri.filter(|next| !next.is_empty()) {
                Some(next) if !reached_older => {
                    url = self.base_url.join(&next).map_err(|e| ProviderError::Ambiguous {
                        reason: format!("Twilio gave an unusable next page ({next}): {e}"),
                    })?;
                }
                _ => {
                    found.reverse();
                    return Ok(if found.is_empty() { Lookup::Absent } else { Lookup::Found(found) });
                }
            }
        }
        if found.is_empty() {
            return Err(ProviderError::Ambiguous {
                reason: format!("Twilio's list of messages to {} did not reach back to {since}", request.to),
            });
        }
        found.reverse();
        Ok(Lookup::Found(found))
    }

    fn account_endpoint(&self, rest: &[&str]) -> reqwest::Url {
        let mut segments = vec!["2010-04-01", "Accounts", self.account_sid.as_str()];
        segments.extend_from_slice(rest);
        super::endpoint(&self.base_url, &segments)
    }

    async fn call(&self, call: reqwest::RequestBuilder) -> Result<Accepted, ProviderError> {
        let message: MessageResource = self.read(call).await?;
        Ok(Accepted { provider_message_id: message.sid, status: message.status })
    }

    /// Makes a call and reads its JSON answer, classifying failures.
    async fn read<T: serde::de::DeserializeOwned>(&self, call: reqwest::RequestBuilder) -> Result<T, ProviderError> {
        let response = call.send().await.map_err(|e| super::transport_error("Twilio", &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await;
        if status.is_success() {
            // Twilio has acted on the request: from here on, only its answer can be lost.
            let body = body.map_err(|e| ProviderError::Ambiguous {
                reason: format!("Twilio answered {status} but its body was lost: {}", super::error_chain(&e)),
            })?;
            return serde_json::from_slice(&body).map_err(|e| ProviderError::Ambiguous {
                reason: format!(
                    "Twilio answered {status} with an unreadable message ({e}): {}",
                    super::excerpt(&body, 200)
                ),
            });
        }
        let body = body.unwrap_or_default();
        let error: TwilioErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        let code = match error.code {
            Some(serde_json::Value::Number(code)) => code.to_string(),
            Some(serde_json::Value::String(code)) if !code.is_empty() => code,
            _ => status.as_u16().to_string(),
        };
        let message = error.message.unwrap_or_else(|| super::excerpt(&body, 200));
        let reason = format!("Twilio {status} ({code}): {message}");
        Err(super::classify_failure(status, code, message, reason, super::retry_after(&headers)))
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
