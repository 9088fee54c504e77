//! `omega.v1.ChatService` (Chatwoot's public client API, in Chatwoot's own JSON) and
//! `omega.v1.InboxService` (a business managing its web-chat inboxes).

use std::collections::HashMap;

use serde_json::{Value, json};
use tonic::{Request, Response, Status};

use super::{
    auth::caller,
    convert::{optional_id, required_id, wire_id},
};
use crate::{
    domain::{
        Error, Omega, Result,
        chat::{ChatContact, ContactInput},
    },
    proto::{
        google::api::HttpBody,
        omega::v1::{
            CreateChatContactRequest, CreateChatConversationRequest, CreateChatMessageRequest, CreateInboxRequest,
            CreateInboxResponse, GetChatContactRequest, GetChatConversationRequest, Inbox,
            ListChatConversationsRequest, ListChatMessagesRequest, ListInboxesRequest, ListInboxesResponse,
            MergeVisitorRequest, MergeVisitorResponse, ToggleChatStatusRequest, ToggleChatTypingRequest,
            UpdateChatContactRequest, UpdateChatLastSeenRequest, UpdateChatMessageRequest,
            chat_service_server::ChatService, inbox_service_server::InboxService,
        },
    },
    store::{
        chat::MessagePage,
        directory,
        entity::{conversation, inbox, message},
    },
};

#[derive(Clone)]
pub struct ChatApi {
    omega: Omega,
}

impl ChatApi {
    pub fn new(omega: Omega) -> Self {
        Self { omega }
    }
}

fn json_response(value: Value) -> Response<HttpBody> {
    Response::new(HttpBody {
        content_type: "application/json".into(),
        data: value.to_string().into_bytes(),
        extensions: Vec::new(),
    })
}

/// A JSON request body (empty means `{}`); anything else that is not a JSON object is a 422.
fn body_json(body: Option<&HttpBody>) -> Result<Value> {
    let data = body.map(|b| b.data.as_slice()).unwrap_or_default();
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(data) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(Error::invalid("body", "must be a JSON object")),
    }
}

fn text(value: &Value, key: &str) -> Option<String> {
    match &value[key] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn contact_input(body: &Value) -> ContactInput {
    ContactInput {
        identifier: text(body, "identifier"),
        identifier_hash: text(body, "identifier_hash"),
        name: text(body, "name"),
        email: text(body, "email"),
        phone_number: text(body, "phone_number"),
    }
}

/// Chatwoot's contact JSON (seed 004's `contact`): the client's record once the contact proved
/// who it is, its own claims until then.
pub(super) fn contact_json(chat: &ChatContact) -> Result<Value> {
    let (inbox, client) = (&chat.inbox, &chat.client);
    let (identifier, email, phone) = chat.shown_identity();
    Ok(json!({
        "id": wire_id(client.id)?,
        "name": client.name,
        "email": email,
        "phone_number": phone,
        "identifier": identifier,
        "blocked": false,
        "additional_attributes": {},
        "custom_attributes": {},
        "contact_type": "visitor",
        "country_code": null,
        "last_activity_at": client.updated_at.to_rfc3339(),
        "created_at": client.created_at.to_rfc3339(),
        "updated_at": client.updated_at.to_rfc3339(),
        "last_name": null,
        "middle_name": null,
        "location": null,
        "account_id": wire_id(inbox.business_id)?,
        "company_id": null,
        "label_list": [],
    }))
}

/// The contact as the create / get / update calls answer it: with its source id.
fn contact_with_source(chat: &ChatContact) -> Result<Value> {
    let mut value = contact_json(chat)?;
    value["source_id"] = json!(chat.contact.source_id);
    value["pubsub_token"] = json!(chat.contact.pubsub_token);
    Ok(value)
}

/// Chatwoot's message JSON: `message_type` 0 for the contact's messages, 1 for staff/outgoing.
pub(super) fn message_json(chat: &ChatContact, staff: &HashMap<i64, String>, m: &message::Model) -> Result<Value> {
    let client = &chat.client;
    let incoming = m.direction == "INBOUND";
    let sender = if incoming {
        let mut contact = contact_json(chat)?;
        contact["type"] = json!("contact");
        contact["available_name"] = json!(client.name);
        contact["avatar_url"] = json!("");
        contact["thumbnail"] = json!("");
        contact
    } else {
        let name = m.sender_staff_id.and_then(|id| staff.get(&id).cloned()).unwrap_or_else(|| "Staff".into());
        json!({
            "id": m.sender_staff_id.map(wire_id).transpose()?,
            "name": name,
            "available_name": name,
            "avatar_url": "",
            "thumbnail": "",
            "type": "user",
            "availability_status": "online",
        })
    };
    let media: Vec<String> = m.media.as_deref().and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default();
    let attachments: Vec<Value> = media
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let extension = url.rsplit('.').next().filter(|e| e.len() <= 5 && !e.contains('/')).unwrap_or_default();
            let image = ["jpg", "jpeg", "png", "gif", "webp"].contains(&extension.to_ascii_lowercase().as_str());
            json!({
                "id": i + 1, "message_id": m.id, "file_type": if image { "image" } else { "file" },
                "account_id": m.business_id, "extension": extension, "data_url": url, "thumb_url": url,
                "file_size": 0, "width": null, "height": null, "coordinates_lat": 0, "coordinates_long": 0,
                "fallback_title": null, "meta": {}, "transcribed_text": "",
            })
        })
        .collect();
    let attributes: Value =
        m.content_attributes.as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or(json!({}));
    Ok(json!({
        "id": wire_id(m.id)?,
        "content": m.content,
        "message_type": if incoming { 0 } else { 1 },
        "content_type": "text",
        "content_attributes": attributes,
        "created_at": m.created_at.timestamp(),
        "conversation_id": wire_id(m.conversation_id)?,
        "attachments": attachments,
        "sender": sender,
    }))
}

