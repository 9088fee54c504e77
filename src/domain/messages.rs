//! Messages of every channel: queueing through the durable outbox, recording messages sent
//! elsewhere, delivery status updates, normalized ingestion, deliberate retries and search.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Set};
use serde_json::json;

use super::{
    Error, Omega, Result, Violations,
    auth::{Caller, Scope},
    conversations::{ensure_conversation, reopen},
    pagination::{self, Page, PageRequest},
    values::{self, Channel, ConversationStatus, DeliveryStatus, Direction, SenderType, now},
    views::{AttemptView, MessageView},
};
use crate::store::{
    StoreError, attempts,
    conversations::{self as conversations_db, AssigneeFilter, MessageNote},
    directory,
    entity::{client, conversation, location, message},
    events::{self, NewEvent},
    messages::{self as db, RetryFilter, StatusUpdate},
    outbox, search,
};

/// Caps on stored text (README, "Limits"): Twilio's 1,600 characters for an SMS body; for email
/// RFC 5322's 998-character line for the subject, and text and HTML bodies far above real mail
/// yet small enough that a request stays under the 4 MiB message limit. Chat follows Chatwoot.
const SMS_MAX_CHARS: usize = 1_600;
pub const EMAIL_SUBJECT_MAX_CHARS: usize = 998;
pub const EMAIL_TEXT_MAX_CHARS: usize = 200_000;
pub const EMAIL_HTML_MAX_CHARS: usize = 1_000_000;
const MAX_MEDIA: usize = 10;
const MAX_BULK: usize = 1_000;
const PREVIEW_CHARS: usize = 160;

/// A queue call: one message per client, on SMS or email.
pub struct QueueInput {
    pub channel: Channel,
    pub business_id: i64,
    pub client_ids: Vec<i64>,
    pub content: String,
    pub subject: String,
    pub html: String,
    pub media_urls: Vec<String>,
    /// Attachments the business holds, sent with an email (each message refers to the same
    /// stored files).
    pub attachment_ids: Vec<i64>,
    pub location_id: Option<i64>,
    pub sent_by: Option<i64>,
    pub idempotency_key: String,
    /// The request id of the call, shared by all its messages.
    pub request_id: String,
}

pub struct Queued {
    pub request_id: String,
    pub messages: Vec<MessageView>,
}

/// Who a message belongs to, as an ingesting service knows it.
#[derive(Default)]
pub struct ClientRef {
    pub client_id: Option<i64>,
    pub phone: String,
    pub email: String,
    pub external_ref: String,
    pub name: String,
}

/// A checked [`ClientRef`]: the client's id, or the identity to find or create it by.
enum ClientKey {
    Id(i64),
    Identity(ClientIdentity),
}

struct ClientIdentity {
    phone: Option<String>,
    email: Option<String>,
    external_ref: Option<String>,
    name: Option<String>,
}

impl ClientIdentity {
    /// Which of the clients matching some identity is the one: the external reference's, then
    /// the phone's, then the oldest.
    fn preferred<T>(&self, found: Vec<T>, client: impl Fn(&T) -> &client::Model) -> Option<T> {
        let position = found
            .iter()
            .position(|t| self.external_ref.is_some() && client(t).external_ref == self.external_ref)
            .or_else(|| found.iter().position(|t| self.phone.is_some() && client(t).phone_e164 == self.phone))
            .or((!found.is_empty()).then_some(0))?;
        found.into_iter().nth(position)
    }
}

impl ClientKey {
    /// The identity to find the client by when it is named only by the address `channel`
    /// writes from or to (its phone for SMS and calls, its email for email), which is unique
    /// in a business.
    fn unique_address(&self, channel: Channel) -> Option<db::UniqueIdentity<'_>> {
        let ClientKey::Identity(ClientIdentity { phone, email, external_ref: None, .. }) = self else {
            return None;
        };
        match (channel, phone, email) {
            (Channel::Sms | Channel::Voice, Some(phone), None) => Some(db::UniqueIdentity::Phone(phone)),
            (Channel::Email, None, Some(email)) => Some(db::UniqueIdentity::Email(email)),
            _ => None,
        }
    }
}

impl ClientRef {
    /// Checks the reference; a phone without a country code takes the business's.
    fn checked(&self, calling_code: &str) -> Result<ClientKey> {
        if let Some(id) = self.client_id {
            return Ok(ClientKey::Id(id));
        }
        let mut v = Violations::default();
        let phone = (!self.phone.trim().is_empty())
            .then(|| v.check(values::phone("client.phone", &self.phone, calling_code)))
            .flatten();
        let email =
            (!self.email.trim().is_empty()).then(|| v.check(values::email("client.email", &self.email))).flatten();
        let external_ref = v.check(values::optional_text("client.external_ref", &self.external_ref, 200)).flatten();
        let name = v.check(values::optional_text("client.name", &self.name, 200)).flatten();
        if phone.is_none() && email.is_none() && external_ref.is_none() {
            v.add("client", "give client_id, phone, email or external_ref");
        }
        v.finish()?;
        Ok(ClientKey::Identity(ClientIdentity { phone, email, external_ref, name }))
    }
}

/// A message to store as it is (recorded or ingested; nothing is sent).
pub struct IncomingMessage {
    pub business_id: i64,
    pub channel: Channel,
    pub direction: String,
    pub client: ClientRef,
    pub content: String,
    pub subject: String,
    pub html: String,
    pub media_urls: Vec<String>,
    pub status: String,
    pub provider: String,
    pub provider_message_id: String,
    pub idempotency_key: String,
    pub occurred_at: String,
    pub location_id: Option<i64>,
    pub sent_by: Option<i64>,
    pub request_id: String,
    /// Files already in the attachment store, recorded on the message with it.
    pub attachments: Vec<crate::store::attachments::NewAttachment>,
}

impl IncomingMessage {
    /// A message of `business_id` on `channel` with `client`, going `direction`, with nothing
    /// else said yet: callers fill in what they know (`..IncomingMessage::new(..)`).
    pub fn new(business_id: i64, channel: Channel, direction: &str, client: ClientRef) -> Self {
        Self {
            business_id,
            channel,
            direction: direction.to_owned(),
            client,
            content: String::new(),
            subject: String::new(),
            html: String::new(),
            media_urls: Vec::new(),
            status: String::new(),
            provider: String::new(),
            provider_message_id: String::new(),
            idempotency_key: String::new(),
            occurred_at: String::new(),
            location_id: None,
            sent_by: None,
            request_id: String::new(),
            attachments: Vec::new(),
        }
    }
}

