//! Inbound email: clients' replies, as SendGrid Inbound Parse or a mail relay posts them.
//!
//! Neither signs what it posts, so each business has a secret token in the URL it is given
//! (only the token's hash is stored; compared in constant time). A wrong token is refused before
//! the body is read. The MIME message is parsed by `mail-parser` (charsets, encoded words,
//! multipart/alternative, attachments); Inbound Parse's parsed fields are decoded by the charsets
//! it names. Then the email is threaded — by `In-Reply-To`/`References` to the message it
//! answers (Omega's `Message-ID`s carry the message's id), else by a `reply+{message id}@…`
//! recipient, else by the sender's address, all within the token's business — and stored as an
//! inbound EMAIL message, once per `Message-ID`.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders, PartType};
use rand::{Rng, distr::Alphanumeric};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{
    Error, Omega, Result,
    attachments::Upload,
    auth::{Caller, Scope},
    messages::{ClientRef, EMAIL_HTML_MAX_CHARS, EMAIL_SUBJECT_MAX_CHARS, EMAIL_TEXT_MAX_CHARS, IncomingMessage},
    values::{Channel, now},
};
use crate::store::{attachments::NewAttachment, directory, entity::message, inbound_email as db, messages};

/// The largest email accepted, as posted (the edge refuses bodies over 4 MiB before this).
pub const MAX_INBOUND_BYTES: usize = 4 * 1024 * 1024;
/// The provider name inbound emails are stored under; their provider id is the `Message-ID`.
pub const INBOUND_PROVIDER: &str = "email";

const TOKEN_TAG: &str = "omi_";
const TOKEN_SECRET_LEN: usize = 40;
const TOKEN_PREFIX_LEN: usize = 12;
/// The local part of a reply address Omega sets: `reply+{message id}@{inbound domain}`.
const REPLY_TAG: &str = "reply+";

/// A business's new inbound-email token, shown once.
pub struct IssuedInboundToken {
    pub business_id: i64,
    pub token: String,
    pub created_at: DateTime<Utc>,
}

/// What happened to a posted email.
pub struct InboundOutcome {
    pub message: super::views::MessageView,
    /// False when the same `Message-ID` was stored before (nothing new was written).
    pub created: bool,
    /// Attachments that were not kept (type or size), each `name: reason`.
    pub skipped: Vec<String>,
}

