//! Web chat through the Chatwoot-compatible public API: inboxes, contacts, and their one
//! conversation.
//!
//! The inbox identifier is public (every page embedding the widget carries it), so it proves
//! nothing about who is typing. Each contact create is a new contact inbox with its own source id
//! and pubsub token. An unproven contact sees its own visitor client — a client record made for
//! it, with no phone or email — and what it says about itself (email, phone, identifier) is kept
//! as its claim: a client's phone and email decide where texts and emails go, so a visitor never
//! writes them. A contact joins an existing client's thread only when proven: a valid
//! `identifier_hash` (HMAC-SHA256 of the identifier with the inbox's token, computed by the
//! business's own site) or staff merging the visitor into the client. On an `hmac_mandatory`
//! inbox every call carries the hash of the proven identifier.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use rand::{Rng, distr::Alphanumeric};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::{
    Error, Omega, Result, Violations,
    attachments::Upload,
    auth::{Caller, Scope},
    conversations::{StatusRequest, ensure_conversation},
    messages::{ClientRef, IncomingMessage},
    values::{self, Channel, ConversationStatus, now},
    views::{ClientView, ConversationView, InboxView, MessageView},
};
use crate::store::{
    StoreError,
    chat::{self as db, Claims, NewContact, NewInbox},
    conversations as conversations_db,
    directory::{self, ClientFields},
    entity::{client, contact_inbox, conversation, inbox},
    events::{self, NewEvent},
};

/// A contact as the public API sees it: its inbox, its contact inbox, and the client behind it.
pub struct ChatContact {
    pub(super) inbox: inbox::Model,
    pub(super) contact: contact_inbox::Model,
    pub(super) client: client::Model,
}

/// Which of a conversation's messages a widget asks for (Chatwoot's MessageFinder).
#[derive(Clone, Copy, Debug)]
pub enum MessagePage {
    /// The latest 20.
    Latest,
    /// The 20 before message `id`.
    Before(i64),
    /// Up to 100 after message `id`.
    After(i64),
    /// Up to 1,000 from `after` (inclusive) to `before`.
    Between { after: i64, before: i64 },
}

impl From<MessagePage> for db::MessagePage {
    fn from(page: MessagePage) -> Self {
        match page {
            MessagePage::Latest => db::MessagePage::Latest,
            MessagePage::Before(id) => db::MessagePage::Before(id),
            MessagePage::After(id) => db::MessagePage::After(id),
            MessagePage::Between { after, before } => db::MessagePage::Between { after, before },
        }
    }
}

impl ChatContact {
    /// The business of the contact's inbox.
    pub fn business_id(&self) -> i64 {
        self.inbox.business_id
    }

    pub fn inbox_id(&self) -> i64 {
        self.inbox.id
    }

    /// The inbox's public identifier.
    pub fn inbox_identifier(&self) -> &str {
        &self.inbox.identifier
    }

    /// Whether every call must carry the hash of the proven identifier.
    pub fn hmac_mandatory(&self) -> bool {
        self.inbox.hmac_mandatory
    }

    /// The contact's id within its inbox (Chatwoot's `source_id`).
    pub fn source_id(&self) -> &str {
        &self.contact.source_id
    }

    /// The secret the contact's live connection subscribes with.
    pub fn pubsub_token(&self) -> Option<&str> {
        self.contact.pubsub_token.as_deref()
    }

    /// The client behind the contact.
    pub fn client(&self) -> ClientView {
        self.client.clone().into()
    }

    /// What the contact is shown about itself: the client's record once proven, its own claims
    /// (beside its visitor record's name) until then.
    pub fn shown_identity(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        if self.contact.verified {
            (self.client.external_ref.as_deref(), self.client.email.as_deref(), self.client.phone_e164.as_deref())
        } else {
            (
                self.contact.claimed_identifier.as_deref(),
                self.contact.claimed_email.as_deref(),
                self.contact.claimed_phone.as_deref(),
            )
        }
    }
}