/// A stable UUID for a conversation (Chatwoot exposes one beside the integer id).
pub(super) fn conversation_uuid(c: &conversation::Model) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("omega-conversation-{}-{}", c.business_id, c.id).as_bytes())
        .to_string()
}

impl ChatApi {
    async fn staff_names(&self, business_id: i64, messages: &[message::Model]) -> Result<HashMap<i64, String>> {
        let mut ids: Vec<i64> = messages.iter().filter_map(|m| m.sender_staff_id).collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(directory::staff_names(self.omega.store.connection(), business_id, &ids).await?)
    }

    /// Chatwoot's conversation JSON (seed 004), with its messages and contact.
    async fn conversation_json(&self, chat: &ChatContact, c: &conversation::Model) -> Result<Value> {
        let messages = self.omega.chat_messages(c, MessagePage::Latest).await?;
        let staff = self.staff_names(chat.inbox.business_id, &messages).await?;
        let messages: Vec<Value> = messages.iter().map(|m| message_json(chat, &staff, m)).collect::<Result<_>>()?;
        Ok(json!({
            "id": wire_id(c.id)?,
            "uuid": conversation_uuid(c),
            "inbox_id": wire_id(chat.inbox.id)?,
            "contact_last_seen_at": c.contact_last_seen_at.map_or(0, |t| t.timestamp()),
            "status": c.status.to_ascii_lowercase(),
            "agent_last_seen_at": c.agent_last_seen_at.map_or(0, |t| t.timestamp()),
            "messages": messages,
            "contact": contact_json(chat)?,
        }))
    }

    async fn conversation_of(
        &self,
        inbox: &str,
        contact: &str,
        id: u32,
        identifier_hash: Option<&str>,
    ) -> Result<(ChatContact, conversation::Model)> {
        let chat = self.omega.chat_contact(inbox, contact, identifier_hash).await?;
        let conversation = self.omega.chat_conversation(&chat, required_id("conversation_id", id)?).await?;
        Ok((chat, conversation))
    }
}

/// The identifier hash a call carries: its query parameter, or its JSON body's field.
fn presented_hash<'a>(query: &'a str, body: Option<&'a Value>) -> Option<&'a str> {
    Some(query.trim()).filter(|h| !h.is_empty()).or_else(|| body.and_then(|b| b["identifier_hash"].as_str()))
}