/// A delivery status reported for a message, by its id or the provider's.
pub struct StatusReport {
    pub message_id: String,
    pub provider_message_id: String,
    pub status: String,
    pub error_code: String,
    pub error_message: String,
}

/// Which FAILED messages a retry call re-enqueues.
pub struct RetrySelection {
    pub public_ids: Vec<String>,
    pub request_id: String,
    pub business_id: Option<i64>,
    pub since: String,
    pub until: String,
    pub limit: u32,
}

pub struct Stored {
    pub message: MessageView,
    pub created: bool,
}

/// [`Stored`] as the domain's own callers use it: the row itself.
pub(super) struct StoredRow {
    pub(super) message: message::Model,
    pub(super) created: bool,
}

pub struct StatusOutcome {
    pub message: MessageView,
    pub applied: bool,
}

pub struct SearchHit {
    pub message: MessageView,
    pub rank: f64,
    pub highlight: String,
}

/// Which sender a queued message goes out from, and the key its pace is kept under.
struct Sender {
    location_id: i64,
    from: String,
    key: String,
}

fn preview(content: &str) -> String {
    content.chars().take(PREVIEW_CHARS).collect()
}

fn validate_media(v: &mut Violations, urls: &[String]) -> Vec<String> {
    if urls.len() > MAX_MEDIA {
        v.add("media_urls", format!("at most {MAX_MEDIA} media per message"));
    }
    let mut out = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let url = url.trim();
        let ok = (url.starts_with("https://") || url.starts_with("http://"))
            && url.len() > 10
            && !url.contains(char::is_whitespace);
        if ok {
            out.push(url.to_owned());
        } else {
            v.add(format!("media_urls[{i}]"), "must be a public http(s) URL");
        }
    }
    out
}

/// The sender a location gives a channel: its messaging service or first number for SMS, its
/// email sender for email.
fn sender_of(channel: Channel, location: &location::Model, numbers: &[(i64, String)]) -> Option<Sender> {
    let from = match channel {
        Channel::Sms => location
            .messaging_service_sid
            .clone()
            .or_else(|| numbers.iter().find(|(id, _)| *id == location.id).map(|(_, n)| n.clone())),
        Channel::Email => location.email_sender.clone(),
        _ => None,
    }?;
    let key = sender_key(channel, &from);
    Some(Sender { location_id: location.id, from, key })
}

/// The key a sender's pace is kept under ("sms:+1415…", "sms:MG…", "email:hi@…").
pub(crate) fn sender_key(channel: Channel, from: &str) -> String {
    format!("{}:{from}", channel.as_str().to_ascii_lowercase())
}

impl Omega {
    async fn choose_sender(&self, business_id: i64, channel: Channel, location_id: Option<i64>) -> Result<Sender> {
        let conn = self.store.connection();
        let locations = match location_id {
            Some(id) => vec![
                directory::location(conn, business_id, id)
                    .await?
                    .ok_or_else(|| Error::invalid("location_id", format!("no location {id} in this business")))?,
            ],
            None => directory::list_locations(conn, business_id, None, 1_000).await?.0,
        };
        let ids: Vec<i64> = locations.iter().map(|l| l.id).collect();
        let numbers = directory::location_numbers(conn, &ids).await?;
        let what = if channel == Channel::Sms { "a phone number or messaging service" } else { "an email sender" };
        locations.iter().find_map(|l| sender_of(channel, l, &numbers)).ok_or_else(|| match location_id {
            Some(id) => {
                Error::FailedPrecondition(format!("location {id} has no {} sender: give it {what}", channel.as_str()))
            }
            None => Error::FailedPrecondition(format!(
                "the business has no {} sender: give a location {what}",
                channel.as_str()
            )),
        })
    }