/// What a widget may say about its contact.
#[derive(Default)]
pub struct ContactInput {
    pub identifier: Option<String>,
    pub identifier_hash: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone_number: Option<String>,
    /// Chatwoot's `custom_attributes` as sent (absent or null changes nothing).
    pub custom_attributes: Value,
}

fn random_token(len: usize) -> String {
    rand::rng().sample_iter(Alphanumeric).take(len).map(char::from).collect()
}

/// Whether `given` is HMAC-SHA256(token, identifier) in hex (checked in constant time).
fn hash_valid(token: &str, identifier: &str, given: &str) -> bool {
    let Ok(given) = hex::decode(given.trim()) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(identifier.as_bytes());
    mac.verify_slice(&given).is_ok()
}

/// The external reference of a visitor's own client record (made for one contact create).
fn visitor_ref(source_id: &str) -> String {
    format!("{VISITOR_PREFIX}{source_id}")
}

const VISITOR_PREFIX: &str = "chat:";

/// The longest chat message a contact may send (Chatwoot's own limit).
pub const MAX_CHAT_CONTENT: usize = 150_000;

/// The most JSON text a contact's or a conversation's custom attributes may hold (merged).
pub const MAX_CUSTOM_ATTRIBUTES: usize = 16 * 1024;

/// Custom attributes as a call gives them: absent or null changes nothing; anything but a JSON
/// object is a 422 naming `field`.
pub fn given_attributes(field: &str, value: &Value) -> Result<Option<Map<String, Value>>> {
    match value {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map.clone())),
        _ => Err(Error::invalid(field, "must be a JSON object")),
    }
}

/// `given` merged over the stored attributes (Chatwoot merges them key by key), as JSON text;
/// a 422 naming `field` past the size cap.
fn merged_attributes(field: &str, stored: Option<&str>, given: Map<String, Value>) -> Result<String> {
    let mut merged: Map<String, Value> = stored.and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
    merged.extend(given);
    let text = Value::Object(merged).to_string();
    if text.len() > MAX_CUSTOM_ATTRIBUTES {
        return Err(Error::invalid(field, format!("must be at most {MAX_CUSTOM_ATTRIBUTES} bytes of JSON")));
    }
    Ok(text)
}

/// Whether a client is a web-chat visitor's own record (never proven to be anyone).
pub fn is_visitor(client: &client::Model) -> bool {
    client.external_ref.as_deref().is_some_and(|r| r.starts_with(VISITOR_PREFIX))
}

/// A contact's fields, validated and normalized (empty means absent).
struct ContactFields {
    email: Option<String>,
    phone: Option<String>,
    name: Option<String>,
    identifier: Option<String>,
    custom_attributes: Option<Map<String, Value>>,
}

/// A unique-index violation while binding a contact: someone else holds the value.
fn taken(err: StoreError) -> Error {
    match err {
        StoreError::UniqueViolation(_) => {
            Error::Conflict("another client already has this email, phone or identifier".into())
        }
        other => other.into(),
    }
}

impl Omega {
    /// Validates what a widget says about its contact, with the business's calling code for
    /// phone numbers; every problem is reported at once.
    async fn contact_fields(&self, inbox: &inbox::Model, input: &ContactInput) -> Result<ContactFields> {
        let business = directory::business(self.store.connection(), inbox.business_id)
            .await?
            .ok_or_else(|| Error::NotFound("inbox".into()))?;
        let mut v = Violations::default();
        let given = |value: &Option<String>| value.as_deref().filter(|s| !s.trim().is_empty()).map(str::to_owned);
        let email = given(&input.email).and_then(|e| v.check(values::email("email", &e)));
        let phone = given(&input.phone_number)
            .and_then(|p| v.check(values::phone("phone_number", &p, &business.default_calling_code)));
        let name = v.check(values::optional_text("name", input.name.as_deref().unwrap_or_default(), 200)).flatten();
        let identifier = v
            .check(values::optional_text("identifier", input.identifier.as_deref().unwrap_or_default(), 200))
            .flatten();
        if identifier.as_deref().is_some_and(|i| i.starts_with(VISITOR_PREFIX)) {
            v.add("identifier", format!("must not start with {VISITOR_PREFIX:?}"));
        }
        let custom_attributes = v.check(given_attributes("custom_attributes", &input.custom_attributes)).flatten();
        v.finish()?;
        Ok(ContactFields { email, phone, name, identifier, custom_attributes })
    }

