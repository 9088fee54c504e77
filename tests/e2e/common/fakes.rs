//! Loopback fakes of the providers Omega sends through: Twilio's Messages API, SendGrid's Mail
//! Send API and an SMTP server.
//!
//! Each is a real server on 127.0.0.1 (hand-rolled HTTP/1.1 or SMTP on a `TcpListener`, so that
//! it can also hang or drop a connection mid-request), checks what the real provider checks,
//! records every request, and can be told how to answer the next one. Everything stops when the
//! fake is dropped.
#![allow(dead_code)]

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use omega::providers::{
    email::{SendGridConfig, SmtpConfig, SmtpTls},
    twilio::TwilioConfig,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};

/// How an HTTP fake answers the next request that gets past authentication and routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// The provider's own handling: validation as the real one does it, then success (Twilio
    /// 201 with a fresh `SM…` sid; SendGrid 202 with a fresh `X-Message-Id`). The default.
    Created,
    /// 429 (Twilio code 20429 with `Retry-After: 1`; SendGrid with `X-RateLimit-Reset` one
    /// second ahead, as SendGrid does).
    TooManyRequests,
    /// 500 with the provider's error body; nothing is stored.
    ServerError,
    /// `status` with the provider's error body carrying `code` (SendGrid has no codes: its
    /// message names it).
    Reject { code: u32, status: u16 },
    /// Reads the request and never answers; the connection stays open.
    Hang,
    /// Reads the request and closes the connection without answering.
    Drop,
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 server

/// One request as it arrived. Header names are lower-cased.
#[derive(Debug, Clone)]
struct HttpRequest {
    method: String,
    /// Path and query, as sent.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

enum HttpReply {
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// The reply, written only after a while (a slow provider that has already acted).
    Later(Duration, Box<HttpReply>),
    Hang,
    Drop,
}

impl HttpReply {
    fn json(status: u16, body: serde_json::Value) -> Self {
        Self::Respond {
            status,
            headers: vec![("content-type".into(), "application/json; charset=utf-8".into())],
            body: body.to_string().into_bytes(),
        }
    }

