//! Web chat through the Chatwoot-compatible public API: inboxes, contacts (clients seen
//! through an inbox), and their one conversation — the same thread as their SMS and email.
//! A contact is authenticated by its inbox identifier and the source id Omega issued; an inbox
//! may also require `identifier_hash` (HMAC-SHA256 of the contact's identifier).

use hmac::{Hmac, Mac};
use rand::{Rng, distr::Alphanumeric};
use serde_json::json;
use sha2::Sha256;

use super::{
    Error, Omega, Result, Violations,
    auth::{Caller, Scope},
    conversations::{StatusRequest, ensure_conversation},
    messages::{ClientRef, IncomingMessage},
    values::{self, Channel, ConversationStatus, now},
};
use crate::store::{
    StoreError,
    chat::{self as db, NewInbox},
    conversations::{self as conversations_db, NewEvent},
    directory::{self, ClientFields},
    entity::{client, contact_inbox, conversation, inbox, message},
};

/// A contact as the public API sees it: its inbox, its source id, and the client behind it.
pub struct ChatContact {
    pub inbox: inbox::Model,
    pub contact: contact_inbox::Model,
    pub client: client::Model,
}

/// What a widget may say about its contact.
#[derive(Default)]
pub struct ContactInput {
    pub identifier: Option<String>,
    pub identifier_hash: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone_number: Option<String>,
}

fn random_token(len: usize) -> String {
    rand::rng().sample_iter(Alphanumeric).take(len).map(char::from).collect()
}

fn hash_valid(token: &str, identifier: &str, given: &str) -> bool {
    let Ok(given) = hex::decode(given.trim()) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(identifier.as_bytes());
    mac.verify_slice(&given).is_ok()
}