/// An email, whichever way it arrived.
#[derive(Default)]
struct ParsedEmail {
    /// `Message-ID` without angle brackets.
    message_id: Option<String>,
    /// `In-Reply-To`, then `References` newest first, without angle brackets.
    references: Vec<String>,
    from_address: Option<String>,
    from_name: Option<String>,
    /// Every recipient address (To, Cc, Delivered-To, the envelope's).
    recipients: Vec<String>,
    subject: String,
    /// The whole text (an HTML-only email's text rendering), quoted history included.
    text: String,
    html: Option<String>,
    files: Vec<Upload>,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn token_prefix(token: &str) -> &str {
    // Tokens are checked to be ASCII before this is called.
    &token[..TOKEN_PREFIX_LEN.min(token.len())]
}

/// `<id>` → `id` (trimmed); empty stays empty.
fn bare_id(id: &str) -> String {
    id.trim().trim_start_matches('<').trim_end_matches('>').trim().to_owned()
}

/// The ids of a header that lists message ids (`In-Reply-To`, `References`).
fn ids_of(value: &HeaderValue<'_>) -> Vec<String> {
    let mut out = Vec::new();
    match value {
        HeaderValue::Text(text) => out.extend(text.split_whitespace().map(bare_id)),
        HeaderValue::TextList(list) => {
            for text in list {
                out.extend(text.split_whitespace().map(bare_id));
            }
        }
        _ => {}
    }
    out.retain(|id| !id.is_empty());
    out
}

fn addresses_of(address: Option<&Address<'_>>, out: &mut Vec<String>) {
    if let Some(address) = address {
        out.extend(address.iter().filter_map(|a| a.address()).map(|a| a.trim().to_ascii_lowercase()));
    }
}

/// The message id an Omega address or `Message-ID` carries: `{uuid}@…` or `reply+{uuid}@…`.
fn omega_id_in(id_or_address: &str) -> Option<String> {
    let local = id_or_address.split('@').next()?.trim();
    let local = local.strip_prefix(REPLY_TAG).unwrap_or(local);
    uuid::Uuid::parse_str(local).ok().map(|u| u.to_string())
}

/// The text a client wrote, without the quoted history of the thread. Kept deliberately
/// simple: everything from the first attribution line (`On … wrote:`, possibly wrapped over two
/// lines, and its common translations) or an `-----Original Message-----` / Outlook `From:`
/// separator is cut, and lines quoted with `>` are dropped. If nothing would remain, the whole
/// text is kept.
pub fn strip_quoted(text: &str) -> String {
    const ATTRIBUTION_ENDS: [&str; 6] = ["wrote:", "a écrit :", "a écrit:", "schrieb:", "escribió:", "scritto:"];
    let lines: Vec<&str> = text.lines().collect();
    let ends_attribution = |line: &str| {
        let line = line.trim_end();
        ATTRIBUTION_ENDS.iter().any(|end| line.ends_with(end))
    };
    let mut cut = lines.len();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        let separator = trimmed.starts_with("-----Original Message-----")
            || trimmed.starts_with("----- Original Message -----")
            || (trimmed.starts_with("________________________________")
                && lines.get(i + 1).is_some_and(|next| next.trim_start().starts_with("From:")));
        let attribution = (trimmed.starts_with("On ") || trimmed.starts_with("Le ") || trimmed.starts_with("Am "))
            && (ends_attribution(trimmed) || lines.get(i + 1).is_some_and(|next| ends_attribution(next)));
        if separator || attribution {
            cut = i;
            break;
        }
    }
    let kept: Vec<&str> = lines[..cut].iter().copied().filter(|line| !line.trim_start().starts_with('>')).collect();
    let new_text = kept.join("\n").trim().to_owned();
    if new_text.is_empty() { text.trim().to_owned() } else { new_text }
}

/// At most `max` characters of `text`.
fn cut_chars(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => text[..end].to_owned(),
        None => text,
    }
}

/// Reads an RFC 5322 message with mail-parser.
fn parse_mime(raw: &[u8]) -> Result<ParsedEmail> {
    let message = MessageParser::default()
        .parse(raw)
        .filter(|m| !m.headers().is_empty())
        .ok_or_else(|| Error::invalid("body", "is not an RFC 5322 email message"))?;
    let mut email = ParsedEmail {
        message_id: message.message_id().map(bare_id).filter(|id| !id.is_empty()),
        subject: message.subject().unwrap_or_default().to_owned(),
        ..Default::default()
    };
    email.references = ids_of(message.in_reply_to());
    let mut references = ids_of(message.references());
    references.reverse();
    email.references.extend(references);
    if let Some(from) = message.from().and_then(|f| f.first()) {
        email.from_address = from.address().map(|a| a.trim().to_owned());
        email.from_name = from.name().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    }
    addresses_of(message.to(), &mut email.recipients);
    addresses_of(message.cc(), &mut email.recipients);
    for header in message.headers() {
        let name = header.name();
        if (name.eq_ignore_ascii_case("Delivered-To") || name.eq_ignore_ascii_case("X-Original-To"))
            && let Some(text) = header.value().as_text()
        {
            email.recipients.push(bare_id(text).to_ascii_lowercase());
        }
    }
    email.text = message.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    email.html = message.body_html(0).filter(|_| message.html_body_count() > 0).map(|h| h.into_owned());
    for part in message.attachments() {
        let data = match &part.body {
            PartType::Binary(data) | PartType::InlineBinary(data) => data.to_vec(),
            PartType::Text(text) | PartType::Html(text) => text.as_bytes().to_vec(),
            PartType::Message(nested) => nested.raw_message().to_vec(),
            PartType::Multipart(_) => continue,
        };
        let content_type = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{sub}", ct.ctype()),
                None => ct.ctype().to_owned(),
            })
            .unwrap_or_else(|| "application/octet-stream".into());
        let file_name = part
            .attachment_name()
            .map(str::to_owned)
            .or_else(|| part.content_id().map(bare_id))
            .unwrap_or_else(|| "attachment".into());
        email.files.push(Upload { file_name, content_type, data: Bytes::from(data) });
    }
    Ok(email)
}