#[tonic::async_trait]
impl ChatService for ChatApi {
    async fn create_contact(&self, request: Request<CreateChatContactRequest>) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let body = body_json(r.body.as_ref())?;
        let chat = self.omega.create_chat_contact(&r.inbox_identifier, contact_input(&body)).await?;
        Ok(json_response(contact_with_source(&chat)?))
    }

    async fn get_contact(&self, request: Request<GetChatContactRequest>) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let hash = presented_hash(&r.identifier_hash, None);
        let chat = self.omega.chat_contact(&r.inbox_identifier, &r.contact_identifier, hash).await?;
        Ok(json_response(contact_with_source(&chat)?))
    }

    async fn update_contact(&self, request: Request<UpdateChatContactRequest>) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let body = body_json(r.body.as_ref())?;
        let chat =
            self.omega.update_chat_contact(&r.inbox_identifier, &r.contact_identifier, contact_input(&body)).await?;
        Ok(json_response(contact_with_source(&chat)?))
    }

    async fn create_conversation(
        &self,
        request: Request<CreateChatConversationRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let body = body_json(r.body.as_ref())?;
        let hash = presented_hash(&r.identifier_hash, Some(&body));
        let chat = self.omega.chat_contact(&r.inbox_identifier, &r.contact_identifier, hash).await?;
        let conversation = self.omega.create_chat_conversation(&chat).await?;
        Ok(json_response(self.conversation_json(&chat, &conversation).await?))
    }

    async fn list_conversations(
        &self,
        request: Request<ListChatConversationsRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let hash = presented_hash(&r.identifier_hash, None);
        let chat = self.omega.chat_contact(&r.inbox_identifier, &r.contact_identifier, hash).await?;
        let mut list = Vec::new();
        for conversation in self.omega.chat_conversations(&chat).await? {
            list.push(self.conversation_json(&chat, &conversation).await?);
        }
        Ok(json_response(Value::Array(list)))
    }

    async fn get_conversation(
        &self,
        request: Request<GetChatConversationRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let hash = presented_hash(&r.identifier_hash, None);
        let (chat, conversation) =
            self.conversation_of(&r.inbox_identifier, &r.contact_identifier, r.conversation_id, hash).await?;
        Ok(json_response(self.conversation_json(&chat, &conversation).await?))
    }

    async fn toggle_status(&self, request: Request<ToggleChatStatusRequest>) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let body = body_json(r.body.as_ref())?;
        let hash = presented_hash(&r.identifier_hash, Some(&body));
        let (chat, conversation) =
            self.conversation_of(&r.inbox_identifier, &r.contact_identifier, r.conversation_id, hash).await?;
        let conversation = self.omega.toggle_chat_status(&chat, &conversation).await?;
        Ok(json_response(self.conversation_json(&chat, &conversation).await?))
    }

    async fn toggle_typing(&self, request: Request<ToggleChatTypingRequest>) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let body = body_json(r.body.as_ref())?;
        let hash = presented_hash(&r.identifier_hash, Some(&body));
        let (chat, conversation) =
            self.conversation_of(&r.inbox_identifier, &r.contact_identifier, r.conversation_id, hash).await?;
        let typing = Some(r.typing_status.clone())
            .filter(|t| !t.trim().is_empty())
            .or_else(|| text(&body, "typing_status"))
            .unwrap_or_default();
        self.omega.chat_typing(&chat, &conversation, &typing).await?;
        Ok(json_response(json!({})))
    }

    async fn update_last_seen(
        &self,
        request: Request<UpdateChatLastSeenRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let body = body_json(r.body.as_ref())?;
        let hash = presented_hash(&r.identifier_hash, Some(&body));
        let (_, conversation) =
            self.conversation_of(&r.inbox_identifier, &r.contact_identifier, r.conversation_id, hash).await?;
        self.omega.chat_seen(&conversation).await?;
        Ok(json_response(json!({})))
    }

    async fn list_messages(&self, request: Request<ListChatMessagesRequest>) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let hash = presented_hash(&r.identifier_hash, None);
        let (chat, conversation) =
            self.conversation_of(&r.inbox_identifier, &r.contact_identifier, r.conversation_id, hash).await?;
        let page = match (r.before.map(|b| required_id("before", b)), r.after.map(|a| required_id("after", a))) {
            (None, None) => MessagePage::Latest,
            (Some(before), None) => MessagePage::Before(before?),
            (None, Some(after)) => MessagePage::After(after?),
            (Some(before), Some(after)) => MessagePage::Between { after: after?, before: before? },
        };
        let messages = self.omega.chat_messages(&conversation, page).await?;
        let staff = self.staff_names(chat.inbox.business_id, &messages).await?;
        let list: Vec<Value> = messages.iter().map(|m| message_json(&chat, &staff, m)).collect::<Result<_>>()?;
        Ok(json_response(Value::Array(list)))
    }

    async fn create_message(&self, request: Request<CreateChatMessageRequest>) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let body = body_json(r.body.as_ref())?;
        let hash = presented_hash(&r.identifier_hash, Some(&body));
        let (chat, conversation) =
            self.conversation_of(&r.inbox_identifier, &r.contact_identifier, r.conversation_id, hash).await?;
        let content = text(&body, "content").unwrap_or_default();
        let message = self.omega.create_chat_message(&chat, &conversation, &content, text(&body, "echo_id")).await?;
        Ok(json_response(message_json(&chat, &HashMap::new(), &message)?))
    }

    async fn update_message(&self, request: Request<UpdateChatMessageRequest>) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let body = body_json(r.body.as_ref())?;
        let hash = presented_hash(&r.identifier_hash, Some(&body));
        let (chat, conversation) =
            self.conversation_of(&r.inbox_identifier, &r.contact_identifier, r.conversation_id, hash).await?;
        let attributes = match &body["submitted_values"] {
            Value::Null => body["content_attributes"].clone(),
            values => json!({ "submitted_values": values }),
        };
        if !attributes.is_object() {
            return Err(Error::invalid("submitted_values", "is required").into());
        }
        let message =
            self.omega.update_chat_message(&conversation, required_id("message_id", r.message_id)?, attributes).await?;
        let staff = self.staff_names(chat.inbox.business_id, std::slice::from_ref(&message)).await?;
        Ok(json_response(message_json(&chat, &staff, &message)?))
    }
}