    pub async fn create_inbox(
        &self,
        caller: &Caller,
        business_id: i64,
        name: &str,
        location_id: Option<i64>,
        hmac_mandatory: bool,
    ) -> Result<InboxView> {
        self.directory.business(caller, business_id).await?;
        let name = values::required_text("name", name, 200)?;
        if let Some(location_id) = location_id
            && directory::location(self.store.connection(), business_id, location_id).await?.is_none()
        {
            return Err(Error::invalid("location_id", format!("no location {location_id} in this business")));
        }
        let new = NewInbox {
            business_id,
            location_id,
            name,
            identifier: random_token(24),
            hmac_token: random_token(32),
            hmac_mandatory,
        };
        Ok(db::insert_inbox(self.store.writer(), new, now()).await?.into())
    }

    pub async fn inboxes(&self, caller: &Caller, business_id: i64) -> Result<Vec<InboxView>> {
        self.directory.business(caller, business_id).await?;
        Ok(db::inboxes(self.store.connection(), business_id).await?.into_iter().map(InboxView::from).collect())
    }

    /// An inbox by its public identifier, with the time zone it keeps (its location's, else its
    /// business's).
    pub async fn chat_inbox(&self, identifier: &str) -> Result<(InboxView, String)> {
        let inbox = self.inbox(identifier).await?;
        let conn = self.store.connection();
        let location = match inbox.location_id {
            Some(id) => directory::location(conn, inbox.business_id, id).await?.and_then(|l| l.time_zone),
            None => None,
        };
        let time_zone = match location {
            Some(zone) => zone,
            None => {
                directory::business(conn, inbox.business_id)
                    .await?
                    .ok_or_else(|| Error::NotFound("inbox".into()))?
                    .time_zone
            }
        };
        Ok((inbox.into(), time_zone))
    }

    async fn inbox(&self, identifier: &str) -> Result<inbox::Model> {
        db::inbox_by_identifier(self.store.connection(), identifier)
            .await?
            .ok_or_else(|| Error::NotFound("inbox".into()))
    }

    /// The contact `source_id` of inbox `identifier`, without the per-call proof; a contact of
    /// another inbox is NOT_FOUND, and so is one bound to a client it never proved to be (made
    /// before contacts were proven).
    async fn find_chat_contact(&self, identifier: &str, source_id: &str) -> Result<ChatContact> {
        let inbox = self.inbox(identifier).await?;
        let conn = self.store.connection();
        let contact = db::contact(conn, inbox.id, source_id).await?.ok_or_else(|| Error::NotFound("contact".into()))?;
        let client = directory::client(conn, inbox.business_id, contact.client_id)
            .await?
            .filter(|client| contact.verified || is_visitor(client))
            .ok_or_else(|| Error::NotFound("contact".into()))?;
        Ok(ChatContact { inbox, contact, client })
    }

    /// The contact whose live connection subscribes with `token` (its pubsub token, a secret of
    /// its own); NOT_FOUND for any other.
    pub async fn chat_contact_by_pubsub_token(&self, token: &str) -> Result<ChatContact> {
        let conn = self.store.connection();
        let contact =
            db::contact_by_pubsub_token(conn, token).await?.ok_or_else(|| Error::NotFound("contact".into()))?;
        let inbox = db::inbox(conn, contact.inbox_id).await?.ok_or_else(|| Error::NotFound("contact".into()))?;
        let client = directory::client(conn, inbox.business_id, contact.client_id)
            .await?
            .filter(|client| contact.verified || is_visitor(client))
            .ok_or_else(|| Error::NotFound("contact".into()))?;
        Ok(ChatContact { inbox, contact, client })
    }