    /// The summary (`attachments` JSON) of the business's attachments an email sends, or a 422
    /// naming the id that is not one of them.
    async fn attachments_to_send(&self, business_id: i64, ids: &[i64]) -> Result<Option<String>> {
        if ids.is_empty() {
            return Ok(None);
        }
        let conn = self.store.connection();
        let mut summaries = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let (row, _) = crate::store::attachments::with_message(conn, business_id, *id).await?.ok_or_else(|| {
                Error::invalid(format!("attachment_ids[{i}]"), format!("no attachment {id} in this business"))
            })?;
            summaries.push(crate::store::attachments::Summary::from(row));
        }
        Ok(Some(serde_json::to_string(&summaries).expect("summaries serialize")))
    }

    /// Stores one QUEUED message per client and its delivery job, all in one transaction, and
    /// wakes the dispatcher. A repeated idempotency key answers the first call's messages.
    pub async fn queue_messages(&self, caller: &Caller, input: QueueInput) -> Result<Queued> {
        let mut v = Violations::default();
        let mut client_ids = Vec::new();
        for id in &input.client_ids {
            if !client_ids.contains(id) {
                client_ids.push(*id);
            }
        }
        if client_ids.is_empty() {
            v.add("client_id", "is required: give client_id or client_ids");
        }
        if client_ids.len() > MAX_BULK {
            v.add("client_ids", format!("at most {MAX_BULK} clients per call"));
        }
        let media = validate_media(&mut v, &input.media_urls);
        let (content, subject, html) = match input.channel {
            Channel::Sms => {
                let content = input.content.trim().to_owned();
                if content.chars().count() > SMS_MAX_CHARS {
                    v.add("content", format!("must be at most {SMS_MAX_CHARS} characters"));
                }
                if content.is_empty() && media.is_empty() {
                    v.add("content", "is required (or media_urls)");
                }
                (content, None, None)
            }
            _ => {
                let subject = v.check(values::required_text("subject", &input.subject, EMAIL_SUBJECT_MAX_CHARS));
                let content =
                    v.check(values::required_text("content", &input.content, EMAIL_TEXT_MAX_CHARS)).unwrap_or_default();
                let html = v.check(values::optional_text("html", &input.html, EMAIL_HTML_MAX_CHARS)).flatten();
                if !media.is_empty() {
                    v.add("media_urls", "email attachments are given as attachment_ids");
                }
                if input.attachment_ids.len() > self.attachments.limits.max_files {
                    v.add("attachment_ids", format!("at most {} attachments", self.attachments.limits.max_files));
                }
                (content, subject, html)
            }
        };
        let key = v.check(values::optional_text("idempotency_key", &input.idempotency_key, 100)).flatten();
        v.finish()?;
        self.directory.business(caller, input.business_id).await?;
        let business_id = input.business_id;
        let conn = self.store.connection();

        let keys: Vec<String> = match &key {
            Some(key) => client_ids.iter().map(|c| format!("{key}#{c}")).collect(),
            None => Vec::new(),
        };
        let earlier = db::by_idempotency_keys(conn, business_id, &keys).await?;
        if !earlier.is_empty() {
            let request_id = earlier[0].request_id.clone().unwrap_or_default();
            return Ok(Queued { request_id, messages: earlier.into_iter().map(MessageView::from).collect() });
        }

        let mut clients: Vec<client::Model> = Vec::with_capacity(client_ids.len());
        let mut problems = Vec::new();
        for id in &client_ids {
            match directory::client(conn, business_id, *id).await? {
                None => return Err(Error::NotFound(format!("client {id}"))),
                Some(client) => {
                    match input.channel {
                        Channel::Sms if client.phone_e164.is_none() => {
                            problems.push(format!("client {id} has no phone number"))
                        }
                        Channel::Sms if !client.sms_consent => problems.push(format!(
                            "client {id} has not agreed to SMS (sms_consent is off, or they replied STOP)"
                        )),
                        Channel::Email if client.email.is_none() => {
                            problems.push(format!("client {id} has no email address"))
                        }
                        _ => {}
                    }
                    clients.push(client);
                }
            }
        }
        if !problems.is_empty() {
            return Err(Error::FailedPrecondition(format!("nothing was queued: {}", problems.join("; "))));
        }
        let sender = self.choose_sender(business_id, input.channel, input.location_id).await?;
        let attachments = self.attachments_to_send(business_id, &input.attachment_ids).await?;
        if let Some(staff_id) = input.sent_by {
            self.directory.active_staff(business_id, "sent_by", staff_id).await?;
        }

        let now = now();
        let media_json = (!media.is_empty()).then(|| json!(media).to_string());
        let txn = self.store.begin().await?;
        let mut messages = Vec::with_capacity(clients.len());
        for (i, client) in clients.iter().enumerate() {
            let (conversation, _) =
                ensure_conversation(&txn, Some(caller), business_id, client.id, Some(sender.location_id), now).await?;
            let to = match input.channel {
                Channel::Sms => client.phone_e164.clone(),
                _ => client.email.clone(),
            };
            let message = db::insert_message(
                &txn,
                message::ActiveModel {
                    subject: Set(subject.clone()),
                    html: Set(html.clone()),
                    media: Set(media_json.clone()),
                    request_id: Set(Some(input.request_id.clone())),
                    idempotency_key: Set(keys.get(i).cloned()),
                    location_id: Set(Some(sender.location_id)),
                    from_address: Set(Some(sender.from.clone())),
                    to_address: Set(to),
                    channel: Set(input.channel),
                    direction: Set(Direction::Outbound),
                    sender_type: Set(if input.sent_by.is_some() { SenderType::Staff } else { SenderType::System }),
                    status: Set(DeliveryStatus::Queued),
                    ..db::new_message(business_id, conversation.id, client.id, input.sent_by, content.clone())
                },
                now,
            )
            .await
            .map_err(|err| match err {
                StoreError::UniqueViolation(_) => {
                    Error::Conflict("a call with this idempotency_key is in progress; retry".into())
                }
                other => other.into(),
            })?;
            let mut message = message;
            if let Some(summary) = &attachments {
                crate::store::attachments::set_summary(&txn, message.id, summary).await?;
                message.attachments = Some(summary.clone());
            }
            outbox::insert_job(&txn, &message, &sender.key, now).await?;
            let text = if content.is_empty() { "(media)" } else { &content };
            let note = MessageNote {
                conversation_id: conversation.id,
                channel: input.channel,
                preview: &preview(text),
                direction: Direction::Outbound,
                at: now,
            };
            conversations_db::note_message_in_conversation(&txn, &note).await?;
            let event = NewEvent {
                business_id,
                conversation_id: Some(conversation.id),
                kind: "message.queued",
                actor_key_id: caller.actor_key(),
                actor_staff_id: input.sent_by,
                data: json!({ "message_id": message.public_id, "channel": message.channel, "request_id": input.request_id }),
            };
            events::append_event(&txn, event, now).await?;
            messages.push(message);
        }
        txn.commit().await.map_err(StoreError::from)?;
        self.store.wake_event_readers(Some(business_id));
        self.delivery_wakeup.notify_waiters();
        Ok(Queued { request_id: input.request_id, messages: messages.into_iter().map(MessageView::from).collect() })
    }

    /// The client an ingested message belongs to, if it exists already.
    async fn find_client(
        &self,
        conn: &impl ConnectionTrait,
        business: i64,
        key: &ClientKey,
    ) -> Result<Option<client::Model>> {
        let identity = match key {
            ClientKey::Id(id) => {
                return directory::client(conn, business, *id)
                    .await?
                    .map(Some)
                    .ok_or_else(|| Error::NotFound(format!("client {id}")));
            }
            ClientKey::Identity(identity) => identity,
        };
        let ClientIdentity { phone, email, external_ref, .. } = identity;
        let found =
            directory::clients_by_identity(conn, business, external_ref.as_deref(), phone.as_deref(), email.as_deref())
                .await?;
        Ok(identity.preferred(found, |c| c))
    }

    /// The client an ingested message belongs to and its conversation, when both exist (one
    /// read); `None` sends the message down the path that creates what is missing.
    async fn find_conversation(
        &self,
        conn: &impl ConnectionTrait,
        business: i64,
        key: &ClientKey,
    ) -> Result<Option<(client::Model, conversation::Model)>> {
        let (id, identity) = match key {
            ClientKey::Id(id) => (Some(*id), None),
            ClientKey::Identity(identity) => (None, Some(identity)),
        };
        let field = |f: fn(&ClientIdentity) -> &Option<String>| identity.and_then(|i| f(i).as_deref());
        let rows = directory::clients_with_conversation(
            conn,
            business,
            id,
            field(|i| &i.external_ref),
            field(|i| &i.phone),
            field(|i| &i.email),
        )
        .await?;
        let row = match identity {
            Some(identity) => identity.preferred(rows, |(c, _)| c),
            None => rows.into_iter().next(),
        };
        Ok(row.and_then(|(client, conversation)| Some((client, conversation?))))
    }

    /// The client a message names, found or created in `txn` — so that a message refused later
    /// in the same transaction leaves no new client behind.
    async fn resolve_client(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        business: i64,
        key: &ClientKey,
    ) -> Result<client::Model> {
        use sea_orm::TransactionTrait;
        for attempt in 0..2 {
            if let Some(client) = self.find_client(txn, business, key).await? {
                return Ok(client);
            }
            let ClientKey::Identity(identity) = key else { unreachable!("a client id is found or NOT_FOUND") };
            let fields = directory::ClientFields {
                external_ref: identity.external_ref.clone(),
                name: identity.name.clone(),
                phone_e164: identity.phone.clone(),
                email: identity.email.clone(),
                sms_consent: None,
            };
            // A savepoint: a client created concurrently by another message must not abort the
            // message's own transaction (PostgreSQL would refuse every later statement).
            let savepoint = txn.begin().await.map_err(StoreError::from)?;
            match directory::insert_client(&savepoint, business, fields, now()).await {
                Ok(client) => {
                    savepoint.commit().await.map_err(StoreError::from)?;
                    return Ok(client);
                }
                Err(StoreError::UniqueViolation(_)) if attempt == 0 => {
                    savepoint.rollback().await.map_err(StoreError::from)?;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(Error::Conflict("the client was created concurrently; retry".into()))
    }

    /// Stores a message as given (recorded or ingested); nothing is sent. Idempotent on the
    /// provider's id and on the caller's idempotency key. An inbound message bumps the unread
    /// count and reopens a resolved or snoozed conversation.
    pub async fn store_message(&self, caller: &Caller, input: IncomingMessage) -> Result<Stored> {
        let StoredRow { message, created } = self.store_message_row(caller, input).await?;
        Ok(Stored { message: message.into(), created })
    }

    /// [`Self::store_message`], answering the stored row.
    pub(super) async fn store_message_row(&self, caller: &Caller, input: IncomingMessage) -> Result<StoredRow> {
        let mut v = Violations::default();
        if input.channel == Channel::Note {
            v.add("channel", "notes are added with the note endpoint");
        }
        let direction = match input.direction.trim().to_ascii_uppercase().as_str() {
            "INBOUND" => Some(Direction::Inbound),
            "OUTBOUND" => Some(Direction::Outbound),
            _ => {
                v.add("direction", "must be INBOUND or OUTBOUND");
                None
            }
        };
        let media = validate_media(&mut v, &input.media_urls);
        let content = input.content.trim().to_owned();
        if content.is_empty() && media.is_empty() && input.attachments.is_empty() && input.channel != Channel::Voice {
            v.add("content", "is required (or media_urls)");
        }
        let max_content = match input.channel {
            Channel::Sms => SMS_MAX_CHARS,
            Channel::Chat => crate::domain::chat::MAX_CHAT_CONTENT,
            _ => EMAIL_TEXT_MAX_CHARS,
        };
        v.check(values::check_text("content", &content, max_content));
        let subject = v.check(values::optional_text("subject", &input.subject, EMAIL_SUBJECT_MAX_CHARS)).flatten();
        let html = v.check(values::optional_text("html", &input.html, EMAIL_HTML_MAX_CHARS)).flatten();
        let status = match (input.status.trim().is_empty(), direction) {
            (true, Some(Direction::Inbound)) => Some(DeliveryStatus::Received),
            (true, _) => Some(DeliveryStatus::Sent),
            (false, _) => v.check(DeliveryStatus::parse("status", &input.status)),
        };
        let occurred_at = v.check(values::parse_optional_time("occurred_at", &input.occurred_at)).flatten();
        let provider =
            v.check(values::optional_text("provider", &input.provider, 32)).flatten().map(|p| p.to_ascii_lowercase());
        let provider_id =
            v.check(values::optional_text("provider_message_id", &input.provider_message_id, 200)).flatten();
        let key = v.check(values::optional_text("idempotency_key", &input.idempotency_key, 100)).flatten();
        v.finish()?;
        let (direction, status) = (direction.unwrap_or(Direction::Inbound), status.unwrap_or(DeliveryStatus::Received));
        let business = self.directory.business_profile(caller, input.business_id).await?;
        let client_key = input.client.checked(&business.default_calling_code)?;
        let business_id = business.id;
        let conn = self.store.connection();
        let stored = |message| Ok(StoredRow { message, created: false });

        // Already stored? (A provider retrying its webhook, a caller retrying its call.) Only this
        // business's messages count: whether another business holds the id must not show. A
        // provider's id with its provider named is unique per business: the insert itself finds
        // the repeat then, without a read first.
        if let (Some(provider_id), None) = (&provider_id, &provider)
            && let Some(existing) = db::by_provider_id(conn, Some(business_id), None, provider_id).await?.pop()
        {
            return stored(existing);
        }
        if let Some(key) = &key
            && let Some(existing) = db::by_idempotency_keys(conn, business_id, std::slice::from_ref(key)).await?.pop()
        {
            return stored(existing);
        }
        if let Some(location_id) = input.location_id
            && directory::location(conn, business_id, location_id).await?.is_none()
        {
            return Err(Error::invalid("location_id", format!("no location {location_id} in this business")));
        }
        if let Some(staff_id) = input.sent_by {
            self.directory.active_staff(business_id, "sent_by", staff_id).await?;
        }
        let now = now();
        let at = occurred_at.unwrap_or(now);
        let text = match (content.is_empty(), input.attachments.is_empty()) {
            (false, _) => content.clone(),
            (true, false) => "(attachment)".to_owned(),
            (true, true) => format!("({})", input.channel.as_str().to_ascii_lowercase()),
        };
        let preview = preview(&text);
        // The row for the client's conversation, addressed from or to the client's phone or email.
        let row = |conversation_id: i64, client_id: i64, phone: Option<&str>, email: Option<&str>| {
            let (phone, email) = (phone.map(str::to_owned), email.map(str::to_owned));
            let (from, to) = match (input.channel, direction) {
                (Channel::Sms, Direction::Inbound) => (phone, None),
                (Channel::Sms, _) => (None, phone),
                (Channel::Email, Direction::Inbound) => (email, None),
                (Channel::Email, _) => (None, email),
                (Channel::Voice, Direction::Inbound) => (phone, None),
                _ => (None, None),
            };
            message::ActiveModel {
                subject: Set(subject.clone()),
                html: Set(html.clone()),
                media: Set((!media.is_empty()).then(|| json!(media).to_string())),
                request_id: Set(Some(input.request_id.clone())),
                idempotency_key: Set(key.clone()),
                provider: Set(provider.clone()),
                provider_message_id: Set(provider_id.clone()),
                location_id: Set(input.location_id),
                from_address: Set(from),
                to_address: Set(to),
                sent_at: Set(
                    (direction == Direction::Outbound && status.rank() >= DeliveryStatus::Sent.rank()).then_some(at)
                ),
                delivered_at: Set((status == DeliveryStatus::Delivered).then_some(at)),
                created_at: Set(at),
                channel: Set(input.channel),
                direction: Set(direction),
                sender_type: Set(match (direction, input.sent_by) {
                    (Direction::Inbound, _) => SenderType::Client,
                    (_, Some(_)) => SenderType::Staff,
                    _ => SenderType::System,
                }),
                status: Set(status),
                ..db::new_message(business_id, conversation_id, client_id, input.sent_by, content.clone())
            }
        };
        let note =
            |conversation_id| MessageNote { conversation_id, channel: input.channel, preview: &preview, direction, at };
        let event = |conversation_id, public_id: &str| NewEvent {
            business_id,
            conversation_id: Some(conversation_id),
            kind: if direction == Direction::Inbound { "message.received" } else { "message.recorded" },
            actor_key_id: caller.actor_key(),
            actor_staff_id: input.sent_by,
            data: json!({ "message_id": public_id, "channel": input.channel }),
        };
        // The same provider id or key stored concurrently: answer that one.
        let concurrent_twin = || async {
            let existing = match (&provider_id, &key) {
                (Some(id), _) => db::by_provider_id(conn, Some(business_id), provider.as_deref(), id).await?.pop(),
                (None, Some(key)) => db::by_idempotency_keys(conn, business_id, std::slice::from_ref(key)).await?.pop(),
                _ => None,
            };
            existing
                .map(|message| StoredRow { message, created: false })
                .ok_or_else(|| Error::Conflict("the message changed concurrently; retry".into()))
        };

        // The common case, an existing client's existing conversation that the message does not
        // reopen: one write, no transaction to hold open across reads (one statement on
        // PostgreSQL). Anything else, or a conversation resolved meanwhile, takes the transaction.
        if input.attachments.is_empty() {
            let reopening: &[ConversationStatus] = match direction {
                Direction::Inbound => &REOPENED_BY_INBOUND,
                _ => &[],
            };
            // A client named only by the address the message comes from or goes to (an SMS
            // by its phone, an email by its address) is unique in the business: the write finds
            // it and its conversation itself. Otherwise they are read first.
            let written = match client_key.unique_address(input.channel) {
                Some(identity) => {
                    let (phone, email) = identity.addresses();
                    let new = row(0, 0, phone, email);
                    let public_id = new.public_id.try_as_ref().cloned().unwrap_or_default();
                    let (note, event) = (note(0), event(0, &public_id));
                    db::insert_for_client_unless(&self.store, identity, new, &note, reopening, event, now).await
                }
                None => match self.find_conversation(self.store.keyed(), business_id, &client_key).await? {
                    Some((client, conversation)) => {
                        let new =
                            row(conversation.id, client.id, client.phone_e164.as_deref(), client.email.as_deref());
                        let public_id = new.public_id.try_as_ref().cloned().unwrap_or_default();
                        let (note, event) = (note(conversation.id), event(conversation.id, &public_id));
                        db::insert_into_conversation_unless(&self.store, new, &note, reopening, event, now).await
                    }
                    None => Ok(None),
                },
            };
            match written {
                Ok(Some(message)) => {
                    self.store.wake_event_readers(Some(business_id));
                    return Ok(StoredRow { message, created: true });
                }
                Ok(None) => {}
                Err(StoreError::UniqueViolation(_)) => return concurrent_twin().await,
                Err(err) => return Err(err.into()),
            }
        }

        let txn = self.store.begin().await?;
        let client = self.resolve_client(&txn, business_id, &client_key).await?;
        let (conversation, _) =
            ensure_conversation(&txn, Some(caller), business_id, client.id, input.location_id, now).await?;
        let new = row(conversation.id, client.id, client.phone_e164.as_deref(), client.email.as_deref());
        let message = match db::insert_message(&txn, new, now).await {
            Ok(message) => message,
            Err(StoreError::UniqueViolation(_)) => {
                txn.rollback().await.map_err(StoreError::from)?;
                return concurrent_twin().await;
            }
            Err(err) => return Err(err.into()),
        };
        let mut message = message;
        if !input.attachments.is_empty() {
            let summary = crate::store::attachments::record(&txn, &message, &input.attachments, now).await?;
            message.attachments = Some(summary);
        }
        conversations_db::note_message_in_conversation(&txn, &note(conversation.id)).await?;
        if direction == Direction::Inbound {
            reopen_for_inbound(&txn, &conversation, now).await?;
        }
        events::append_event(&txn, event(conversation.id, &message.public_id), now).await?;
        txn.commit().await.map_err(StoreError::from)?;
        self.store.wake_event_readers(Some(business_id));
        Ok(StoredRow { message, created: true })
    }

    /// Applies a delivery status reported for a message (by its id or the provider's), if it is
    /// a step forward; older and duplicate reports change nothing.
    pub async fn update_delivery_status(
        &self,
        caller: &Caller,
        channel: Channel,
        report: StatusReport,
    ) -> Result<StatusOutcome> {
        let StatusReport { message_id, provider_message_id, status, error_code, error_message } = report;
        let (message_id, provider_message_id) = (message_id.as_str(), provider_message_id.as_str());
        let mut v = Violations::default();
        let status = v.check(DeliveryStatus::parse("status", &status));
        if message_id.trim().is_empty() && provider_message_id.trim().is_empty() {
            v.add("message_id", "give message_id or provider_message_id");
        }
        let error_code = v.check(values::optional_text("error_code", &error_code, 32)).flatten();
        let error_message = v.check(values::optional_text("error_message", &error_message, 2_000)).flatten();
        v.finish()?;
        let status = status.unwrap_or(DeliveryStatus::Queued);
        let conn = self.store.connection();
        let found = if message_id.trim().is_empty() {
            // A provider id is unique within a business: a business caller names its own message;
            // a platform caller names one only if a single business has the id.
            let scope = match caller.scope {
                Scope::Business(own) => Some(own),
                Scope::Platform => None,
            };
            let mut candidates: Vec<_> = db::by_provider_id(conn, scope, None, provider_message_id.trim())
                .await?
                .into_iter()
                .filter(|m| m.channel == channel)
                .collect();
            if candidates.len() > 1 {
                return Err(Error::invalid(
                    "provider_message_id",
                    "names messages of several businesses or providers; give message_id",
                ));
            }
            candidates.pop()
        } else {
            db::by_public_id(conn, None, message_id.trim()).await?
        };
        let what = || {
            format!(
                "{} message {}",
                channel.as_str(),
                if message_id.is_empty() { provider_message_id } else { message_id }
            )
        };
        let mut message = found
            .filter(|m| m.channel == channel && caller.require_business(m.business_id).is_ok())
            .ok_or_else(|| Error::NotFound(what()))?;
        for _ in 0..3 {
            let current = message.status;
            if !current.may_become(status) {
                return Ok(StatusOutcome { message: message.into(), applied: false });
            }
            if self.apply_status(&message, status, error_code.clone(), error_message.clone(), None).await? {
                let updated = db::by_id(conn, message.id).await?.unwrap_or(message);
                return Ok(StatusOutcome { message: updated.into(), applied: true });
            }
            // Changed under us: decide again from what is stored now.
            message = db::by_id(conn, message.id).await?.ok_or_else(|| Error::NotFound(what()))?;
        }
        Err(Error::Conflict("the message changed concurrently; retry".into()))
    }

    /// Moves a message to `status` if it still has the status it was read with; appends an
    /// event. Answers whether it moved.
    pub(crate) async fn apply_status(
        &self,
        message: &message::Model,
        status: DeliveryStatus,
        error_code: Option<String>,
        error_message: Option<String>,
        provider: Option<(String, String)>,
    ) -> Result<bool> {
        let txn = self.store.begin().await?;
        let change = StatusMove { status, error_code, error_message, provider };
        if !move_status(&txn, message, message.status, change, now()).await? {
            return Ok(false);
        }
        txn.commit().await.map_err(StoreError::from)?;
        self.store.wake_event_readers(Some(message.business_id));
        Ok(true)
    }

    /// A page of the messages one call created, oldest first: up to `page_size` (1,000, a bulk
    /// call's most, when 0) and never more than a page's budget of text.
    pub async fn messages_by_request(
        &self,
        caller: &Caller,
        request_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<MessageView>> {
        const MOST: u64 = 1_000;
        let request_id = values::required_text("request_id", request_id, 64)?;
        let size = match u64::from(page_size) {
            0 => MOST,
            n if n > MOST => return Err(Error::invalid("page_size", format!("must be between 1 and {MOST}"))),
            n => n,
        };
        let after = PageRequest::<i64>::parse(0, page_token)?.after;
        let scope = match caller.scope {
            super::auth::Scope::Platform => None,
            super::auth::Scope::Business(id) => Some(id),
        };
        let rows = db::by_request(self.store.connection(), scope, &request_id, after, size + 1).await?;
        if rows.is_empty() && after.is_none() {
            return Err(Error::NotFound(format!("messages of request {request_id}")));
        }
        let size = pagination::size_within(&rows, size, pagination::MESSAGE_PAGE_BYTES, pagination::message_bytes);
        let total = rows.len() as u64;
        Ok(Page::from_rows(rows, size, total, |m: &message::Model| m.id).into_views())
    }

    pub async fn message_with_attempts(
        &self,
        caller: &Caller,
        public_id: &str,
    ) -> Result<(MessageView, Vec<AttemptView>)> {
        let conn = self.store.connection();
        let message = db::by_public_id(conn, None, public_id.trim())
            .await?
            .filter(|m| caller.require_business(m.business_id).is_ok())
            .ok_or_else(|| Error::NotFound(format!("message {public_id}")))?;
        let attempts = attempts::of_message(conn, message.id).await?;
        Ok((message.into(), attempts.into_iter().map(AttemptView::from).collect()))
    }

    /// Re-enqueues the FAILED messages a filter selects that were certainly not sent (never
    /// AMBIGUOUS ones, never one a provider accepted), each under a conditional update so that
    /// two concurrent retries cannot both send it; their attempt history stays. Answers the ids
    /// retried and how many matching messages were left alone.
    pub async fn retry_failed(&self, caller: &Caller, selection: RetrySelection) -> Result<(Vec<String>, u64)> {
        let RetrySelection { public_ids, request_id, business_id, since, until, limit } = selection;
        let (request_id, since, until) = (request_id.as_str(), since.as_str(), until.as_str());
        let mut v = Violations::default();
        let since = v.check(values::parse_optional_time("since", since)).flatten();
        let until = v.check(values::parse_optional_time("until", until)).flatten();
        let request_id = v.check(values::optional_text("request_id", request_id, 64)).flatten();
        if limit > 1_000 {
            v.add("limit", "must be at most 1000");
        }
        if public_ids.len() > 1_000 {
            v.add("message_ids", "at most 1000 ids");
        }
        // Message ids are UUIDs: anything longer cannot name one.
        if public_ids.iter().any(|id| id.len() > 64) {
            v.add("message_ids", "each must be a message id (a UUID)");
        }
        let business_id = match (caller.scope, business_id) {
            (super::auth::Scope::Business(own), None) => Some(own),
            (_, Some(id)) => Some(caller.require_business(id)?),
            (super::auth::Scope::Platform, None) => None,
        };
        if public_ids.is_empty() && request_id.is_none() && business_id.is_none() && since.is_none() && until.is_none()
        {
            v.add("message_ids", "give message_ids, request_id, business_id or a time range");
        }
        v.finish()?;
        let filter = RetryFilter {
            business_id,
            public_ids,
            request_id,
            since,
            until,
            limit: u64::from(if limit == 0 { 100 } else { limit }),
        };
        // Only FAILED messages that were certainly not sent are candidates, and the limit
        // applies to them alone: each call takes the oldest still waiting, so calling again
        // until nothing is retried reaches every one.
        let candidates = db::retry_candidates(self.store.connection(), &filter).await?;
        let skipped = db::retry_skipped(self.store.connection(), &filter).await?;
        let (mut retried, mut lost_races) = (Vec::new(), 0);
        for message in candidates {
            let now = now();
            let txn = self.store.begin().await?;
            if !db::requeue_failed(&txn, message.id, now).await? {
                lost_races += 1;
                continue;
            }
            let sender_key = sender_key(message.channel, message.from_address.as_deref().unwrap_or_default());
            outbox::reschedule_job(&txn, &message, &sender_key, now).await?;
            let event = NewEvent {
                business_id: message.business_id,
                conversation_id: Some(message.conversation_id),
                kind: "message.retried",
                actor_key_id: caller.actor_key(),
                actor_staff_id: None,
                data: json!({ "message_id": message.public_id, "attempts_so_far": message.attempt_count }),
            };
            events::append_event(&txn, event, now).await?;
            txn.commit().await.map_err(StoreError::from)?;
            self.store.wake_event_readers(Some(message.business_id));
            retried.push(message.public_id);
        }
        let skipped = skipped + lost_races;
        if !retried.is_empty() {
            self.delivery_wakeup.notify_waiters();
        }
        Ok((retried, skipped))
    }

    /// Full-text search within one conversation: every word must match (whole words), best
    /// matches first (newest first beyond a thousand matches: then the flag is true), with a
    /// highlighted passage.
    pub async fn search_messages(
        &self,
        caller: &Caller,
        ids: super::conversations::ConversationPath,
        q: &str,
        include_notes: bool,
        page: PageRequest<u64>,
    ) -> Result<(Page<SearchHit>, bool)> {
        let terms = search_terms(q)?;
        let conversation = self.conversation_at(caller, ids.business_id, ids.client_id, ids.conversation_id).await?;
        let offset = page.after.unwrap_or(0);
        // Tokens carry the next offset, which a page of this search never puts past the
        // conversation's messages (fewer than 2^31, the conversation-keyed index's bound).
        if offset > MAX_SEARCH_OFFSET {
            return Err(Error::invalid("page_token", "is not a page of this search"));
        }
        let found =
            search::search(self.store.connection(), conversation.id, &terms, include_notes, offset, page.size + 1)
                .await?;
        let hits: Vec<SearchHit> = found
            .hits
            .into_iter()
            .map(|(message, rank, highlight)| SearchHit { message: message.into(), rank, highlight })
            .collect();
        let mut page = Page::from_rows(hits, page.size, found.total, |_| 0_u64);
        if !page.next_page_token.is_empty() {
            // Search pages by rank, which has no stable key: the cursor is the next offset.
            page.next_page_token = super::pagination::token(&(offset + page.items.len() as u64));
        }
        Ok((page, found.capped))
    }

    /// Full-text search across every conversation of a business (internal notes excluded):
    /// every word must match (whole words, as [`Self::search_messages`]), with filters, newest
    /// first, or best first among the newest [`BUSINESS_RANKED_MATCHES`] matches (of the newest
    /// [`BUSINESS_RANKED_WINDOW`] messages when those hold [`BUSINESS_RANKED_ENOUGH`]).
    pub async fn search_business_messages(
        &self,
        caller: &Caller,
        business_id: i64,
        query: &BusinessSearchQuery,
        page: PageRequest<BusinessSearchCursor>,
    ) -> Result<Page<SearchHit>> {
        let mut v = Violations::default();
        let terms = if query.q.chars().count() > SEARCH_QUERY_MAX_CHARS {
            v.add("q", format!("must be at most {SEARCH_QUERY_MAX_CHARS} characters"));
            None
        } else {
            v.check(search_terms(&query.q))
        };
        let channel = v.check(Channel::parse_filter("channel", &query.channel)).flatten();
        if channel == Some(Channel::Note) {
            v.add("channel", "internal notes are not searched: use SMS, EMAIL, VOICE or CHAT");
        }
        let direction = v.check(Direction::parse_filter("direction", &query.direction)).flatten();
        if direction == Some(Direction::Internal) {
            v.add("direction", "internal notes are not searched: use INBOUND or OUTBOUND");
        }
        let since = v.check(values::parse_optional_time("since", &query.since)).flatten();
        let until = v.check(values::parse_optional_time("until", &query.until)).flatten();
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            v.add("until", "must be after since");
        }
        let assignee = match (query.assignee_staff_id, query.unassigned) {
            (Some(_), true) => {
                v.add("unassigned", "cannot be combined with assignee_staff_id");
                AssigneeFilter::Any
            }
            (Some(0), false) => {
                v.add("assignee_staff_id", "must be a staff id");
                AssigneeFilter::Any
            }
            (Some(id), false) => AssigneeFilter::Staff(id),
            (None, true) => AssigneeFilter::Unassigned,
            (None, false) => AssigneeFilter::Any,
        };
        let relevance = match query.order.trim().to_ascii_uppercase().as_str() {
            "" | "NEWEST" => false,
            "RELEVANCE" => true,
            _ => {
                v.add("order", "must be NEWEST or RELEVANCE");
                false
            }
        };
        match (&page.after, relevance) {
            (Some(BusinessSearchCursor::Newest(_)), true) | (Some(BusinessSearchCursor::Relevance { .. }), false) => {
                v.add("page_token", "belongs to a search in another order");
            }
            _ => {}
        }
        v.finish()?;
        let terms = terms.unwrap_or_default();
        self.directory.business(caller, business_id).await?;
        let filter = search::BusinessSearchFilter {
            channel: channel.map(Channel::as_str),
            direction: direction.map(Direction::as_str),
            since,
            until,
            assignee,
        };
        let conn = self.store.connection();
        let (ranked, next): (Vec<(i64, f64)>, Option<BusinessSearchCursor>) = if relevance {
            // The candidates are the newest matches below a bound fixed by the first page, so
            // later pages rank the same set whatever arrives meanwhile.
            let bound = match page.after {
                Some(BusinessSearchCursor::Relevance { bound, .. }) => Some(bound),
                _ => None,
            };
            let recent = search::business_matches(
                conn,
                business_id,
                &terms,
                &filter,
                bound,
                Some(BUSINESS_RANKED_WINDOW),
                BUSINESS_RANKED_MATCHES,
            )
            .await?;
            let docs = if recent.len() as u64 >= BUSINESS_RANKED_ENOUGH {
                recent
            } else {
                search::business_matches(conn, business_id, &terms, &filter, bound, None, BUSINESS_RANKED_MATCHES)
                    .await?
            };
            let bound = bound.or_else(|| docs.first().map(|d| d.id + 1)).unwrap_or(0);
            let mut ranked = search::rank_docs(&terms, &docs);
            if let Some(BusinessSearchCursor::Relevance { score, id, .. }) = page.after {
                let score = f64::from_bits(score);
                ranked.retain(|(i, s)| *s < score || (*s == score && *i < id));
            }
            ranked.truncate(page.size as usize + 1);
            let next = (ranked.len() as u64 > page.size).then(|| {
                let (id, score) = ranked[page.size as usize - 1];
                BusinessSearchCursor::Relevance { bound, score: score.to_bits(), id }
            });
            (ranked, next)
        } else {
            let before = match page.after {
                Some(BusinessSearchCursor::Newest(id)) => Some(id),
                _ => None,
            };
            let docs =
                search::business_matches(conn, business_id, &terms, &filter, before, None, page.size + 1).await?;
            let ranked: Vec<(i64, f64)> = docs.iter().map(|d| (d.id, 0.0)).collect();
            let next = (ranked.len() as u64 > page.size)
                .then(|| BusinessSearchCursor::Newest(ranked[page.size as usize - 1].0));
            (ranked, next)
        };
        let ids: Vec<i64> = ranked.iter().take(page.size as usize).map(|(id, _)| *id).collect();
        let mut highlights = search::highlights_for(conn, &terms, &ids).await?;
        let mut rows = db::by_ids(conn, &ids).await?;
        let mut items = Vec::with_capacity(ids.len());
        for (id, rank) in ranked.into_iter().take(page.size as usize) {
            if let Some(pos) = rows.iter().position(|m| m.id == id) {
                let highlight = highlights.remove(&id).unwrap_or_default();
                items.push(SearchHit { message: rows.swap_remove(pos).into(), rank, highlight });
            }
        }
        Ok(Page {
            total: items.len() as u64,
            items,
            next_page_token: next.map(|c| pagination::token(&c)).unwrap_or_default(),
            total_capped: false,
        })
    }
}

/// Ranked business searches order the newest this many matches,
pub const BUSINESS_RANKED_MATCHES: u64 = 1_000;
/// found among the business's newest this many messages (finding a thousand matches of two
/// words that meet in one message in a hundred would otherwise read a hundred thousand),
pub const BUSINESS_RANKED_WINDOW: u64 = 20_000;
/// unless those hold fewer than this many matches: then among all of them.
pub const BUSINESS_RANKED_ENOUGH: u64 = 20;

/// The furthest offset a conversation search's page token can carry.
const MAX_SEARCH_OFFSET: u64 = i32::MAX as u64;

/// The most characters of a business search's `q`.
const SEARCH_QUERY_MAX_CHARS: usize = 1_000;

/// The words of a search: runs of letters and digits, lower-cased, at most 16 — so quotes,
/// operators and other punctuation are never query syntax. None is a 422 naming `q`.
pub(crate) fn search_terms(q: &str) -> Result<Vec<String>> {
    let terms: Vec<String> =
        q.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase).take(16).collect();
    if terms.is_empty() {
        return Err(Error::invalid("q", "is required: one or more words to find"));
    }
    Ok(terms)
}

/// A business search as asked (validated by [`Omega::search_business_messages`]).
#[derive(Default)]
pub struct BusinessSearchQuery {
    pub q: String,
    pub channel: String,
    pub direction: String,
    pub since: String,
    pub until: String,
    pub assignee_staff_id: Option<i64>,
    pub unassigned: bool,
    pub order: String,
}

/// Where a business search's page stopped: the last message's id (newest first), or the
/// candidates' bound and the last hit's score (as bits, so it compares exactly) and id.
#[derive(serde::Serialize, serde::Deserialize)]
pub enum BusinessSearchCursor {
    Newest(i64),
    Relevance { bound: i64, score: u64, id: i64 },
}

/// A delivery status to move a message to, with what the provider said.
pub(crate) struct StatusMove {
    pub status: DeliveryStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// (provider, its id for the message), when it just accepted it.
    pub provider: Option<(String, String)>,
}

/// Moves a message to a status if it is still `expected` (what the caller decided from), with
/// the timestamps that go with it, and logs the change — in the caller's transaction. Answers
/// whether it moved.
pub(crate) async fn move_status(
    conn: &impl ConnectionTrait,
    message: &message::Model,
    expected: DeliveryStatus,
    change: StatusMove,
    now: DateTime<Utc>,
) -> Result<bool> {
    let StatusMove { status, error_code, error_message, provider } = change;
    let failed = matches!(status, DeliveryStatus::Failed | DeliveryStatus::Undelivered);
    let event_code = error_code.clone();
    let update = StatusUpdate {
        status,
        error_code,
        error_message,
        provider: provider.as_ref().map(|(p, _)| p.clone()),
        provider_message_id: provider.map(|(_, id)| id),
        sent_at: (status.rank() >= DeliveryStatus::Sent.rank() && message.sent_at.is_none() && !failed).then_some(now),
        delivered_at: (status == DeliveryStatus::Delivered).then_some(now),
        failed_at: failed.then_some(now),
    };
    if !db::change_delivery_status(conn, message.id, expected, update, now).await? {
        return Ok(false);
    }
    let event = status_changed_event(message, expected, status, event_code);
    events::append_event(conn, event, now).await?;
    Ok(true)
}

/// The event log's record of a message moving from one delivery status to another.
pub(crate) fn status_changed_event(
    message: &message::Model,
    from: DeliveryStatus,
    to: DeliveryStatus,
    error_code: Option<String>,
) -> NewEvent<'static> {
    NewEvent {
        business_id: message.business_id,
        conversation_id: Some(message.conversation_id),
        kind: "message.status_changed",
        actor_key_id: None,
        actor_staff_id: None,
        data: json!({ "message_id": message.public_id, "from": from, "to": to.as_str(), "error_code": error_code }),
    }
}

/// The statuses an inbound message takes a conversation out of.
const REOPENED_BY_INBOUND: [ConversationStatus; 2] = [ConversationStatus::Resolved, ConversationStatus::Snoozed];

/// An inbound message wakes a resolved or snoozed conversation (conditionally, counted and
/// logged in the caller's transaction).
pub(crate) async fn reopen_for_inbound(
    conn: &impl ConnectionTrait,
    conversation: &conversation::Model,
    now: DateTime<Utc>,
) -> Result<()> {
    if REOPENED_BY_INBOUND.contains(&conversation.status) {
        reopen(conn, conversation, "inbound_message", None, now).await?;
    }
    Ok(())
}