/// Decodes a field of Inbound Parse's parsed mode by the charset its `charsets` field names
/// (UTF-8 when it names none or one mail-parser does not know).
fn decode_field(bytes: &[u8], charset: Option<&str>) -> String {
    match charset.and_then(|c| mail_parser::decoders::charsets::map::charset_decoder(c.as_bytes())) {
        Some(decode) => decode(bytes),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// A multipart/form-data body as (name, bytes) fields and file parts.
async fn form_parts(content_type: &str, body: Vec<u8>) -> Result<(Vec<(String, Bytes)>, Vec<(String, Upload)>)> {
    let malformed = |e: multer::Error| Error::invalid("body", format!("is not a valid multipart form: {e}"));
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| Error::invalid("content-type", "must be multipart/form-data with a boundary"))?;
    let stream = tokio_stream::once(Ok::<_, std::convert::Infallible>(Bytes::from(body)));
    let mut form = multer::Multipart::new(stream, boundary);
    let (mut fields, mut files) = (Vec::new(), Vec::new());
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        match field.file_name().map(str::to_owned) {
            Some(file_name) => {
                let content_type = field.content_type().map(|m| m.to_string()).unwrap_or_default();
                let data = field.bytes().await.map_err(malformed)?;
                files.push((name, Upload { file_name, content_type, data }));
            }
            None => fields.push((name, field.bytes().await.map_err(malformed)?)),
        }
    }
    Ok((fields, files))
}

/// Inbound Parse's parsed mode: the original headers (parsed by mail-parser, so encoded words
/// and ids read as in a raw message), the text and HTML in the charsets it names, the envelope's
/// recipients and the attachment files.
fn parse_sendgrid_fields(fields: &[(String, Bytes)], files: Vec<(String, Upload)>) -> Result<ParsedEmail> {
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_ref());
    let charsets: serde_json::Map<String, serde_json::Value> =
        field("charsets").and_then(|c| serde_json::from_slice(c).ok()).unwrap_or_default();
    let charset = |name: &str| charsets.get(name).and_then(|c| c.as_str());
    let text_field = |name: &str| field(name).map(|bytes| decode_field(bytes, charset(name)));

    let mut headers = field("headers").map(<[u8]>::to_vec).unwrap_or_default();
    if headers.iter().all(u8::is_ascii_whitespace) {
        // No original headers: build the few that matter from the fields.
        for name in ["From", "To", "Cc", "Subject"] {
            if let Some(value) = text_field(&name.to_ascii_lowercase()) {
                headers.extend_from_slice(format!("{name}: {}\r\n", value.replace(['\r', '\n'], " ")).as_bytes());
            }
        }
    }
    while headers.ends_with(b"\n") || headers.ends_with(b"\r") {
        headers.pop();
    }
    headers.extend_from_slice(b"\r\n\r\n");
    let mut email = parse_mime(&headers).map_err(|_| Error::invalid("headers", "are not RFC 5322 headers"))?;
    if email.subject.is_empty() {
        email.subject = text_field("subject").unwrap_or_default();
    }
    if let Some(envelope) = field("envelope").and_then(|e| serde_json::from_slice::<serde_json::Value>(e).ok()) {
        let to = envelope["to"].as_array().cloned().unwrap_or_default();
        email.recipients.extend(to.iter().filter_map(|t| t.as_str()).map(|t| t.trim().to_ascii_lowercase()));
        if email.from_address.is_none() {
            email.from_address = envelope["from"].as_str().map(str::to_owned);
        }
    }
    email.html = text_field("html").filter(|h| !h.trim().is_empty());
    email.text = text_field("text").filter(|t| !t.trim().is_empty()).unwrap_or_default();
    if email.text.is_empty()
        && let Some(html) = &email.html
    {
        email.text = mail_parser::decoders::html::html_to_text(html);
    }
    email.files = files.into_iter().map(|(_, upload)| upload).collect();
    Ok(email)
}

