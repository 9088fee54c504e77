//! Email: SendGrid's HTTP API (the common hosted sender) or any SMTP server (provider-neutral).
//!
//! Both put Omega's message id on the email so that later events can be matched without the
//! provider's id: SendGrid echoes `custom_args.omega_message_id` in every webhook event, and SMTP
//! bounces quote the `Message-ID` header.

use std::{fmt, time::Duration};

use lettre::{
    Address, Message,
    message::{Attachment, Mailbox, MultiPart, SinglePart, header::ContentType},
    transport::smtp::{
        Error as SmtpError,
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, TlsParameters},
        commands::{Data, Mail, Rcpt},
        extension::{ClientId, Extension, MailBodyParameter, MailParameter},
    },
};
use tokio::time::{Instant, timeout_at};

use super::{Accepted, ProviderError};

/// One outbound email.
#[derive(Debug, Clone, Default)]
pub struct EmailRequest {
    pub to: String,
    /// The sender address; SendGrid requires a verified sender or domain.
    pub from: String,
    /// Shown as the sender's name, e.g. the business's.
    pub from_name: Option<String>,
    pub subject: String,
    /// The plain-text body; left out of a SendGrid request when empty (SendGrid refuses empty
    /// content blocks).
    pub text: String,
    /// An HTML alternative to `text`.
    pub html: Option<String>,
    /// Omega's message UUID: `custom_args.omega_message_id` (SendGrid) and, on both, the
    /// `Message-ID` `<{uuid}@omega>`, which a reply's `In-Reply-To` quotes.
    pub message_id: String,
    /// Where replies go (`reply+{uuid}@{OMEGA_EMAIL_INBOUND_DOMAIN}`), when inbound email is set up.
    pub reply_to: Option<String>,
    /// Files sent with the email.
    pub attachments: Vec<EmailAttachment>,
}

/// A file sent with an email.
#[derive(Clone, Default)]
pub struct EmailAttachment {
    pub file_name: String,
    pub content_type: String,
    pub data: bytes::Bytes,
}

impl fmt::Debug for EmailAttachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailAttachment")
            .field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// The `Message-ID` Omega gives an email: its message's id, which inbound threading recognises.
pub fn message_id_header(message_id: &str) -> String {
    format!("<{message_id}@omega>")
}

/// The email sender a deployment is configured with.
#[derive(Debug)]
pub enum EmailSender {
    SendGrid(SendGridClient),
    Smtp(SmtpClient),
}