/// A contact's fields, validated and normalized (empty means absent).
struct ContactFields {
    email: Option<String>,
    phone: Option<String>,
    name: Option<String>,
    identifier: Option<String>,
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
        v.finish()?;
        Ok(ContactFields { email, phone, name, identifier })
    }

    pub async fn create_inbox(
        &self,
        caller: &Caller,
        business_id: i64,
        name: &str,
        location_id: Option<i64>,
        hmac_mandatory: bool,
    ) -> Result<inbox::Model> {
        self.business(caller, business_id).await?;
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
        Ok(db::insert_inbox(self.store.connection(), new, now()).await?)
    }

    pub async fn inboxes(&self, caller: &Caller, business_id: i64) -> Result<Vec<inbox::Model>> {
        self.business(caller, business_id).await?;
        Ok(db::inboxes(self.store.connection(), business_id).await?)
    }

    async fn inbox(&self, identifier: &str) -> Result<inbox::Model> {
        db::inbox_by_identifier(self.store.connection(), identifier)
            .await?
            .ok_or_else(|| Error::NotFound("inbox".into()))
    }

    /// The contact `source_id` of inbox `identifier`; a contact of another inbox is NOT_FOUND.
    pub async fn chat_contact(&self, identifier: &str, source_id: &str) -> Result<ChatContact> {
        let inbox = self.inbox(identifier).await?;
        let conn = self.store.connection();
        let contact = db::contact(conn, inbox.id, source_id).await?.ok_or_else(|| Error::NotFound("contact".into()))?;
        let client = directory::client(conn, inbox.business_id, contact.client_id)
            .await?
            .ok_or_else(|| Error::NotFound("contact".into()))?;
        Ok(ChatContact { inbox, contact, client })
    }

    fn check_identifier_hash(inbox: &inbox::Model, input: &ContactInput) -> Result<()> {
        match (&input.identifier, &input.identifier_hash) {
            (Some(identifier), Some(hash)) if hash_valid(&inbox.hmac_token, identifier, hash) => Ok(()),
            (Some(_), Some(_)) => Err(Error::Unauthenticated),
            (_, None) if inbox.hmac_mandatory => Err(Error::Unauthenticated),
            (None, Some(_)) => Err(Error::invalid("identifier", "is required with identifier_hash")),
            _ => Ok(()),
        }
    }

    /// Creates (or finds) the contact: the client with this identifier, email or phone — a new
    /// one otherwise — seen through this inbox under a new source id.
    pub async fn create_chat_contact(&self, identifier: &str, input: ContactInput) -> Result<ChatContact> {
        let inbox = self.inbox(identifier).await?;
        Self::check_identifier_hash(&inbox, &input)?;
        let ContactFields { email, phone, name, identifier: external } = self.contact_fields(&inbox, &input).await?;
        let conn = self.store.connection();
        let source_id = uuid::Uuid::new_v4().to_string();
        let found = directory::clients_by_identity(
            conn,
            inbox.business_id,
            external.as_deref(),
            phone.as_deref(),
            email.as_deref(),
        )
        .await?;
        let client = match found.into_iter().next() {
            Some(client) => client,
            None => {
                // An anonymous visitor is known by the chat itself until it says more.
                let external_ref = external
                    .clone()
                    .or_else(|| (phone.is_none() && email.is_none()).then(|| format!("chat:{source_id}")));
                let fields = ClientFields {
                    external_ref,
                    name: name.clone().or(Some("Visitor".into())),
                    phone_e164: phone,
                    email,
                    sms_consent: None,
                };
                match directory::insert_client(conn, inbox.business_id, fields, now()).await {
                    Ok(client) => client,
                    Err(StoreError::UniqueViolation(_)) => {
                        return Err(Error::Conflict("the contact was created concurrently; retry".into()));
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        };
        let contact = match db::contact_of_client(conn, inbox.id, client.id).await? {
            Some(existing) => existing,
            None => match db::insert_contact(conn, inbox.id, client.id, &source_id, now()).await {
                Ok(contact) => contact,
                Err(StoreError::UniqueViolation(_)) => db::contact_of_client(conn, inbox.id, client.id)
                    .await?
                    .ok_or_else(|| Error::Conflict("the contact changed concurrently; retry".into()))?,
                Err(err) => return Err(err.into()),
            },
        };
        Ok(ChatContact { inbox, contact, client })
    }

    pub async fn update_chat_contact(
        &self,
        identifier: &str,
        source_id: &str,
        input: ContactInput,
    ) -> Result<ChatContact> {
        let mut chat = self.chat_contact(identifier, source_id).await?;
        if input.identifier.is_some() || chat.inbox.hmac_mandatory {
            Self::check_identifier_hash(&chat.inbox, &input)?;
        }
        let ContactFields { email, phone, name, identifier } = self.contact_fields(&chat.inbox, &input).await?;
        let fields = ClientFields { external_ref: identifier, name, phone_e164: phone, email, sms_consent: None };
        chat.client = directory::update_client(self.store.connection(), chat.client, fields, now()).await.map_err(
            |err| match err {
                StoreError::UniqueViolation(_) => {
                    Error::Conflict("another client already has this email, phone or identifier".into())
                }
                other => other.into(),
            },
        )?;
        Ok(chat)
    }

    /// The contact's one conversation, if it exists.
    pub async fn chat_conversations(&self, chat: &ChatContact) -> Result<Vec<conversation::Model>> {
        let found =
            conversations_db::conversation_of_client(self.store.connection(), chat.inbox.business_id, chat.client.id)
                .await?;
        Ok(found.into_iter().collect())
    }

    /// Creates (or retrieves) the contact's one conversation.
    pub async fn create_chat_conversation(&self, chat: &ChatContact) -> Result<conversation::Model> {
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
        txn.commit().await.map_err(StoreError::from)?;
        Ok(conversation)
    }

    /// The contact's conversation `id`; another's is NOT_FOUND.
    pub async fn chat_conversation(&self, chat: &ChatContact, id: i64) -> Result<conversation::Model> {
        conversations_db::conversation(self.store.connection(), chat.inbox.business_id, id)
            .await?
            .filter(|c| c.client_id == chat.client.id)
            .ok_or_else(|| Error::NotFound("conversation".into()))
    }

    /// What the widget shows: every message but internal notes, oldest first.
    pub async fn chat_messages(&self, conversation: &conversation::Model) -> Result<Vec<message::Model>> {
        Ok(db::visible_messages(self.store.connection(), conversation.id, 1_000).await?)
    }

    /// A message the contact writes: an incoming CHAT message in its conversation.
    pub async fn create_chat_message(
        &self,
        chat: &ChatContact,
        conversation: &conversation::Model,
        content: &str,
        echo_id: Option<String>,
    ) -> Result<message::Model> {
        if content.trim().is_empty() {
            return Err(Error::invalid("content", "is required"));
        }
        let caller = Caller::without_key(Scope::Business(chat.inbox.business_id));
        let stored = self
            .store_message(
                &caller,
                IncomingMessage {
                    business_id: chat.inbox.business_id,
                    channel: Channel::Chat,
                    direction: "INBOUND".into(),
                    client: ClientRef { client_id: Some(conversation.client_id), ..Default::default() },
                    content: content.to_owned(),
                    subject: String::new(),
                    html: String::new(),
                    media_urls: Vec::new(),
                    status: String::new(),
                    provider: String::new(),
                    provider_message_id: String::new(),
                    // A widget resending the same echo id (a retry) gets the same message.
                    idempotency_key: echo_id
                        .map(|e| format!("chat:{}:{e}", chat.contact.source_id))
                        .unwrap_or_default(),
                    occurred_at: String::new(),
                    location_id: chat.inbox.location_id,
                    sent_by: None,
                    request_id: String::new(),
                },
            )
            .await?;
        Ok(stored.message)
    }

    /// Records the widget's content attributes (e.g. submitted form values) on a message of the
    /// contact's conversation.
    pub async fn update_chat_message(
        &self,
        conversation: &conversation::Model,
        message_id: i64,
        attributes: serde_json::Value,
    ) -> Result<message::Model> {
        let conn = self.store.connection();
        let message = crate::store::messages::by_id(conn, message_id)
            .await?
            .filter(|m| m.conversation_id == conversation.id && m.channel != "NOTE")
            .ok_or_else(|| Error::NotFound("message".into()))?;
        db::set_content_attributes(conn, message.id, attributes.to_string()).await?;
        crate::store::messages::by_id(conn, message.id).await?.ok_or_else(|| Error::NotFound("message".into()))
    }

    /// Resolves an open conversation, or reopens a resolved one (Chatwoot's toggle).
    pub async fn toggle_chat_status(
        &self,
        chat: &ChatContact,
        conversation: &conversation::Model,
    ) -> Result<conversation::Model> {
        let next = match ConversationStatus::from_stored(&conversation.status) {
            ConversationStatus::Resolved => "OPEN",
            _ => "RESOLVED",
        };
        let caller = Caller::without_key(Scope::Business(chat.inbox.business_id));
        let ids = (chat.inbox.business_id, chat.client.id, conversation.id);
        let request =
            StatusRequest { status: next.into(), snoozed_until: String::new(), resolved_by: None, note: String::new() };
        self.update_conversation_status(&caller, ids, request).await?;
        self.chat_conversation(chat, conversation.id).await
    }

    pub async fn chat_seen(&self, conversation: &conversation::Model) -> Result<()> {
        Ok(db::set_contact_last_seen(self.store.connection(), conversation.id, now()).await?)
    }

    /// Typing indicators are not stored; they go to the event log for live views.
    pub async fn chat_typing(
        &self,
        chat: &ChatContact,
        conversation: &conversation::Model,
        typing: &str,
    ) -> Result<()> {
        let on = match typing {
            "on" => true,
            "off" => false,
            _ => return Err(Error::invalid("typing_status", "must be on or off")),
        };
        let event = NewEvent {
            business_id: chat.inbox.business_id,
            conversation_id: Some(conversation.id),
            kind: "contact.typing",
            actor_key_id: None,
            actor_staff_id: None,
            data: json!({ "typing": on }),
        };
        conversations_db::append_event(self.store.connection(), event, now()).await?;
        Ok(())
    }
}