    /// The contact `source_id` of inbox `identifier`. On an `hmac_mandatory` inbox the call must
    /// carry `identifier_hash` for the identifier the contact proved (UNAUTHENTICATED otherwise).
    pub async fn chat_contact(
        &self,
        identifier: &str,
        source_id: &str,
        identifier_hash: Option<&str>,
    ) -> Result<ChatContact> {
        let chat = self.find_chat_contact(identifier, source_id).await?;
        if chat.inbox.hmac_mandatory && !Self::hash_of_proven(&chat, identifier_hash) {
            return Err(Error::Unauthenticated);
        }
        Ok(chat)
    }

    fn hash_of_proven(chat: &ChatContact, identifier_hash: Option<&str>) -> bool {
        match (&chat.contact.verified_identifier, identifier_hash) {
            (Some(proven), Some(hash)) => chat.contact.verified && hash_valid(&chat.inbox.hmac_token, proven, hash),
            _ => false,
        }
    }

    /// The identifier `input` proves, if it carries a hash: a wrong hash is UNAUTHENTICATED, a
    /// hash without an identifier a 422.
    fn proven_identifier(inbox: &inbox::Model, input: &ContactInput) -> Result<Option<String>> {
        let identifier = input.identifier.as_deref().map(str::trim).filter(|i| !i.is_empty());
        match (identifier, input.identifier_hash.as_deref().filter(|h| !h.trim().is_empty())) {
            (Some(identifier), Some(hash)) if hash_valid(&inbox.hmac_token, identifier, hash) => {
                Ok(Some(identifier.to_owned()))
            }
            (Some(_), Some(_)) => Err(Error::Unauthenticated),
            _ => Ok(None),
        }
    }

    /// Creates a contact: always a new contact inbox with a new source id and pubsub token. A
    /// proven identifier binds it to that client (created if new); otherwise it gets a visitor
    /// record of its own and what it says is its claim.
    pub async fn create_chat_contact(&self, identifier: &str, input: ContactInput) -> Result<ChatContact> {
        let inbox = self.inbox(identifier).await?;
        let proven = Self::proven_identifier(&inbox, &input)?;
        if proven.is_none() && inbox.hmac_mandatory {
            return Err(Error::Unauthenticated);
        }
        let fields = self.contact_fields(&inbox, &input).await?;
        let source_id = uuid::Uuid::new_v4().to_string();
        let txn = self.store.begin().await?;
        let client = match &proven {
            Some(identifier) => match client_with_identifier(&txn, inbox.business_id, identifier).await? {
                Some(client) => client,
                None => {
                    let fields = ClientFields {
                        external_ref: Some(identifier.clone()),
                        name: fields.name.clone(),
                        ..Default::default()
                    };
                    directory::insert_client(&txn, inbox.business_id, fields, now()).await.map_err(taken)?
                }
            },
            None => {
                let fields = ClientFields {
                    external_ref: Some(visitor_ref(&source_id)),
                    name: Some(fields.name.clone().unwrap_or_else(|| "Visitor".into())),
                    ..Default::default()
                };
                directory::insert_client(&txn, inbox.business_id, fields, now()).await?
            }
        };
        let client = match fields.custom_attributes {
            Some(given) => set_client_attributes(&txn, client, given).await?,
            None => client,
        };
        let claims = Claims {
            identifier: if proven.is_some() { None } else { fields.identifier },
            email: fields.email,
            phone: fields.phone,
        };
        let new = NewContact {
            inbox_id: inbox.id,
            client_id: client.id,
            source_id,
            pubsub_token: random_token(32),
            verified_identifier: proven,
            claims,
        };
        let contact = db::insert_contact(&txn, new, now()).await?;
        txn.commit().await.map_err(StoreError::from)?;
        Ok(ChatContact { inbox, contact, client })
    }