impl Omega {
    /// Issues business `business_id` a new inbound-email token (the previous one stops working).
    pub async fn rotate_inbound_email_token(&self, caller: &Caller, business_id: i64) -> Result<IssuedInboundToken> {
        self.directory.business(caller, business_id).await?;
        let secret: String = rand::rng().sample_iter(Alphanumeric).take(TOKEN_SECRET_LEN).map(char::from).collect();
        let token = format!("{TOKEN_TAG}{secret}");
        let created_at = now();
        db::set_token(self.store.writer(), business_id, token_prefix(&token), &sha256_hex(&token), created_at).await?;
        tracing::info!(business_id, "inbound email token rotated");
        Ok(IssuedInboundToken { business_id, token, created_at })
    }

    /// The business whose token this is; anything else is the same PERMISSION_DENIED.
    async fn inbound_business(&self, token: &str) -> Result<i64> {
        let refused = || Error::PermissionDenied("the inbound email token is not valid".into());
        if token.len() != TOKEN_TAG.len() + TOKEN_SECRET_LEN
            || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(refused());
        }
        let presented = Sha256::digest(token.as_bytes());
        let mut matched = None;
        // Every candidate is compared, so timing does not depend on which one matches.
        for candidate in db::tokens_by_prefix(self.store.connection(), token_prefix(token)).await? {
            let stored = hex::decode(&candidate.token_hash).unwrap_or_default();
            if bool::from(stored.as_slice().ct_eq(&presented[..])) {
                matched = Some(candidate.business_id);
            }
        }
        matched.ok_or_else(refused)
    }

    /// An email as its RFC 5322 message: the body itself (a relay's post: Postfix piping to
    /// curl, any `message/rfc822`), or the message inside the wrapper a mail service posts it in
    /// — Mailgun's `body-mime` form field (a route forwarding to a URL ending in `mime`),
    /// Postmark's `RawEmail` JSON field (inbound with raw email content).
    pub async fn receive_raw_email(&self, token: &str, content_type: &str, body: Vec<u8>) -> Result<InboundOutcome> {
        let business_id = self.inbound_business(token).await?;
        check_size(&body)?;
        let media_type = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let raw = match media_type.as_str() {
            "multipart/form-data" => {
                let (fields, _) = form_parts(content_type, body).await?;
                let field = fields.into_iter().find(|(name, _)| name == "body-mime" || name == "email");
                field.map(|(_, raw)| raw).ok_or_else(|| Error::invalid("body-mime", "is required in a form"))?
            }
            "application/x-www-form-urlencoded" => {
                let field = form_urlencoded::parse(&body).find(|(name, _)| name == "body-mime" || name == "email");
                let raw = field.map(|(_, raw)| raw.into_owned().into_bytes());
                Bytes::from(raw.ok_or_else(|| Error::invalid("body-mime", "is required in a form"))?)
            }
            "application/json" => {
                let json: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| Error::invalid("body", format!("is not JSON: {e}")))?;
                let raw = json["RawEmail"].as_str().map(|raw| raw.as_bytes().to_vec());
                Bytes::from(raw.ok_or_else(|| Error::invalid("RawEmail", "is required in JSON"))?)
            }
            _ => Bytes::from(body),
        };
        let email = parse_mime(&raw)?;
        self.store_inbound_email(business_id, email, ("original.eml", "message/rfc822", raw)).await
    }

    /// A SendGrid Inbound Parse post (multipart/form-data): the full MIME message in `email`
    /// (its "raw" mode), else its parsed fields.
    pub async fn receive_sendgrid_inbound(
        &self,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<InboundOutcome> {
        let business_id = self.inbound_business(token).await?;
        check_size(&body)?;
        let (fields, files) = form_parts(content_type, body).await?;
        if let Some((_, raw)) = fields.iter().find(|(name, _)| name == "email") {
            let email = parse_mime(raw).map_err(|_| Error::invalid("email", "is not an RFC 5322 email message"))?;
            let original = ("original.eml", "message/rfc822", raw.clone());
            return self.store_inbound_email(business_id, email, original).await;
        }
        let email = parse_sendgrid_fields(&fields, files)?;
        // Parsed mode carries no message to keep as it came: the full text is kept instead.
        let full = Bytes::from(email.text.clone().into_bytes());
        self.store_inbound_email(business_id, email, ("message.txt", "text/plain", full)).await
    }

    /// The message an email answers, within the business: by the ids it references (Omega's
    /// `Message-ID`s carry a message id; an earlier inbound email is found by its own), then by
    /// a `reply+{message id}@…` recipient.
    async fn thread_of(&self, business_id: i64, email: &ParsedEmail) -> Result<Option<message::Model>> {
        let conn = self.store.connection();
        if !email.references.is_empty() {
            let omega_ids: Vec<String> = email.references.iter().filter_map(|id| omega_id_in(id)).collect();
            if let Some(found) =
                db::email_messages_by_public_ids(conn, business_id, &omega_ids).await?.into_iter().next()
            {
                return Ok(Some(found));
            }
            let provider_ids: Vec<String> = email.references.iter().map(|id| format!("<{id}>")).collect();
            if let Some(found) =
                db::email_messages_by_provider_ids(conn, business_id, &provider_ids).await?.into_iter().next()
            {
                return Ok(Some(found));
            }
        }
        let reply_ids: Vec<String> = email
            .recipients
            .iter()
            .filter(|address| address.starts_with(REPLY_TAG))
            .filter_map(|address| omega_id_in(address))
            .collect();
        Ok(db::email_messages_by_public_ids(conn, business_id, &reply_ids).await?.into_iter().next())
    }

    /// Threads and stores an email: once per `Message-ID` within the business; its attachments
    /// and the full original go into the attachment store first, and are removed again if the
    /// message is not written.
    async fn store_inbound_email(
        &self,
        business_id: i64,
        email: ParsedEmail,
        original: (&str, &str, Bytes),
    ) -> Result<InboundOutcome> {
        let conn = self.store.connection();
        // Without a Message-ID the content identifies a repeat post.
        let provider_id = match &email.message_id {
            Some(id) if id.len() <= 190 => format!("<{id}>"),
            Some(id) => format!("<sha256-{}>", sha256_hex(id)),
            None => format!("<sha256-{}>", hex::encode(Sha256::digest(&original.2))),
        };
        if let Some(existing) =
            messages::by_provider_id(conn, Some(business_id), Some(INBOUND_PROVIDER), &provider_id).await?.pop()
        {
            return Ok(InboundOutcome { message: existing.into(), created: false, skipped: Vec::new() });
        }

        let thread = self.thread_of(business_id, &email).await?;
        let client = match &thread {
            Some(answered) => ClientRef { client_id: Some(answered.client_id), ..Default::default() },
            None => {
                let from = email.from_address.clone().unwrap_or_default();
                if from.trim().is_empty() {
                    return Err(Error::invalid("from", "the email has no sender address"));
                }
                ClientRef {
                    email: from,
                    name: email.from_name.clone().unwrap_or_default().chars().take(200).collect(),
                    ..Default::default()
                }
            }
        };
        let location_id = match &thread {
            Some(answered) => answered.location_id,
            None => {
                let (locations, _) = directory::list_locations(conn, business_id, None, 1_000).await?;
                locations
                    .iter()
                    .find(|l| {
                        l.email_sender
                            .as_deref()
                            .is_some_and(|s| email.recipients.iter().any(|r| r.eq_ignore_ascii_case(s)))
                    })
                    .map(|l| l.id)
            }
        };

        let (files, skipped) = self.store_email_files(business_id, email.files).await?;
        let mut stored_files = files;
        let (name, content_type, data) = original;
        let original_file = NewAttachment {
            storage_key: format!("attachments/{business_id}/{}", uuid::Uuid::new_v4()),
            file_name: name.to_owned(),
            content_type: content_type.to_owned(),
            file_type: "file",
            file_size: data.len() as i64,
            width: None,
            height: None,
        };
        if let Err(err) = self.attachments.files.put(&original_file.storage_key, data).await {
            self.attachments.forget_uploads(&stored_files).await;
            return Err(Error::Unavailable(format!("the attachment store failed: {err}")));
        }
        stored_files.push(original_file);

        let mut content = strip_quoted(&email.text);
        if !skipped.is_empty() {
            content = format!("{content}\n\n[attachments not kept: {}]", skipped.join("; ")).trim().to_owned();
        }
        let content = cut_chars(content.replace('\0', ""), EMAIL_TEXT_MAX_CHARS);
        let subject =
            cut_chars(email.subject.replace(['\0', '\r', '\n'], " ").trim().to_owned(), EMAIL_SUBJECT_MAX_CHARS);
        let html =
            email.html.filter(|h| h.chars().count() <= EMAIL_HTML_MAX_CHARS).unwrap_or_default().replace('\0', "");
        let caller = Caller::without_key(Scope::Business(business_id));
        let stored = self
            .store_message_row(
                &caller,
                IncomingMessage {
                    content,
                    subject,
                    html,
                    status: "received".into(),
                    provider: INBOUND_PROVIDER.into(),
                    provider_message_id: provider_id,
                    location_id,
                    attachments: stored_files.clone(),
                    ..IncomingMessage::new(business_id, Channel::Email, "INBOUND", client)
                },
            )
            .await;
        match stored {
            Ok(stored) => {
                if !stored.created {
                    self.attachments.forget_uploads(&stored_files).await;
                }
                if stored.created {
                    tracing::info!(
                        business_id,
                        message_id = stored.message.public_id,
                        threaded = thread.is_some(),
                        "inbound email stored"
                    );
                }
                Ok(InboundOutcome { message: stored.message.into(), created: stored.created, skipped })
            }
            Err(err) => {
                self.attachments.forget_uploads(&stored_files).await;
                Err(err)
            }
        }
    }

    /// Puts an email's attachments (inline images included) in the attachment store, each
    /// checked alone against the chat upload rules (type, size; at most the per-message count):
    /// one file Omega does not take must not lose the client's email, so it is skipped and named.
    async fn store_email_files(
        &self,
        business_id: i64,
        files: Vec<Upload>,
    ) -> Result<(Vec<NewAttachment>, Vec<String>)> {
        let (mut stored, mut skipped) = (Vec::new(), Vec::new());
        for upload in files {
            let name = upload.file_name.clone();
            if stored.len() >= self.attachments.limits.max_files {
                skipped.push(format!("{name}: more than {} files", self.attachments.limits.max_files));
                continue;
            }
            match self.attachments.store_uploads(business_id, "attachments", vec![upload]).await {
                Ok(mut kept) => stored.append(&mut kept),
                Err(Error::InvalidArgument(violations)) => {
                    skipped.extend(violations.into_iter().map(|v| v.description));
                }
                Err(other) => {
                    self.attachments.forget_uploads(&stored).await;
                    return Err(other);
                }
            }
        }
        Ok((stored, skipped))
    }
}

