//! Outbound provider clients: SMS through Twilio, email through SendGrid's HTTP API or SMTP.
//!
//! Every send answers either [`Accepted`] or a [`ProviderError`] that says whether resending is
//! safe. Neither Twilio nor SendGrid nor SMTP has an idempotency key, so the line between
//! "certainly not sent" ([`ProviderError::Retryable`]) and "possibly sent"
//! ([`ProviderError::Ambiguous`]) is drawn by how far the request got, never guessed: a client
//! must not be texted twice because a reply was lost.

use std::time::Duration;

pub mod email;
pub mod signatures;
pub mod twilio;
pub mod twiml;

/// Why a send did not succeed, classified by whether resending is safe.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Certainly not sent (HTTP 429 / Twilio 20429, connection refused or failed before the request was written, DNS): safe to retry, after `retry_after` if the provider said.
    #[error("temporarily unavailable: {reason}")]
    Retryable { reason: String, retry_after: Option<Duration> },
    /// The provider refused this message (other 4xx, e.g. Twilio 21211 invalid To): never sent; do not retry. `code` is the provider's error code as text.
    #[error("rejected ({code}): {message}")]
    Rejected { code: String, message: String },
    /// Possibly sent (timeout after the request was written, HTTP 5xx, connection dropped before a full answer): resending blindly could text the client twice.
    #[error("outcome unknown: {reason}")]
    Ambiguous { reason: String },
}

/// Sorts a provider's non-2xx answer by whether the message could have been sent. 429 ("never
/// processed", Twilio's 20429) and 408 (the request never fully arrived) are certainly not sent:
/// retryable, after `retry_after` if the provider said. Any other 4xx refused this message:
/// never sent, not worth resending. A 5xx (or anything else) may have come after the send.
/// `code` is the provider's own error code when it gave one, the HTTP status otherwise; `reason`
/// describes the answer for the retryable and ambiguous cases.
pub fn classify_failure(
    status: reqwest::StatusCode,
    code: String,
    message: String,
    reason: String,
    retry_after: Option<Duration>,
) -> ProviderError {
    match status.as_u16() {
        429 | 408 => ProviderError::Retryable { reason, retry_after },
        400..=499 => ProviderError::Rejected { code, message },
        _ => ProviderError::Ambiguous { reason },
    }
}

/// What the provider said when it accepted a message.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub provider_message_id: String,
    pub status: String,
}

/// Installs ring as the process's rustls crypto provider, once. reqwest is built with
/// `rustls-no-provider` (one TLS stack: the ring that sqlx already uses) and panics when a client
/// is built without a process-wide provider; an already installed provider is kept.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The HTTP client the provider clients share the settings of: `timeout` bounds a whole call
/// (connect, send, full answer). Connecting gets half of it, so that a provider that never
/// accepts the connection is reported as a connect failure (certainly not sent, retryable)
/// rather than by the overall deadline (which cannot tell). Redirects are not followed: a
/// redirected POST would be resent as a GET, and a provider API never redirects.
fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout / 2)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("omega/", env!("CARGO_PKG_VERSION")))
        .build()?;
    Ok(client)
}

/// Parses a provider base URL (`https://api.twilio.com`, or a fake's `http://127.0.0.1:…`).
fn parse_base_url(base_url: &str) -> anyhow::Result<reqwest::Url> {
    let url = reqwest::Url::parse(base_url).map_err(|e| anyhow::anyhow!("invalid base URL {base_url:?}: {e}"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https") && url.has_host(),
        "invalid base URL {base_url:?}: expected http(s)://host[:port][/path]"
    );
    anyhow::ensure!(url.query().is_none() && url.fragment().is_none(), "base URL {base_url:?} has a query or fragment");
    Ok(url)
}

/// `base` with `segments` appended as path segments (each percent-encoded as needed).
fn endpoint(base: &reqwest::Url, segments: &[&str]) -> reqwest::Url {
    let mut url = base.clone();
    url.path_segments_mut().expect("checked http(s) base URL").pop_if_empty().extend(segments);
    url
}

/// Classifies a reqwest failure that left no HTTP status to go by. A connect failure (refused,
/// DNS, TLS handshake, connect timeout) happened before the request was written: retryable.
/// Anything else — the overall timeout, a connection dropped while sending or before a full
/// answer — may have reached the provider.
fn transport_error(provider: &str, error: &reqwest::Error) -> ProviderError {
    let reason = format!("{provider}: {}", error_chain(error));
    if error.is_connect() {
        ProviderError::Retryable { reason, retry_after: None }
    } else if error.is_builder() {
        // The request could not even be built (nothing was sent, and resending cannot help).
        ProviderError::Rejected { code: "invalid_request".into(), message: reason }
    } else {
        ProviderError::Ambiguous { reason }
    }
}

/// `error` and its causes, `: `-separated (reqwest's own message hides the cause, e.g.
/// "connection refused" or "operation timed out").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How long the provider asked us to wait: `Retry-After` as delay-seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// Up to `limit` characters of a provider's answer, for error messages (bodies can be HTML
/// pages from a proxy).
fn excerpt(body: &[u8], limit: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_sorted_by_whether_the_message_could_have_gone() {
        use reqwest::StatusCode;
        let classify = |status: u16, retry_after| {
            let status = StatusCode::from_u16(status).unwrap();
            classify_failure(status, "21211".into(), "why".into(), format!("{status}"), retry_after)
        };
        let wait = Some(Duration::from_secs(3));
        match classify(429, wait) {
            ProviderError::Retryable { reason, retry_after } => {
                assert_eq!(reason, "429 Too Many Requests");
                assert_eq!(retry_after, wait);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify(408, None), ProviderError::Retryable { retry_after: None, .. }));
        for status in [400, 401, 404, 422] {
            match classify(status, wait) {
                ProviderError::Rejected { code, message } => {
                    assert_eq!((code.as_str(), message.as_str()), ("21211", "why"))
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        for status in [500, 502, 503, 504, 302] {
            assert!(matches!(classify(status, wait), ProviderError::Ambiguous { .. }), "{status}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(reqwest::header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::ZERO), "a date in the past means now");
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        headers.insert(reqwest::header::RETRY_AFTER, soon.parse().unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120), "{wait:?}");
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn endpoints_keep_the_base_path_and_encode_segments() {
        let base = parse_base_url("http://127.0.0.1:9/prefix/").unwrap();
        assert_eq!(endpoint(&base, &["a", "b c", "d.json"]).as_str(), "http://127.0.0.1:9/prefix/a/b%20c/d.json");
        let base = parse_base_url("https://api.twilio.com").unwrap();
        assert_eq!(endpoint(&base, &["2010-04-01"]).as_str(), "https://api.twilio.com/2010-04-01");
        assert!(parse_base_url("api.twilio.com").is_err());
        assert!(parse_base_url("ftp://api.twilio.com").is_err());
    }

    #[test]
    fn excerpts_are_cut_on_character_boundaries() {
        assert_eq!(excerpt(b"  short  ", 10), "short");
        assert_eq!(excerpt("ééééé".as_bytes(), 3), "ééé…");
    }
}