    /// Updates a contact. A proven identifier joins it to that client (a visitor record is merged
    /// into it); the name is the contact's own to change; email and phone change the client's
    /// record only for a proven contact, and are the visitor's claim otherwise.
    pub async fn update_chat_contact(
        &self,
        identifier: &str,
        source_id: &str,
        input: ContactInput,
    ) -> Result<ChatContact> {
        let mut chat = self.find_chat_contact(identifier, source_id).await?;
        let proven = Self::proven_identifier(&chat.inbox, &input)?;
        if chat.inbox.hmac_mandatory
            && proven.is_none()
            && !Self::hash_of_proven(&chat, input.identifier_hash.as_deref())
        {
            return Err(Error::Unauthenticated);
        }
        let fields = self.contact_fields(&chat.inbox, &input).await?;
        let business_id = chat.inbox.business_id;
        let txn = self.store.begin().await?;
        if let Some(identity) = proven.as_deref().filter(|p| chat.contact.verified_identifier.as_deref() != Some(*p)) {
            let target = match client_with_identifier(&txn, business_id, identity).await? {
                Some(target) if target.id == chat.client.id => target,
                // An unproven contact's own visitor record joins the client it proved to be.
                Some(target) if !chat.contact.verified => {
                    merge_into(&txn, business_id, &chat.client, &target).await?;
                    target
                }
                Some(target) => target,
                // A new identity: the visitor record becomes it; a contact already proven to be
                // someone else gets a new client instead.
                None if !chat.contact.verified => {
                    let fields = ClientFields { external_ref: Some(identity.to_owned()), ..Default::default() };
                    directory::update_client(&txn, chat.client.clone(), fields, now()).await.map_err(taken)?
                }
                None => {
                    let fields = ClientFields {
                        external_ref: Some(identity.to_owned()),
                        name: Some(chat.client.name.clone()),
                        ..Default::default()
                    };
                    directory::insert_client(&txn, business_id, fields, now()).await.map_err(taken)?
                }
            };
            db::bind_contact(&txn, chat.contact.id, target.id, identity).await?;
            chat.contact.client_id = target.id;
            chat.contact.verified = true;
            chat.contact.verified_identifier = Some(identity.to_owned());
            chat.client = target;
        }
        let (email, phone) =
            if chat.contact.verified { (fields.email.clone(), fields.phone.clone()) } else { (None, None) };
        if fields.name.is_some() || email.is_some() || phone.is_some() {
            let update =
                ClientFields { external_ref: None, name: fields.name, phone_e164: phone, email, sms_consent: None };
            chat.client = directory::update_client(&txn, chat.client, update, now()).await.map_err(taken)?;
        }
        if let Some(given) = fields.custom_attributes {
            chat.client = set_client_attributes(&txn, chat.client, given).await?;
        }
        if !chat.contact.verified {
            let claims = Claims { identifier: fields.identifier, email: fields.email, phone: fields.phone };
            chat.contact = db::update_claims(&txn, chat.contact, claims).await?;
        }
        txn.commit().await.map_err(StoreError::from)?;
        Ok(chat)
    }