    fn with_header(mut self, name: &str, value: String) -> Self {
        if let Self::Respond { headers, .. } = &mut self {
            headers.push((name.to_owned(), value));
        }
        self
    }
}

type HttpHandler = Arc<dyn Fn(HttpRequest) -> HttpReply + Send + Sync>;

/// Accepts connections until dropped; each connection serves requests one after another
/// (keep-alive), as a client's pool expects.
struct HttpServer {
    addr: SocketAddr,
    accept_task: JoinHandle<()>,
}

impl HttpServer {
    async fn start(handler: HttpHandler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake HTTP server");
        let addr = listener.local_addr().unwrap();
        let accept_task = tokio::spawn(async move {
            // Owned by this task: aborting it closes every connection, hanging ones included.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                connections.spawn(serve_http_connection(stream, handler.clone()));
            }
        });
        Self { addr, accept_task }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn serve_http_connection(stream: TcpStream, handler: HttpHandler) {
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_http_request(&mut reader).await {
        let close_after = request.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let mut reply = handler(request);
        while let HttpReply::Later(delay, later) = reply {
            tokio::time::sleep(delay).await;
            reply = *later;
        }
        match reply {
            HttpReply::Later(..) => unreachable!("unwrapped above"),
            HttpReply::Respond { status, headers, body } => {
                let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
                let mut head = format!("HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\n", body.len());
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                let stream = reader.get_mut();
                if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(&body).await.is_err() {
                    return;
                }
                let _ = stream.flush().await;
                if close_after {
                    return;
                }
            }
            HttpReply::Hang => std::future::pending::<()>().await,
            HttpReply::Drop => return,
        }
    }
}

/// Reads one request: the head (parsed by httparse), then a `Content-Length` body. `None` when
/// the client closed the connection or sent something that is not HTTP/1.1.
async fn read_http_request(reader: &mut BufReader<TcpStream>) -> Option<HttpRequest> {
    let mut head = Vec::new();
    loop {
        let read = reader.read_until(b'\n', &mut head).await.ok()?;
        if read == 0 || head.len() > 64 * 1024 {
            return None;
        }
        if head == b"\r\n" {
            head.clear(); // tolerated empty line between requests
        } else if head.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let mut header_slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut header_slots);
    parsed.parse(&head).ok()?;
    let method = parsed.method?.to_owned();
    let target = parsed.path?.to_owned();
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map_or(Some(0), |(_, value)| value.trim().parse().ok())?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some(HttpRequest { method, target, headers, body })
}

fn is_content_type(request: &HttpRequest, expected: &str) -> bool {
    request.header("content-type").is_some_and(|value| {
        value.split(';').next().is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case(expected))
    })
}

fn fresh_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

// ---------------------------------------------------------------------------------------------
// Twilio

/// A request that reached the fake Twilio, authenticated or not.
#[derive(Debug, Clone)]
pub struct TwilioRequest {
    pub method: String,
    pub path: String,
    /// The user of HTTP Basic auth (the account SID), if any was sent.
    pub basic_auth_user: Option<String>,
    /// Whether the Basic auth matched the fake's account SID and auth token.
    pub authenticated: bool,
    pub content_type: Option<String>,
    /// The form fields in order, repeats kept (`MediaUrl`). Empty unless the body was
    /// form-encoded — Twilio reads nothing else.
    pub form: Vec<(String, String)>,
}

impl TwilioRequest {
    /// The first value of a form field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated form field, in order.
    pub fn fields(&self, name: &str) -> Vec<&str> {
        self.form.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// A message the fake Twilio created.
#[derive(Debug, Clone)]
pub struct TwilioMessage {
    pub sid: String,
    pub to: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: String,
    pub media_urls: Vec<String>,
    pub status_callback: Option<String>,
    pub status: String,
    pub date_created: String,
}

/// How the fake Twilio answers a message it has just created, until told otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Answer {
    /// At once.
    #[default]
    Promptly,
    /// After this long (the message exists at Twilio meanwhile).
    After(Duration),
    /// Never: the message exists, its answer never comes (a call in flight forever).
    Never,
}

#[derive(Default)]
struct TwilioState {
    requests: Vec<TwilioRequest>,
    behaviors: VecDeque<Behavior>,
    messages: Vec<TwilioMessage>,
    answer: Answer,
    /// Messages created whose answer was held back for good ([`Answer::Never`]).
    unanswered: usize,
    /// Message list reads (`GET …/Messages.json`).
    lookups: usize,
}

/// Twilio's Messages API on loopback: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`,
/// `GET …/Messages/{Sid}.json` and the list `GET …/Messages.json?To=…&From=…&PageSize=…` (newest
/// first, paged through `next_page_uri`), HTTP Basic auth with [`FakeTwilio::ACCOUNT_SID`] and
/// [`FakeTwilio::AUTH_TOKEN`].
pub struct FakeTwilio {
    server: HttpServer,
    state: Arc<Mutex<TwilioState>>,
}

impl FakeTwilio {
    pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
    pub const AUTH_TOKEN: &str = "fake-twilio-auth-token-7f3c9e2a";

    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(TwilioState::default()));
        let handler_state = state.clone();
        let server = HttpServer::start(Arc::new(move |request| twilio_handle(&handler_state, request))).await;
        Self { server, state }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// A client configuration for this fake, with the right credentials.
    pub fn config(&self, timeout: Duration) -> TwilioConfig {
        TwilioConfig {
            base_url: self.base_url(),
            account_sid: Self::ACCOUNT_SID.into(),
            auth_token: Self::AUTH_TOKEN.into(),
            timeout,
        }
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<TwilioRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every message created so far, oldest first.
    pub fn messages(&self) -> Vec<TwilioMessage> {
        self.state.lock().unwrap().messages.clone()
    }

    /// Queues how to answer the next authenticated request (then the next, …); once the queue
    /// is empty requests are handled normally ([`Behavior::Created`]).
    pub fn respond_next(&self, behavior: Behavior) {
        self.state.lock().unwrap().behaviors.push_back(behavior);
    }

    /// How to answer the messages created from now on.
    pub fn set_answer(&self, answer: Answer) {
        self.state.lock().unwrap().answer = answer;
    }

    /// Messages created whose answer was never given ([`Answer::Never`]): sends truly in flight.
    pub fn unanswered(&self) -> usize {
        self.state.lock().unwrap().unanswered
    }

    /// How many times the message list was read.
    pub fn lookups(&self) -> usize {
        self.state.lock().unwrap().lookups
    }

    /// Moves a created message on, as delivery would (`sent`, `delivered`, `undelivered`…).
    pub fn set_status(&self, sid: &str, status: &str) {
        let mut state = self.state.lock().unwrap();
        let message = state.messages.iter_mut().find(|m| m.sid == sid).expect("a message the fake created");
        message.status = status.to_owned();
    }
}

fn twilio_error(status: u16, code: u32, message: &str) -> HttpReply {
    HttpReply::json(
        status,
        serde_json::json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        }),
    )
}