impl EmailSender {
    pub async fn send_email(&self, request: &EmailRequest) -> Result<Accepted, ProviderError> {
        match self {
            Self::SendGrid(client) => client.send_email(request).await,
            Self::Smtp(client) => client.send_email(request).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SendGrid

/// Where and with which key to call SendGrid's v3 API.
#[derive(Clone)]
pub struct SendGridConfig {
    /// `https://api.sendgrid.com`; a fake's loopback address in tests.
    pub base_url: String,
    pub api_key: String,
    /// Bounds a whole call: connecting, sending and reading SendGrid's full answer.
    pub timeout: Duration,
}

impl fmt::Debug for SendGridConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendGridConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Sends email through SendGrid's Mail Send API (`POST /v3/mail/send`).
pub struct SendGridClient {
    http: reqwest::Client,
    mail_send_url: reqwest::Url,
    api_key: String,
    timeout: Duration,
}

impl fmt::Debug for SendGridClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendGridClient")
            .field("mail_send_url", &self.mail_send_url.as_str())
            .field("api_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// SendGrid's error answer: `{"errors": [{"message": "…", "field": "…", "help": …}]}`.
#[derive(Debug, Default, serde::Deserialize)]
struct SendGridErrorBody {
    #[serde(default)]
    errors: Vec<SendGridErrorItem>,
}

#[derive(Debug, serde::Deserialize)]
struct SendGridErrorItem {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    field: Option<String>,
}

impl SendGridClient {
    /// Checks the configuration (an http(s) base URL, a key) and builds the HTTP client.
    pub fn new(config: SendGridConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(!config.api_key.is_empty(), "SendGrid API key is empty");
        let base_url = super::parse_base_url(&config.base_url)?;
        let mail_send_url = super::endpoint(&base_url, &["v3", "mail", "send"]);
        let http = super::http_client(config.timeout)?;
        Ok(Self { http, mail_send_url, api_key: config.api_key, timeout: config.timeout })
    }

    /// Hands the email to SendGrid. Success is `202 Accepted` with the `X-Message-Id` header
    /// (SendGrid's id, the prefix of every event's `sg_message_id`; empty in the unlikely case
    /// SendGrid leaves the header out — events still carry `omega_message_id`).
    pub async fn send_email(&self, request: &EmailRequest) -> Result<Accepted, ProviderError> {
        let response = self
            .http
            .post(self.mail_send_url.clone())
            .bearer_auth(&self.api_key)
            .json(&mail_send_body(request))
            .send()
            .await
            .map_err(|e| super::transport_error("SendGrid", &e))?;
        let status = response.status();
        if status.is_success() {
            let provider_message_id =
                response.headers().get("x-message-id").and_then(|id| id.to_str().ok()).unwrap_or_default().to_owned();
            return Ok(Accepted { provider_message_id, status: "accepted".into() });
        }
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        let message = sendgrid_error_message(&body);
        let retry_after = super::retry_after(&headers).or_else(|| rate_limit_reset(&headers));
        let reason = format!("SendGrid {status}: {message}");
        Err(super::classify_failure(status, status.as_u16().to_string(), message, reason, retry_after))
    }
}

/// The Mail Send request: one personalization to one recipient, text before HTML (SendGrid
/// requires `text/plain` first), Omega's message id in `custom_args` and the `Message-ID`, and
/// the reply address when there is one.
fn mail_send_body(request: &EmailRequest) -> serde_json::Value {
    let mut from = serde_json::json!({ "email": request.from });
    if let Some(name) = &request.from_name {
        from["name"] = name.as_str().into();
    }
    let mut content = Vec::new();
    if !request.text.is_empty() {
        content.push(serde_json::json!({ "type": "text/plain", "value": request.text }));
    }
    if let Some(html) = request.html.as_deref().filter(|html| !html.is_empty()) {
        content.push(serde_json::json!({ "type": "text/html", "value": html }));
    }
    let mut body = serde_json::json!({
        "personalizations": [{ "to": [{ "email": request.to }] }],
        "from": from,
        "subject": request.subject,
        "content": content,
        "custom_args": { "omega_message_id": request.message_id },
        "headers": { "Message-ID": message_id_header(&request.message_id) },
    });
    if let Some(reply_to) = &request.reply_to {
        body["reply_to"] = serde_json::json!({ "email": reply_to });
    }
    if !request.attachments.is_empty() {
        use base64::Engine;
        let attachments: Vec<serde_json::Value> = request
            .attachments
            .iter()
            .map(|a| {
                serde_json::json!({
                    "content": base64::engine::general_purpose::STANDARD.encode(&a.data),
                    "type": a.content_type,
                    "filename": a.file_name,
                    "disposition": "attachment",
                })
            })
            .collect();
        body["attachments"] = attachments.into();
    }
    body
}

/// SendGrid's errors as one line, `field: message; …`, or an excerpt of a body that is not
/// SendGrid's JSON.
fn sendgrid_error_message(body: &[u8]) -> String {
    let errors = serde_json::from_slice::<SendGridErrorBody>(body).unwrap_or_default().errors;
    if errors.is_empty() {
        return super::excerpt(body, 200);
    }
    errors
        .iter()
        .map(|error| {
            let message = error.message.as_deref().unwrap_or("(no message)");
            match &error.field {
                Some(field) => format!("{field}: {message}"),
                None => message.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// SendGrid's rate-limit answers carry `X-RateLimit-Reset`: when the limit resets, in Unix
/// seconds.
fn rate_limit_reset(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let reset: i64 = headers.get("x-ratelimit-reset")?.to_str().ok()?.trim().parse().ok()?;
    let wait = reset - chrono::Utc::now().timestamp();
    Some(Duration::from_secs(wait.max(0) as u64))
}

// ---------------------------------------------------------------------------------------------
// SMTP

/// How the SMTP connection is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text throughout (a local relay or a test sink).
    None,
    /// Plain connect, then `STARTTLS`, required: a server that does not offer it gets nothing.
    StartTls,
    /// TLS from the first byte ("SMTPS", usually port 465).
    Tls,
}

/// Which SMTP server to hand email to, and how.
#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// With `password`: authenticate (AUTH PLAIN or LOGIN, whichever the server offers).
    pub username: Option<String>,
    pub password: Option<String>,
    /// Bounds a whole send: connecting, the conversation, and the server's final answer.
    pub timeout: Duration,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Sends email over SMTP, one connection per message.
///
/// It drives lettre's SMTP connection step by step rather than through `AsyncSmtpTransport`,
/// for two reasons: only so can a failure be placed before the message was handed over
/// (certainly not sent: retryable) or after (possibly sent: ambiguous), and lettre's tokio
/// transport bounds only the TCP connect, not the server's answers.
pub struct SmtpClient {
    host: String,
    port: u16,
    tls: SmtpTls,
    /// Built once from the host name: certificates are checked against it.
    tls_parameters: Option<TlsParameters>,
    credentials: Option<Credentials>,
    username: Option<String>,
    /// Our name in EHLO: this machine's host name.
    hello_name: ClientId,
    timeout: Duration,
}

impl fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.credentials.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// How long a polite `QUIT` may take once the outcome is known; the outcome does not wait longer.
const QUIT_GRACE: Duration = Duration::from_secs(2);

impl SmtpClient {
    /// Checks the configuration (a host; username and password together) and prepares TLS.
    pub fn new(config: SmtpConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(!config.host.trim().is_empty(), "SMTP host is empty");
        let credentials = match (&config.username, &config.password) {
            (Some(username), Some(password)) => Some(Credentials::new(username.clone(), password.clone())),
            (None, None) => None,
            _ => anyhow::bail!("SMTP username and password go together"),
        };
        let tls_parameters = match config.tls {
            SmtpTls::None => None,
            SmtpTls::StartTls | SmtpTls::Tls => {
                super::install_crypto_provider();
                Some(TlsParameters::new(config.host.clone())?)
            }
        };
        Ok(Self {
            host: config.host,
            port: config.port,
            tls: config.tls,
            tls_parameters,
            credentials,
            username: config.username,
            hello_name: ClientId::default(),
            timeout: config.timeout,
        })
    }

    /// Hands the email to the server. Its `Message-ID` is `<{message_id}@omega>`, answered as
    /// `provider_message_id` with status `sent` (the server took responsibility for it).
    pub async fn send_email(&self, request: &EmailRequest) -> Result<Accepted, ProviderError> {
        let message_id = message_id_header(&request.message_id);
        let message = build_message(request, &message_id)?;
        let deadline = Instant::now() + self.timeout;

        let formatted = message.formatted();
        let mut connection = self.open(deadline).await?;
        self.start_data(&mut connection, &message, &formatted, deadline).await?;
        // From here the server may have the whole message: only its answer can be lost.
        match timeout_at(deadline, connection.message(&formatted)).await {
            Ok(Ok(_accepted)) => {
                let _ = tokio::time::timeout(QUIT_GRACE, connection.quit()).await;
                Ok(Accepted { provider_message_id: message_id, status: "sent".into() })
            }
            Ok(Err(error)) => {
                if error.status().is_some() {
                    quit_politely(&mut connection).await;
                }
                Err(after_data(&error))
            }
            Err(_elapsed) => Err(ProviderError::Ambiguous {
                reason: format!("SMTP server did not answer the message within {:?}", self.timeout),
            }),
        }
    }

    /// Connects (TLS first for SMTPS), reads the greeting, says EHLO, upgrades with STARTTLS and
    /// authenticates, as configured. Nothing of the message has left yet.
    async fn open(&self, deadline: Instant) -> Result<AsyncSmtpConnection, ProviderError> {
        let implicit_tls = match self.tls {
            SmtpTls::Tls => self.tls_parameters.clone(),
            SmtpTls::None | SmtpTls::StartTls => None,
        };
        let connect = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello_name,
            implicit_tls,
            None,
        );
        let mut connection =
            timeout_at(deadline, connect).await.map_err(|_| self.no_answer("connecting"))?.map_err(before_data)?;
        let setup = async {
            if let (SmtpTls::StartTls, Some(tls_parameters)) = (self.tls, &self.tls_parameters) {
                connection.starttls(tls_parameters.clone(), &self.hello_name).await?;
            }
            if let Some(credentials) = &self.credentials {
                connection.auth(&[Mechanism::Plain, Mechanism::Login], credentials).await?;
            }
            Ok::<_, SmtpError>(())
        };
        match timeout_at(deadline, setup).await {
            Ok(Ok(())) => Ok(connection),
            Ok(Err(error)) => {
                if error.status().is_some() {
                    quit_politely(&mut connection).await;
                }
                Err(before_data(error))
            }
            Err(_elapsed) => Err(self.no_answer("setting up the session")),
        }
    }

    /// `MAIL FROM`, `RCPT TO`, `DATA`: once the server answers 354 it waits for the message.
    /// On a refusal the session is ended politely; after a timeout it is just dropped.
    async fn start_data(
        &self,
        connection: &mut AsyncSmtpConnection,
        message: &Message,
        formatted: &[u8],
        deadline: Instant,
    ) -> Result<(), ProviderError> {
        let envelope = message.envelope();
        let mut mail_parameters = Vec::new();
        let non_ascii_addresses = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|address: &Address| !AsRef::<str>::as_ref(address).is_ascii());
        if non_ascii_addresses {
            if !connection.server_info().supports_feature(Extension::SmtpUtfEight) {
                quit_politely(connection).await;
                return Err(ProviderError::Rejected {
                    code: "smtputf8_unsupported".into(),
                    message: "an address is not ASCII and the SMTP server does not offer SMTPUTF8".into(),
                });
            }
            mail_parameters.push(MailParameter::SmtpUtfEight);
        }
        if !formatted.is_ascii() {
            if !connection.server_info().supports_feature(Extension::EightBitMime) {
                quit_politely(connection).await;
                return Err(ProviderError::Rejected {
                    code: "8bitmime_unsupported".into(),
                    message: "the message is not 7-bit and the SMTP server does not offer 8BITMIME".into(),
                });
            }
            mail_parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let commands = async {
            connection.command(Mail::new(envelope.from().cloned(), mail_parameters)).await?;
            for recipient in envelope.to() {
                connection.command(Rcpt::new(recipient.clone(), Vec::new())).await?;
            }
            connection.command(Data).await?;
            Ok::<_, SmtpError>(())
        };
        match timeout_at(deadline, commands).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                if error.status().is_some() {
                    quit_politely(connection).await;
                }
                Err(before_data(error))
            }
            Err(_elapsed) => Err(self.no_answer("starting the message")),
        }
    }

    /// A timeout before the message was handed over: certainly not sent.
    fn no_answer(&self, step: &str) -> ProviderError {
        ProviderError::Retryable {
            reason: format!(
                "SMTP server {}:{} did not answer within {:?} while {step}",
                self.host, self.port, self.timeout
            ),
            retry_after: None,
        }
    }
}

/// The email as lettre formats it: `From` (with the name), `To`, `Reply-To` (when set),
/// `Subject`, `Date`, our `Message-ID`, and the text (with the HTML as an alternative part),
/// in a multipart/mixed with the attachments when there are any.
fn build_message(request: &EmailRequest, message_id: &str) -> Result<Message, ProviderError> {
    let invalid = |what: &str, error: &dyn fmt::Display| ProviderError::Rejected {
        code: "invalid_message".into(),
        message: format!("{what}: {error}"),
    };
    let from: Address = request.from.parse().map_err(|e| invalid("invalid sender address", &e))?;
    let to: Address = request.to.parse().map_err(|e| invalid("invalid recipient address", &e))?;
    let mut builder = Message::builder()
        .from(Mailbox::new(request.from_name.clone(), from))
        .to(Mailbox::new(None, to))
        .subject(request.subject.as_str())
        .message_id(Some(message_id.to_owned()));
    if let Some(reply_to) = &request.reply_to {
        let reply_to: Address = reply_to.parse().map_err(|e| invalid("invalid reply address", &e))?;
        builder = builder.reply_to(Mailbox::new(None, reply_to));
    }
    let built = match (&request.html, request.attachments.is_empty()) {
        (Some(html), true) => builder.multipart(MultiPart::alternative_plain_html(request.text.clone(), html.clone())),
        (None, true) => builder.singlepart(SinglePart::plain(request.text.clone())),
        (html, false) => {
            let mut mixed = match html {
                Some(html) => {
                    MultiPart::mixed().multipart(MultiPart::alternative_plain_html(request.text.clone(), html.clone()))
                }
                None => MultiPart::mixed().singlepart(SinglePart::plain(request.text.clone())),
            };
            for file in &request.attachments {
                let content_type = ContentType::parse(&file.content_type)
                    .map_err(|e| invalid(&format!("attachment {:?} has an invalid type", file.file_name), &e))?;
                mixed =
                    mixed.singlepart(Attachment::new(file.file_name.clone()).body(file.data.to_vec(), content_type));
            }
            builder.multipart(mixed)
        }
    };
    built.map_err(|e| invalid("the email could not be built", &e))
}

/// A failure before the message was handed over. The server's 5xx refuses it for good; anything
/// else (4xx, connection refused or dropped, TLS, a garbled answer) left it certainly unsent.
fn before_data(error: SmtpError) -> ProviderError {
    match (error.is_permanent(), error.status()) {
        (true, Some(code)) => ProviderError::Rejected { code: code.to_string(), message: error.to_string() },
        _ => ProviderError::Retryable { reason: format!("SMTP: {}", super::error_chain(&error)), retry_after: None },
    }
}

/// A failure once the message was sent: the server's final 5xx or 4xx answer is definite (it
/// did not take the message); a lost or garbled answer leaves the outcome unknown.
fn after_data(error: &SmtpError) -> ProviderError {
    match error.status() {
        Some(code) if error.is_permanent() => {
            ProviderError::Rejected { code: code.to_string(), message: error.to_string() }
        }
        Some(_) if error.is_transient() => {
            ProviderError::Retryable { reason: format!("SMTP: {error}"), retry_after: None }
        }
        _ => ProviderError::Ambiguous {
            reason: format!("SMTP: no answer after the message was sent: {}", super::error_chain(error)),
        },
    }
}

/// Ends a session the server is still answering in with `QUIT`, not waiting long for it (the
/// outcome is already known). A session that timed out or broke is just dropped.
async fn quit_politely(connection: &mut AsyncSmtpConnection) {
    let _ = tokio::time::timeout(QUIT_GRACE, connection.abort()).await;
}