    /// Staff merge a web-chat visitor into a client: the visitor's contacts see the client's
    /// thread from now on (as proven), its chat messages join the client's conversation, and the
    /// visitor record is removed. Answers the client's conversation, if there is one.
    pub async fn merge_chat_visitor(
        &self,
        caller: &Caller,
        business_id: i64,
        client_id: i64,
        visitor_client_id: i64,
    ) -> Result<Option<ConversationView>> {
        self.directory.business(caller, business_id).await?;
        let txn = self.store.begin().await?;
        let target = directory::client(&txn, business_id, client_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("client {client_id}")))?;
        let visitor = directory::client(&txn, business_id, visitor_client_id).await?.ok_or_else(|| {
            Error::invalid("visitor_client_id", format!("no client {visitor_client_id} in this business"))
        })?;
        if !is_visitor(&visitor) {
            return Err(Error::invalid("visitor_client_id", "is not a web-chat visitor (only visitors are merged)"));
        }
        if visitor.id == target.id {
            return Err(Error::invalid("visitor_client_id", "is the client itself"));
        }
        let conversation = merge_into(&txn, business_id, &visitor, &target).await?;
        let event = NewEvent {
            business_id,
            conversation_id: conversation.as_ref().map(|c| c.id),
            kind: "client.merged",
            actor_key_id: Some(caller.key_id),
            actor_staff_id: caller.staff_id,
            data: json!({ "client_id": target.id, "visitor_client_id": visitor.id }),
        };
        events::append_event(&txn, event, now()).await?;
        txn.commit().await.map_err(StoreError::from)?;
        self.store.wake_event_readers(Some(business_id));
        tracing::info!(business_id, client_id, visitor_client_id, "web-chat visitor merged into a client");
        Ok(conversation.map(ConversationView::from))
    }

    /// The contact's one conversation, if it exists.
    pub async fn chat_conversations(&self, chat: &ChatContact) -> Result<Vec<ConversationView>> {
        let found =
            conversations_db::conversation_of_client(self.store.connection(), chat.inbox.business_id, chat.client.id)
                .await?;
        Ok(found.into_iter().map(ConversationView::from).collect())
    }

    /// Creates (or retrieves) the contact's one conversation; `custom_attributes` (a JSON
    /// object, or null) are merged into its own.
    pub async fn create_chat_conversation(
        &self,
        chat: &ChatContact,
        custom_attributes: &Value,
    ) -> Result<ConversationView> {
        let given = given_attributes("custom_attributes", custom_attributes)?;
        let txn = self.store.begin().await?;
        let caller = Caller::without_key(Scope::Business(chat.inbox.business_id));
        let (conversation, _) = ensure_conversation(
            &txn,
            Some(&caller),
            chat.inbox.business_id,
            chat.client.id,
            chat.inbox.location_id,
            now(),
        )
        .await?;
        let mut conversation = conversation;
        if let Some(given) = given {
            let text = merged_attributes("custom_attributes", conversation.custom_attributes.as_deref(), given)?;
            db::set_conversation_attributes(&txn, conversation.id, &text).await?;
            conversation.custom_attributes = Some(text);
        }
        txn.commit().await.map_err(StoreError::from)?;
        // A widget starting a conversation must get an open one. Omega keeps one thread per
        // client, so where Chatwoot would build a new conversation the resolved one reopens.
        if conversation.status == ConversationStatus::Resolved {
            return self.set_chat_status(chat, conversation.id, ConversationStatus::Open).await;
        }
        Ok(conversation.into())
    }

    /// The contact's conversation `id`; another's is NOT_FOUND.
    pub async fn chat_conversation(&self, chat: &ChatContact, id: i64) -> Result<ConversationView> {
        self.chat_conversation_if_theirs(chat, id).await?.ok_or_else(|| Error::NotFound("conversation".into()))
    }

    /// The contact's conversation `id`; None if there is none or it is another's.
    pub async fn chat_conversation_if_theirs(&self, chat: &ChatContact, id: i64) -> Result<Option<ConversationView>> {
        Ok(conversations_db::conversation(self.store.connection(), chat.inbox.business_id, id)
            .await?
            .filter(|c| c.client_id == chat.client.id)
            .map(ConversationView::from))
    }

    /// What the widget shows: a page of every message but internal notes, oldest first.
    pub async fn chat_messages(&self, conversation: &ConversationView, page: MessagePage) -> Result<Vec<MessageView>> {
        let rows = db::visible_messages(self.store.connection(), conversation.id, page.into()).await?;
        Ok(rows.into_iter().map(MessageView::from).collect())
    }

    /// The message `public_id` of the conversation if the widget may see it (never a note).
    pub async fn chat_visible_message(
        &self,
        conversation: &ConversationView,
        public_id: &str,
    ) -> Result<Option<MessageView>> {
        Ok(crate::store::messages::by_public_id(self.store.connection(), None, public_id)
            .await?
            .filter(|m| m.conversation_id == conversation.id && m.channel != Channel::Note)
            .map(MessageView::from))
    }

    /// The names of the contact's business's staff members `ids` (the ones found).
    pub async fn chat_staff_names(&self, chat: &ChatContact, ids: &[i64]) -> Result<HashMap<i64, String>> {
        Ok(directory::staff_names(self.store.connection(), chat.inbox.business_id, ids).await?)
    }

    /// A message the contact writes: an incoming CHAT message in its conversation, with the
    /// files it uploaded (`attachments[]`).
    pub async fn create_chat_message(
        &self,
        chat: &ChatContact,
        conversation: &ConversationView,
        content: &str,
        echo_id: Option<String>,
        uploads: Vec<Upload>,
    ) -> Result<MessageView> {
        if content.trim().is_empty() && uploads.is_empty() {
            return Err(Error::invalid("content", "is required (or attachments[])"));
        }
        values::check_text("content", content, MAX_CHAT_CONTENT)?;
        if let Some(echo) = &echo_id {
            values::check_text("echo_id", echo, 200)?;
        }
        let files = self.attachments.store_uploads(chat.inbox.business_id, "attachments[]", uploads).await?;
        let caller = Caller::without_key(Scope::Business(chat.inbox.business_id));
        let stored = self
            .store_message_row(
                &caller,
                IncomingMessage {
                    content: content.to_owned(),
                    // A widget resending the same echo id (a retry) gets the same message.
                    idempotency_key: echo_id
                        .map(|e| format!("chat:{}:{e}", chat.contact.source_id))
                        .unwrap_or_default(),
                    location_id: chat.inbox.location_id,
                    attachments: files.clone(),
                    ..IncomingMessage::new(
                        chat.inbox.business_id,
                        Channel::Chat,
                        "INBOUND",
                        ClientRef { client_id: Some(conversation.client_id), ..Default::default() },
                    )
                },
            )
            .await;
        // Files of a message that was not written (or was already there: a retry) are unused.
        match stored {
            Ok(stored) if stored.created => Ok(stored.message.into()),
            Ok(stored) => {
                self.attachments.forget_uploads(&files).await;
                Ok(stored.message.into())
            }
            Err(err) => {
                self.attachments.forget_uploads(&files).await;
                Err(err)
            }
        }
    }

    /// Records the widget's content attributes (e.g. submitted form values) on a message of the
    /// contact's conversation.
    pub async fn update_chat_message(
        &self,
        conversation: &ConversationView,
        message_id: i64,
        attributes: serde_json::Value,
    ) -> Result<MessageView> {
        let attributes = attributes.to_string();
        if attributes.len() > 16 * 1024 {
            return Err(Error::invalid("submitted_values", "must be at most 16 KiB of JSON"));
        }
        let conn = self.store.connection();
        let message = crate::store::messages::by_id(conn, message_id)
            .await?
            .filter(|m| m.conversation_id == conversation.id && m.channel != Channel::Note)
            .ok_or_else(|| Error::NotFound("message".into()))?;
        db::set_content_attributes(self.store.writer(), message.id, attributes).await?;
        crate::store::messages::by_id(conn, message.id)
            .await?
            .map(MessageView::from)
            .ok_or_else(|| Error::NotFound("message".into()))
    }

    /// Resolves the conversation (Chatwoot's `toggle_status`: a resolved one stays resolved).
    pub async fn toggle_chat_status(
        &self,
        chat: &ChatContact,
        conversation: &ConversationView,
    ) -> Result<ConversationView> {
        if conversation.status == ConversationStatus::Resolved {
            return Ok(conversation.clone());
        }
        self.set_chat_status(chat, conversation.id, ConversationStatus::Resolved).await
    }

    async fn set_chat_status(
        &self,
        chat: &ChatContact,
        conversation_id: i64,
        status: ConversationStatus,
    ) -> Result<ConversationView> {
        let caller = Caller::without_key(Scope::Business(chat.inbox.business_id));
        let ids = super::conversations::ConversationPath {
            business_id: chat.inbox.business_id,
            client_id: chat.client.id,
            conversation_id,
        };
        let request = StatusRequest {
            status: status.as_str().into(),
            snoozed_until: String::new(),
            resolved_by: None,
            note: String::new(),
        };
        self.update_conversation_status(&caller, ids, request).await?;
        self.chat_conversation(chat, conversation_id).await
    }

    pub async fn chat_seen(&self, conversation: &ConversationView) -> Result<()> {
        Ok(db::set_contact_last_seen(self.store.writer(), conversation.id, now()).await?)
    }

    /// Typing indicators are not stored; they go to the event log for live views.
    pub async fn chat_typing(&self, chat: &ChatContact, conversation: &ConversationView, typing: &str) -> Result<()> {
        // Chatwoot acts on `on` and `off` and ignores anything else (e.g. `recording`).
        let on = match typing.trim() {
            "on" => true,
            "off" => false,
            _ => return Ok(()),
        };
        let event = NewEvent {
            business_id: chat.inbox.business_id,
            conversation_id: Some(conversation.id),
            kind: "contact.typing",
            actor_key_id: None,
            actor_staff_id: None,
            data: json!({ "typing": on }),
        };
        events::append_event(self.store.writer(), event, now()).await?;
        self.store.wake_event_readers(Some(chat.inbox.business_id));
        Ok(())
    }
}