fn twilio_handle(state: &Mutex<TwilioState>, request: HttpRequest) -> HttpReply {
    let credentials = request
        .header("authorization")
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok());
    let (user, password) = match credentials.as_deref().and_then(|c| c.split_once(':')) {
        Some((user, password)) => (Some(user.to_owned()), Some(password.to_owned())),
        None => (None, None),
    };
    let path = request.path().to_owned();
    let account_in_path = path.strip_prefix("/2010-04-01/Accounts/").and_then(|rest| rest.split('/').next());
    // The credentials must be the account's whose resources the path names.
    let authenticated = user.as_deref() == Some(FakeTwilio::ACCOUNT_SID)
        && password.as_deref() == Some(FakeTwilio::AUTH_TOKEN)
        && account_in_path.is_none_or(|account| account == FakeTwilio::ACCOUNT_SID);
    let form = if is_content_type(&request, "application/x-www-form-urlencoded") {
        form_urlencoded::parse(&request.body).into_owned().collect()
    } else {
        Vec::new()
    };
    let recorded = TwilioRequest {
        method: request.method.clone(),
        path: path.clone(),
        basic_auth_user: user,
        authenticated,
        content_type: request.header("content-type").map(str::to_owned),
        form,
    };
    let mut state = state.lock().unwrap();
    state.requests.push(recorded.clone());

    if !authenticated {
        return twilio_error(401, 20003, "Authenticate")
            .with_header("www-authenticate", "Basic realm=\"Twilio API\"".into());
    }
    let messages_path = format!("/2010-04-01/Accounts/{}/Messages", FakeTwilio::ACCOUNT_SID);
    let Some(resource) = path.strip_prefix(&messages_path) else {
        return twilio_error(404, 20404, &format!("The requested resource {path} was not found"));
    };
    let fetched_sid = match (request.method.as_str(), resource) {
        ("POST", ".json") => None,
        ("GET", ".json") => {
            if let Some(reply) = state.behaviors.pop_front().and_then(|b| twilio_fault(&b)) {
                return reply;
            }
            state.lookups += 1;
            return twilio_list(&state.messages, &messages_path, &request.target);
        }
        ("GET", rest) if rest.starts_with('/') && rest.ends_with(".json") => {
            Some(rest.trim_start_matches('/').trim_end_matches(".json").to_owned())
        }
        (_, ".json") => return twilio_error(405, 20004, "Method not allowed"),
        _ => return twilio_error(404, 20404, &format!("The requested resource {path} was not found")),
    };

    if let Some(reply) = state.behaviors.pop_front().and_then(|b| twilio_fault(&b)) {
        return reply;
    }

    if let Some(sid) = fetched_sid {
        return match state.messages.iter().find(|m| m.sid == sid) {
            Some(message) => HttpReply::json(200, twilio_message_json(message)),
            None => twilio_error(404, 20404, &format!("The requested resource {path} was not found")),
        };
    }

    // Twilio's checks on a new message, in its order.
    let Some(to) = recorded.field("To").filter(|to| !to.is_empty()) else {
        return twilio_error(400, 21604, "A 'To' phone number is required.");
    };
    let e164 = to.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
    });
    if !e164 {
        return twilio_error(400, 21211, &format!("Invalid 'To' Phone Number: {to}"));
    }
    let from = recorded.field("From").filter(|v| !v.is_empty()).map(str::to_owned);
    let messaging_service_sid = recorded.field("MessagingServiceSid").filter(|v| !v.is_empty()).map(str::to_owned);
    if from.is_none() && messaging_service_sid.is_none() {
        return twilio_error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message.");
    }
    let body = recorded.field("Body").unwrap_or_default().to_owned();
    let media_urls: Vec<String> = recorded.fields("MediaUrl").into_iter().map(str::to_owned).collect();
    if body.is_empty() && media_urls.is_empty() {
        return twilio_error(400, 21602, "Message body is required.");
    }
    let message = TwilioMessage {
        sid: format!("{}{}", if media_urls.is_empty() { "SM" } else { "MM" }, fresh_hex()),
        to: to.to_owned(),
        from,
        // A messaging service picks the sender later: the message starts `accepted`.
        status: if messaging_service_sid.is_some() { "accepted" } else { "queued" }.into(),
        messaging_service_sid,
        body,
        media_urls,
        status_callback: recorded.field("StatusCallback").map(str::to_owned),
        date_created: chrono::Utc::now().to_rfc2822(),
    };
    let reply = HttpReply::json(201, twilio_message_json(&message));
    state.messages.push(message);
    match state.answer {
        Answer::Promptly => reply,
        Answer::After(delay) => HttpReply::Later(delay, Box::new(reply)),
        Answer::Never => {
            state.unanswered += 1;
            HttpReply::Hang
        }
    }
}

/// The answer a queued behaviour gives instead of the normal handling (`None`: handle normally).
fn twilio_fault(behavior: &Behavior) -> Option<HttpReply> {
    Some(match behavior {
        Behavior::Created => return None,
        Behavior::TooManyRequests => {
            twilio_error(429, 20429, "Too Many Requests").with_header("retry-after", "1".into())
        }
        Behavior::ServerError => twilio_error(500, 20500, "An internal server error has occurred"),
        Behavior::Reject { code, status } => {
            twilio_error(*status, *code, &format!("Rejected by the fake Twilio (code {code})"))
        }
        Behavior::Hang => HttpReply::Hang,
        Behavior::Drop => HttpReply::Drop,
    })
}