fn encode_inbox(inbox: inbox::Model) -> Result<Inbox> {
    Ok(Inbox {
        id: wire_id(inbox.id)?,
        name: inbox.name,
        inbox_identifier: inbox.identifier,
        hmac_token: inbox.hmac_token,
        hmac_mandatory: inbox.hmac_mandatory,
        location_id: inbox.location_id.map(wire_id).transpose()?,
    })
}

#[tonic::async_trait]
impl InboxService for ChatApi {
    async fn create_inbox(
        &self,
        request: Request<CreateInboxRequest>,
    ) -> Result<Response<CreateInboxResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let inbox = self
            .omega
            .create_inbox(&caller, business_id, &r.name, optional_id("location_id", r.location_id)?, r.hmac_mandatory)
            .await?;
        Ok(Response::new(CreateInboxResponse { inbox: Some(encode_inbox(inbox)?) }))
    }

    async fn list_inboxes(
        &self,
        request: Request<ListInboxesRequest>,
    ) -> Result<Response<ListInboxesResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let business_id = required_id("business_id", request.get_ref().business_id)?;
        let inboxes = self.omega.inboxes(&caller, business_id).await?;
        Ok(Response::new(ListInboxesResponse {
            inboxes: inboxes.into_iter().map(encode_inbox).collect::<Result<_>>()?,
        }))
    }

    async fn merge_visitor(
        &self,
        request: Request<MergeVisitorRequest>,
    ) -> Result<Response<MergeVisitorResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let (business_id, client_id) =
            (required_id("business_id", r.business_id)?, required_id("client_id", r.client_id)?);
        let visitor = required_id("visitor_client_id", r.visitor_client_id)?;
        let conversation = self.omega.merge_chat_visitor(&caller, business_id, client_id, visitor).await?;
        Ok(Response::new(MergeVisitorResponse {
            client_id: wire_id(client_id)?,
            conversation_id: conversation.map(|c| wire_id(c.id)).transpose()?,
        }))
    }
}