/// Merges a contact's custom attributes into its client's, in `conn`'s transaction.
async fn set_client_attributes(
    conn: &impl sea_orm::ConnectionTrait,
    mut client: client::Model,
    given: Map<String, Value>,
) -> Result<client::Model> {
    let text = merged_attributes("custom_attributes", client.custom_attributes.as_deref(), given)?;
    db::set_client_attributes(conn, client.id, &text).await?;
    client.custom_attributes = Some(text);
    Ok(client)
}

/// The client of the business whose external reference is `identifier`.
async fn client_with_identifier(
    conn: &impl sea_orm::ConnectionTrait,
    business_id: i64,
    identifier: &str,
) -> Result<Option<client::Model>> {
    Ok(directory::clients_by_identity(conn, business_id, Some(identifier), None, None).await?.into_iter().next())
}

/// Folds a visitor's record into `target` in `conn`'s transaction: its conversation joins the
/// target's (or becomes it), its contacts are bound to the target as proven, the record goes.
async fn merge_into(
    conn: &impl sea_orm::ConnectionTrait,
    business_id: i64,
    visitor: &client::Model,
    target: &client::Model,
) -> Result<Option<conversation::Model>> {
    let theirs = conversations_db::conversation_of_client(conn, business_id, visitor.id).await?;
    let ours = conversations_db::conversation_of_client(conn, business_id, target.id).await?;
    match (&theirs, &ours) {
        (Some(from), Some(into)) => {
            db::absorb_conversation(conn, from, into, target.id).await?;
            let bucket = (from.status.as_str(), from.assigned_staff_id);
            conversations_db::shift_count(conn, business_id, Some(bucket), None).await?;
        }
        (Some(from), None) => db::reassign_conversation(conn, from.id, target.id).await?,
        _ => {}
    }
    db::rebind_contacts(conn, visitor.id, target.id, target.external_ref.as_deref()).await?;
    db::delete_client(conn, visitor.id).await?;
    Ok(conversations_db::conversation_of_client(conn, business_id, target.id).await?)
}