/// One page of the message list, newest first, filtered by `To` and `From` as Twilio does;
/// `Page` (0-based) and `PageSize` (default 50) page it, `next_page_uri` names the next page.
fn twilio_list(messages: &[TwilioMessage], messages_path: &str, target: &str) -> HttpReply {
    let query: Vec<(String, String)> =
        form_urlencoded::parse(target.split_once('?').map_or("", |(_, q)| q).as_bytes()).into_owned().collect();
    let param = |name: &str| query.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let page_size: usize = param("PageSize").and_then(|v| v.parse().ok()).unwrap_or(50).clamp(1, 1000);
    let page: usize = param("Page").and_then(|v| v.parse().ok()).unwrap_or(0);
    let (to, from) = (param("To"), param("From"));
    let matching: Vec<&TwilioMessage> = messages
        .iter()
        .rev()
        .filter(|m| to.as_ref().is_none_or(|to| &m.to == to))
        .filter(|m| from.as_ref().is_none_or(|from| m.from.as_ref() == Some(from)))
        .collect();
    let listed: Vec<serde_json::Value> =
        matching.iter().skip(page * page_size).take(page_size).map(|m| twilio_message_json(m)).collect();
    let next_page_uri = ((page + 1) * page_size < matching.len()).then(|| {
        let mut next = form_urlencoded::Serializer::new(String::new());
        for (name, value) in query.iter().filter(|(n, _)| n != "Page" && n != "PageToken") {
            next.append_pair(name, value);
        }
        next.append_pair("Page", &(page + 1).to_string());
        next.append_pair("PageToken", &format!("PA{}", page + 1));
        format!("{messages_path}.json?{}", next.finish())
    });
    HttpReply::json(
        200,
        serde_json::json!({
            "messages": listed,
            "page": page,
            "page_size": page_size,
            "uri": target,
            "next_page_uri": next_page_uri,
        }),
    )
}

/// The Message resource as Twilio prints it (the fields a client may read).
fn twilio_message_json(message: &TwilioMessage) -> serde_json::Value {
    let uri = format!("/2010-04-01/Accounts/{}/Messages/{}.json", FakeTwilio::ACCOUNT_SID, message.sid);
    serde_json::json!({
        "account_sid": FakeTwilio::ACCOUNT_SID,
        "api_version": "2010-04-01",
        "body": message.body,
        "date_created": message.date_created,
        "date_sent": null,
        "date_updated": message.date_created,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": message.from,
        "messaging_service_sid": message.messaging_service_sid,
        "num_media": message.media_urls.len().to_string(),
        "num_segments": "1",
        "price": null,
        "price_unit": "USD",
        "sid": message.sid,
        "status": message.status,
        "subresource_uris": { "media": uri.replace(".json", "/Media.json") },
        "to": message.to,
        "uri": uri,
    })
}

// ---------------------------------------------------------------------------------------------
// SendGrid

/// A request that reached the fake SendGrid, authenticated or not.
#[derive(Debug, Clone)]
pub struct SendGridRequest {
    pub method: String,
    pub path: String,
    /// Whether `Authorization: Bearer` carried [`FakeSendGrid::API_KEY`].
    pub authenticated: bool,
    pub content_type: Option<String>,
    /// The body, when it was JSON.
    pub json: Option<serde_json::Value>,
}

/// An email the fake SendGrid accepted (202).
#[derive(Debug, Clone)]
pub struct SendGridAccepted {
    /// What the fake answered in `X-Message-Id`.
    pub x_message_id: String,
    pub json: serde_json::Value,
}

#[derive(Default)]
struct SendGridState {
    requests: Vec<SendGridRequest>,
    behaviors: VecDeque<Behavior>,
    accepted: Vec<SendGridAccepted>,
}

/// SendGrid's Mail Send API on loopback: `POST /v3/mail/send` with `Authorization: Bearer
/// {API_KEY}`, validated like SendGrid validates it, answered 202 with `X-Message-Id`.
pub struct FakeSendGrid {
    server: HttpServer,
    state: Arc<Mutex<SendGridState>>,
}

impl FakeSendGrid {
    pub const API_KEY: &str = "SG.fake-sendgrid-key.b81d5e0c9a";

    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(SendGridState::default()));
        let handler_state = state.clone();
        let server = HttpServer::start(Arc::new(move |request| sendgrid_handle(&handler_state, request))).await;
        Self { server, state }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// A client configuration for this fake, with the right key.
    pub fn config(&self, timeout: Duration) -> SendGridConfig {
        SendGridConfig { base_url: self.base_url(), api_key: Self::API_KEY.into(), timeout }
    }

    pub fn requests(&self) -> Vec<SendGridRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn accepted(&self) -> Vec<SendGridAccepted> {
        self.state.lock().unwrap().accepted.clone()
    }

    /// Queues how to answer the next authenticated request; then [`Behavior::Created`].
    pub fn respond_next(&self, behavior: Behavior) {
        self.state.lock().unwrap().behaviors.push_back(behavior);
    }
}