fn check_size(body: &[u8]) -> Result<()> {
    if body.len() > MAX_INBOUND_BYTES {
        return Err(Error::invalid("body", format!("is larger than {MAX_INBOUND_BYTES} bytes")));
    }
    if body.is_empty() {
        return Err(Error::invalid("body", "is empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_history_is_cut() {
        let text = "Yes, 6pm works.\n\nThanks!\n\nOn Tue, Dec 1, 2026 at 9:00 AM Lotus Yoga <hi@lotus.example>\nwrote:\n> See you at 6pm?\n> Ana";
        assert_eq!(strip_quoted(text), "Yes, 6pm works.\n\nThanks!");
        let outlook = "Sure.\r\n\r\n-----Original Message-----\r\nFrom: Lotus\r\nSent: today";
        assert_eq!(strip_quoted(outlook), "Sure.");
        let interleaved = "> Can you come at 6?\nYes.\n> And bring a mat?\nOf course.";
        assert_eq!(strip_quoted(interleaved), "Yes.\nOf course.");
        let all_quoted = "> only a quote";
        assert_eq!(strip_quoted(all_quoted), "> only a quote");
        let french = "D'accord.\n\nLe mar. 1 déc. 2026 à 09:00, Lotus <hi@lotus.example> a écrit :\n> Bonjour";
        assert_eq!(strip_quoted(french), "D'accord.");
    }

    #[test]
    fn omega_ids_are_found_in_ids_and_reply_addresses() {
        let id = "0190f1d2-3c4b-7a5e-8f60-123456789abc";
        assert_eq!(omega_id_in(&format!("{id}@omega")).as_deref(), Some(id));
        assert_eq!(omega_id_in(&format!("reply+{id}@in.lotus.example")).as_deref(), Some(id));
        assert_eq!(omega_id_in("CAF=abc@mail.gmail.com"), None);
    }
}