fn sendgrid_errors(status: u16, errors: Vec<(Option<String>, String)>) -> HttpReply {
    let errors: Vec<_> = errors
        .into_iter()
        .map(|(field, message)| serde_json::json!({ "field": field, "message": message, "help": null }))
        .collect();
    HttpReply::json(status, serde_json::json!({ "errors": errors }))
}

fn sendgrid_error(status: u16, message: &str) -> HttpReply {
    sendgrid_errors(status, vec![(None, message.to_owned())])
}

fn sendgrid_handle(state: &Mutex<SendGridState>, request: HttpRequest) -> HttpReply {
    let authenticated = request
        .header("authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|key| key.trim() == FakeSendGrid::API_KEY);
    let is_json = is_content_type(&request, "application/json");
    let json = serde_json::from_slice::<serde_json::Value>(&request.body).ok().filter(|_| is_json);
    let recorded = SendGridRequest {
        method: request.method.clone(),
        path: request.path().to_owned(),
        authenticated,
        content_type: request.header("content-type").map(str::to_owned),
        json: json.clone(),
    };
    let mut state = state.lock().unwrap();
    state.requests.push(recorded);

    if !authenticated {
        return sendgrid_error(401, "The provided authorization grant is invalid, expired, or revoked");
    }
    if request.path() != "/v3/mail/send" {
        return sendgrid_error(404, "resource not found");
    }
    if request.method != "POST" {
        return sendgrid_error(405, "method not allowed");
    }
    match state.behaviors.pop_front().unwrap_or(Behavior::Created) {
        Behavior::Created => {}
        Behavior::TooManyRequests => {
            let reset = chrono::Utc::now().timestamp() + 1;
            return sendgrid_error(429, "too many requests")
                .with_header("x-ratelimit-limit", "600".into())
                .with_header("x-ratelimit-remaining", "0".into())
                .with_header("x-ratelimit-reset", reset.to_string());
        }
        Behavior::ServerError => return sendgrid_error(500, "internal server error"),
        Behavior::Reject { code, status } => {
            return sendgrid_error(status, &format!("rejected by the fake SendGrid (code {code})"));
        }
        Behavior::Hang => return HttpReply::Hang,
        Behavior::Drop => return HttpReply::Drop,
    }
    if !is_json {
        return sendgrid_error(400, "Content-Type should be application/json.");
    }
    let Some(json) = json else {
        return sendgrid_errors(400, vec![(None, "Bad Request".into())]);
    };
    let errors = validate_mail_send(&json);
    if !errors.is_empty() {
        return sendgrid_errors(400, errors);
    }
    let x_message_id = fresh_hex()[..22].to_owned();
    state.accepted.push(SendGridAccepted { x_message_id: x_message_id.clone(), json });
    HttpReply::Respond { status: 202, headers: vec![("x-message-id".into(), x_message_id)], body: Vec::new() }
}

fn is_non_empty_string(value: &serde_json::Value) -> bool {
    value.as_str().is_some_and(|s| !s.is_empty())
}

/// SendGrid's checks on a Mail Send body (without templates): every problem, each with its field.
fn validate_mail_send(json: &serde_json::Value) -> Vec<(Option<String>, String)> {
    let mut errors = Vec::new();
    let mut error = |field: &str, message: &str| errors.push((Some(field.to_owned()), message.to_owned()));
    let valid_address = |value: &serde_json::Value| {
        value.as_str().is_some_and(|email| {
            email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        })
    };

    let personalizations = json["personalizations"].as_array().filter(|p| !p.is_empty());
    match personalizations {
        None => error(
            "personalizations",
            "The personalizations field is required and must have at least one personalization.",
        ),
        Some(personalizations) => {
            for (i, personalization) in personalizations.iter().enumerate() {
                match personalization["to"].as_array().filter(|to| !to.is_empty()) {
                    None => error(
                        &format!("personalizations.{i}.to"),
                        "The to array is required for all personalization objects, and must have at least one email object with a valid email address.",
                    ),
                    Some(to) => {
                        for (j, recipient) in to.iter().enumerate() {
                            if !valid_address(&recipient["email"]) {
                                error(
                                    &format!("personalizations.{i}.to.{j}.email"),
                                    "Does not contain a valid address.",
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    if !valid_address(&json["from"]["email"]) {
        error(
            "from.email",
            "The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.",
        );
    }
    let every_personalization_has_subject =
        personalizations.is_some_and(|p| p.iter().all(|p| is_non_empty_string(&p["subject"])));
    if !is_non_empty_string(&json["subject"]) && !every_personalization_has_subject {
        error(
            "subject",
            "The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.",
        );
    }
    match json["content"].as_array().filter(|c| !c.is_empty()) {
        None => error(
            "content",
            "Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block. We typically suggest both text/plain and text/html blocks are included, but only one block is required.",
        ),
        Some(content) => {
            for (i, block) in content.iter().enumerate() {
                if !is_non_empty_string(&block["type"]) {
                    error(
                        &format!("content.{i}.type"),
                        "The content type cannot contain ';', or CRLF characters, and must be at least 1 character long.",
                    );
                }
                if !is_non_empty_string(&block["value"]) {
                    error(
                        &format!("content.{i}.value"),
                        "The content value must be a string at least one character in length.",
                    );
                }
                if i > 0 && block["type"] == "text/plain" {
                    error(
                        &format!("content.{i}.type"),
                        "If present, text/plain content must be first, followed by text/html.",
                    );
                }
            }
        }
    }
    if let Some(custom_args) = json.get("custom_args") {
        let all_strings = custom_args.as_object().is_some_and(|args| args.values().all(|v| v.is_string()));
        if !all_strings {
            error("custom_args", "custom_args must be an object whose values are strings.");
        }
    }
    errors
}

// ---------------------------------------------------------------------------------------------
// SMTP

/// How the SMTP sink treats the next message (one transaction, from `MAIL FROM` on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpBehavior {
    /// `250` after the data. The default.
    Accept,
    /// This code (e.g. 550, 451) after the data: the message was received, then refused.
    ReplyAfterData(u16),
    /// This code (e.g. 550 "no such mailbox") to `RCPT TO`.
    ReplyToRcpt(u16),
    /// Reads the whole message and never answers.
    HangAfterData,
    /// Reads the whole message and closes the connection without answering.
    DropAfterData,
    /// Closes the next connection before the greeting (consumed by that connection).
    DropBeforeGreeting,
}

/// A message transaction that reached the end of its data.
#[derive(Debug, Clone)]
pub struct SmtpMessage {
    /// The EHLO/HELO name.
    pub hello: String,
    pub authenticated_as: Option<String>,
    /// The reverse path, without angle brackets or parameters.
    pub mail_from: String,
    /// The accepted recipients, without angle brackets.
    pub rcpt_to: Vec<String>,
    /// The message as sent: CRLF lines, dot-unstuffed, without the final `.` line.
    pub data: String,
    /// What the sink answered after the data (`None`: it hung or dropped).
    pub reply: Option<u16>,
}

impl SmtpMessage {
    /// Whether the sink took responsibility for the message (250).
    pub fn delivered(&self) -> bool {
        self.reply == Some(250)
    }

    /// The first header of that name in the data (unfolded), e.g. `Message-ID`.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(value) = value.as_mut() {
                    value.push_str(line);
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((field, rest)) = line.split_once(':')
                && field.eq_ignore_ascii_case(name)
            {
                value = Some(rest.trim().to_owned());
            }
        }
        value
    }
}

#[derive(Default)]
struct SmtpState {
    messages: Vec<SmtpMessage>,
    behaviors: VecDeque<SmtpBehavior>,
    connections: usize,
}

/// A plain-text SMTP server on loopback: EHLO/HELO, AUTH PLAIN (when started with
/// credentials), MAIL FROM, RCPT TO, DATA, RSET, NOOP, QUIT, in the order RFC 5321 requires.
pub struct SmtpSink {
    addr: SocketAddr,
    accept_task: JoinHandle<()>,
    state: Arc<Mutex<SmtpState>>,
    credentials: Option<(String, String)>,
}

impl SmtpSink {
    /// A sink that accepts mail without authentication.
    pub async fn start() -> Self {
        Self::start_inner(None).await
    }

    /// A sink that offers AUTH PLAIN and requires these credentials before `MAIL FROM`.
    pub async fn start_with_auth(username: &str, password: &str) -> Self {
        Self::start_inner(Some((username.to_owned(), password.to_owned()))).await
    }

    async fn start_inner(credentials: Option<(String, String)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind SMTP sink");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(SmtpState::default()));
        let (task_state, task_credentials) = (state.clone(), credentials.clone());
        let accept_task = tokio::spawn(async move {
            let mut sessions = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                while sessions.try_join_next().is_some() {}
                sessions.spawn(smtp_session(stream, task_state.clone(), task_credentials.clone()));
            }
        });
        Self { addr, accept_task, state, credentials }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client configuration for this sink: no TLS, the sink's credentials if it has any.
    pub fn config(&self, timeout: Duration) -> SmtpConfig {
        SmtpConfig {
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
            tls: SmtpTls::None,
            username: self.credentials.as_ref().map(|(user, _)| user.clone()),
            password: self.credentials.as_ref().map(|(_, password)| password.clone()),
            timeout,
        }
    }

    /// Every message that reached the end of its data, delivered or not, oldest first.
    pub fn messages(&self) -> Vec<SmtpMessage> {
        self.state.lock().unwrap().messages.clone()
    }

    /// The messages the sink answered 250.
    pub fn delivered(&self) -> Vec<SmtpMessage> {
        self.messages().into_iter().filter(SmtpMessage::delivered).collect()
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Queues how to treat the next message (then the next, …); then [`SmtpBehavior::Accept`].
    pub fn respond_next(&self, behavior: SmtpBehavior) {
        self.state.lock().unwrap().behaviors.push_back(behavior);
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// One transaction's progress.
#[derive(Default)]
struct SmtpTransaction {
    behavior: Option<SmtpBehavior>,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

/// `<addr> PARAMS` after `MAIL FROM:` / `RCPT TO:` → `addr`.
fn smtp_path(argument: &str) -> Option<String> {
    let argument = argument.trim_start();
    let inner = argument.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some(inner[..end].to_owned())
}

/// The enhanced status code that goes with a basic one, e.g. 550 → `5.0.0`.
fn enhanced(code: u16) -> String {
    format!("{}.0.0", code / 100)
}

async fn smtp_session(stream: TcpStream, state: Arc<Mutex<SmtpState>>, credentials: Option<(String, String)>) {
    {
        let mut state = state.lock().unwrap();
        state.connections += 1;
        if state.behaviors.front() == Some(&SmtpBehavior::DropBeforeGreeting) {
            state.behaviors.pop_front();
            return;
        }
    }
    let mut stream = BufReader::new(stream);
    macro_rules! reply {
        ($($arg:tt)*) => {
            if stream.get_mut().write_all(format!($($arg)*).as_bytes()).await.is_err() {
                return;
            }
        };
    }
    reply!("220 fake-smtp ESMTP ready\r\n");
    let mut hello: Option<String> = None;
    let mut authenticated_as: Option<String> = None;
    let mut transaction = SmtpTransaction::default();
    let mut line = String::new();
    loop {
        line.clear();
        match stream.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command_line = line.trim_end_matches(['\r', '\n']);
        let (verb, argument) = command_line.split_once(' ').unwrap_or((command_line, ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" if !argument.trim().is_empty() => {
                hello = Some(argument.trim().to_owned());
                transaction = SmtpTransaction::default();
                let auth = if credentials.is_some() { "250-AUTH PLAIN\r\n" } else { "" };
                reply!(
                    "250-fake-smtp greets {}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n{auth}250 SIZE 10485760\r\n",
                    argument.trim()
                );
            }
            "HELO" if !argument.trim().is_empty() => {
                hello = Some(argument.trim().to_owned());
                transaction = SmtpTransaction::default();
                reply!("250 fake-smtp\r\n");
            }
            "EHLO" | "HELO" => reply!("501 5.5.4 Syntax: {verb} hostname\r\n"),
            "AUTH" => {
                let Some((expected_user, expected_password)) = &credentials else {
                    reply!("502 5.5.1 AUTH not offered\r\n");
                    continue;
                };
                if hello.is_none() {
                    reply!("503 5.5.1 EHLO first\r\n");
                    continue;
                }
                if authenticated_as.is_some() {
                    reply!("503 5.5.1 Already authenticated\r\n");
                    continue;
                }
                let (mechanism, initial) = argument.split_once(' ').unwrap_or((argument, ""));
                if !mechanism.eq_ignore_ascii_case("PLAIN") {
                    reply!("504 5.5.4 Unrecognized authentication type\r\n");
                    continue;
                }
                let mut response = initial.trim().to_owned();
                if response.is_empty() {
                    reply!("334 \r\n");
                    line.clear();
                    match stream.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => response = line.trim().to_owned(),
                    }
                }
                // PLAIN: authorization identity NUL authentication identity NUL password.
                let decoded = base64::engine::general_purpose::STANDARD.decode(&response).ok();
                let parts: Vec<Vec<u8>> =
                    decoded.map(|d| d.split(|b| *b == 0).map(<[u8]>::to_vec).collect()).unwrap_or_default();
                match parts.as_slice() {
                    [_, user, password]
                        if user == expected_user.as_bytes() && password == expected_password.as_bytes() =>
                    {
                        authenticated_as = Some(expected_user.clone());
                        reply!("235 2.7.0 Authentication successful\r\n");
                    }
                    _ => reply!("535 5.7.8 Authentication credentials invalid\r\n"),
                }
            }
            "MAIL" => {
                let Some(path) = argument.strip_prefix_ignore_case("FROM:").and_then(smtp_path) else {
                    reply!("501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
                    continue;
                };
                if hello.is_none() {
                    reply!("503 5.5.1 EHLO/HELO first\r\n");
                } else if credentials.is_some() && authenticated_as.is_none() {
                    reply!("530 5.7.0 Authentication required\r\n");
                } else if transaction.mail_from.is_some() {
                    reply!("503 5.5.1 Nested MAIL command\r\n");
                } else {
                    let behavior = {
                        let mut state = state.lock().unwrap();
                        match state.behaviors.front() {
                            Some(SmtpBehavior::DropBeforeGreeting) | None => SmtpBehavior::Accept,
                            Some(_) => state.behaviors.pop_front().unwrap(),
                        }
                    };
                    transaction =
                        SmtpTransaction { behavior: Some(behavior), mail_from: Some(path), rcpt_to: Vec::new() };
                    reply!("250 2.1.0 OK\r\n");
                }
            }
            "RCPT" => {
                let Some(path) = argument.strip_prefix_ignore_case("TO:").and_then(smtp_path) else {
                    reply!("501 5.5.4 Syntax: RCPT TO:<address>\r\n");
                    continue;
                };
                if transaction.mail_from.is_none() {
                    reply!("503 5.5.1 Need MAIL before RCPT\r\n");
                } else if let Some(SmtpBehavior::ReplyToRcpt(code)) = transaction.behavior {
                    reply!("{code} {} Recipient refused by the fake sink\r\n", enhanced(code));
                } else if path.is_empty() {
                    reply!("501 5.1.3 Bad recipient address syntax\r\n");
                } else {
                    transaction.rcpt_to.push(path);
                    reply!("250 2.1.5 OK\r\n");
                }
            }
            "DATA" => {
                if transaction.mail_from.is_none() {
                    reply!("503 5.5.1 Need MAIL command\r\n");
                    continue;
                }
                if transaction.rcpt_to.is_empty() {
                    reply!("554 5.5.1 No valid recipients\r\n");
                    continue;
                }
                reply!("354 End data with <CR><LF>.<CR><LF>\r\n");
                let mut data = String::new();
                loop {
                    line.clear();
                    match stream.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                let data = data.strip_suffix("\r\n").unwrap_or(&data).to_owned();
                let behavior = transaction.behavior.unwrap_or(SmtpBehavior::Accept);
                let reply_code = match behavior {
                    SmtpBehavior::ReplyAfterData(code) => Some(code),
                    SmtpBehavior::HangAfterData | SmtpBehavior::DropAfterData => None,
                    _ => Some(250),
                };
                let finished = std::mem::take(&mut transaction);
                state.lock().unwrap().messages.push(SmtpMessage {
                    hello: hello.clone().unwrap_or_default(),
                    authenticated_as: authenticated_as.clone(),
                    mail_from: finished.mail_from.unwrap_or_default(),
                    rcpt_to: finished.rcpt_to,
                    data,
                    reply: reply_code,
                });
                match (behavior, reply_code) {
                    (SmtpBehavior::HangAfterData, _) => std::future::pending::<()>().await,
                    (_, None) => return,
                    (_, Some(250)) => reply!("250 2.0.0 OK queued as {}\r\n", &fresh_hex()[..12]),
                    (_, Some(code)) => reply!("{code} {} Message refused by the fake sink\r\n", enhanced(code)),
                }
            }
            "RSET" => {
                transaction = SmtpTransaction::default();
                reply!("250 2.0.0 OK\r\n");
            }
            "NOOP" => reply!("250 2.0.0 OK\r\n"),
            "QUIT" => {
                reply!("221 2.0.0 Bye\r\n");
                return;
            }
            _ => reply!("502 5.5.2 Command not recognized\r\n"),
        }
    }
}

trait StripPrefixIgnoreCase {
    fn strip_prefix_ignore_case(&self, prefix: &str) -> Option<&str>;
}

impl StripPrefixIgnoreCase for str {
    fn strip_prefix_ignore_case(&self, prefix: &str) -> Option<&str> {
        let head = self.get(..prefix.len())?;
        head.eq_ignore_ascii_case(prefix).then(|| &self[prefix.len()..])
    }
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy that can cut the line (a database outage)

/// Forwards loopback connections to `upstream` until told to cut: then every open connection is
/// closed and the port refuses connections (as a stopped server's would) until
/// [`TcpProxy::restore`].
pub struct TcpProxy {
    addr: SocketAddr,
    /// (cuts so far, whether the line is down): connections opened before a cut end with it.
    generation: tokio::sync::watch::Sender<(u64, bool)>,
    accept_task: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let (generation, mut watch) = tokio::sync::watch::channel((0_u64, false));
        let accept_task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            let mut listener = Some(listener);
            loop {
                let Some(open) = &listener else {
                    // Down: nothing listens, so connecting is refused. Back up on restore.
                    let _ = watch.wait_for(|(_, down)| !*down).await;
                    listener = Some(TcpListener::bind(addr).await.expect("rebind proxy"));
                    continue;
                };
                let accepted = tokio::select! {
                    accepted = open.accept() => accepted,
                    _ = watch.wait_for(|(_, down)| *down) => {
                        listener = None;
                        continue;
                    }
                };
                let Ok((mut inbound, _)) = accepted else { continue };
                while connections.try_join_next().is_some() {}
                let born = watch.borrow().0;
                let mut watch = watch.clone();
                connections.spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|(generation, _)| *generation != born) => {}
                    }
                });
            }
        });
        Self { addr, generation, accept_task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The outage begins: every connection is dropped, none is let through.
    pub fn cut(&self) {
        self.generation.send_modify(|(generation, down)| {
            *generation += 1;
            *down = true;
        });
    }

    /// The outage ends.
    pub fn restore(&self) {
        self.generation.send_modify(|(_, down)| *down = false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}
