//! `omega.v1.ChatService` (Chatwoot's public client API, in Chatwoot's own JSON) and
//! `omega.v1.InboxService` (a business managing its web-chat inboxes).

use std::collections::HashMap;

use serde_json::{Value, json};
use tonic::{
    Request, Response, Status,
    metadata::{MetadataMap, MetadataValue},
};

use super::{
    auth::caller,
    convert::{optional_id, required_id, wire_id},
};
use crate::{
    domain::{
        Error, Omega, Result,
        attachments::Upload,
        chat::{ChatContact, ContactInput, MessagePage},
        values::Direction,
        views::{AttachmentSummary, AttachmentView, ConversationView, InboxView, MessageView},
    },
    proto::{
        google::api::HttpBody,
        omega::v1::{
            CreateChatContactRequest, CreateChatConversationRequest, CreateChatMessageRequest, CreateInboxRequest,
            CreateInboxResponse, GetAttachmentRequest, GetChatAttachmentRequest, GetChatContactRequest,
            GetChatConversationRequest, GetChatInboxRequest, Inbox, ListChatConversationsRequest,
            ListChatMessagesRequest, ListInboxesRequest, ListInboxesResponse, MergeVisitorRequest,
            MergeVisitorResponse, ToggleChatStatusRequest, ToggleChatTypingRequest, UpdateChatContactRequest,
            UpdateChatLastSeenRequest, UpdateChatMessageRequest, attachment_service_server::AttachmentService,
            chat_service_server::ChatService, inbox_service_server::InboxService,
        },
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

/// A request body as Chatwoot's clients send it: JSON, a form
/// (`application/x-www-form-urlencoded`, with Rails' `key[sub]` and `key[]` nesting) or
/// multipart form data (its files set apart). Empty means `{}`; anything else that is not a JSON
/// object is a 422.
async fn read_body(body: Option<&HttpBody>) -> Result<(Value, Vec<Upload>)> {
    let data = body.map(|b| b.data.as_slice()).unwrap_or_default();
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok((json!({}), Vec::new()));
    }
    let content_type = body.map(|b| b.content_type.as_str()).unwrap_or_default();
    let (fields, files) = match media_type(content_type).as_str() {
        "application/x-www-form-urlencoded" => (nested(form_fields(data)?), Vec::new()),
        "multipart/form-data" => multipart(content_type, data).await?,
        _ => match serde_json::from_slice::<Value>(data) {
            Ok(value @ Value::Object(_)) => (value, Vec::new()),
            _ => return Err(Error::invalid("body", "must be a JSON object")),
        },
    };
    refuse_nul(&fields, "")?;
    Ok((fields, files))
}

/// A form's fields, decoded strictly: `form_urlencoded::parse` would turn bytes that are not
/// UTF-8 into U+FFFD and store them; here they are a 422 naming the field.
fn form_fields(data: &[u8]) -> Result<Vec<(String, String)>> {
    let decode = |part: &[u8], field: &str| {
        let spaced: Vec<u8> = part.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
        percent_encoding::percent_decode(&spaced)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| Error::invalid(if field.is_empty() { "body" } else { field }, "is not valid UTF-8"))
    };
    let mut fields = Vec::new();
    for pair in data.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        let key = decode(key, "")?;
        let value = decode(value, &key)?;
        fields.push((key, value));
    }
    Ok(fields)
}

/// A NUL character in any field of a body is refused (PostgreSQL cannot store one, and no
/// Chatwoot field means one), naming the field.
fn refuse_nul(value: &Value, at: &str) -> Result<()> {
    let field = |key: &str| if at.is_empty() { key.to_owned() } else { format!("{at}.{key}") };
    match value {
        Value::String(text) if text.contains('\0') => {
            Err(Error::invalid(if at.is_empty() { "body" } else { at }, "must not contain NUL characters"))
        }
        Value::Object(map) => {
            for (key, value) in map {
                if key.contains('\0') {
                    return Err(Error::invalid("body", "field names must not contain NUL characters"));
                }
                refuse_nul(value, &field(key))?;
            }
            Ok(())
        }
        Value::Array(list) => {
            list.iter().try_for_each(|item| refuse_nul(item, if at.is_empty() { "body" } else { at }))
        }
        _ => Ok(()),
    }
}

/// A request body's fields (see [`read_body`]); files are not taken here.
async fn body_json(body: Option<&HttpBody>) -> Result<Value> {
    Ok(read_body(body).await?.0)
}

/// The media type of a Content-Type header, lowercased, without parameters.
fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Multipart form data (already whole in memory: the edge caps a request's size): its text
/// fields nested as a form's, its file parts as uploads.
async fn multipart(content_type: &str, data: &[u8]) -> Result<(Value, Vec<Upload>)> {
    let malformed = |_| Error::invalid("body", "is not well-formed multipart/form-data");
    let boundary = multer::parse_boundary(content_type).map_err(malformed)?;
    let stream = tokio_stream::once(Ok::<_, std::convert::Infallible>(bytes::Bytes::copy_from_slice(data)));
    let mut form = multer::Multipart::new(stream, boundary);
    let (mut fields, mut files) = (Vec::new(), Vec::new());
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        match field.file_name().map(str::to_owned) {
            Some(file_name) => {
                let content_type = field.content_type().map(|m| m.to_string()).unwrap_or_default();
                let data = field.bytes().await.map_err(malformed)?;
                files.push(Upload { file_name, content_type, data });
            }
            None => fields.push((name, field.text().await.map_err(malformed)?)),
        }
    }
    Ok((nested(fields), files))
}

/// Form fields as the JSON object Rails would make of them: `a=1` a string, `a[b]=1` a field of
/// object `a`, `a[]=1` an element of array `a` (one level deep, which is all Chatwoot's public
/// API takes). A later plain value replaces an earlier one, as in Rails.
fn nested(pairs: impl IntoIterator<Item = (String, String)>) -> Value {
    let mut out = serde_json::Map::new();
    for (key, value) in pairs {
        let value = Value::String(value);
        let (name, sub) = match key.split_once('[') {
            Some((name, rest)) if rest.ends_with(']') => (name, Some(&rest[..rest.len() - 1])),
            _ => (key.as_str(), None),
        };
        match sub {
            None => {
                out.insert(name.to_owned(), value);
            }
            Some("") => match out.entry(name).or_insert_with(|| json!([])) {
                Value::Array(list) => list.push(value),
                other => *other = json!([value]),
            },
            Some(field) => match out.entry(name).or_insert_with(|| json!({})) {
                Value::Object(map) => {
                    map.insert(field.to_owned(), value);
                }
                other => *other = json!({ field: value }),
            },
        }
    }
    Value::Object(out)
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
        custom_attributes: body["custom_attributes"].clone(),
    }
}

/// Stored custom attributes (a JSON object as text) as JSON; none stored is `{}`.
fn attributes_json(stored: Option<&str>) -> Value {
    stored.and_then(|s| serde_json::from_str(s).ok()).filter(Value::is_object).unwrap_or_else(|| json!({}))
}

/// A conversation or message id from a Chatwoot path: anything but the digits of an id Omega
/// could have issued is no such resource (Chatwoot's 404), not a bad request.
fn path_id(what: &str, id: &str) -> Result<i64> {
    Some(id)
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|id| id.parse::<u32>().ok())
        .filter(|id| *id > 0)
        .map(i64::from)
        .ok_or_else(|| Error::NotFound(what.into()))
}

/// Chatwoot's contact JSON (its public client API's `contact`): the client's record once the contact proved
/// who it is, its own claims until then.
pub(super) fn contact_json(chat: &ChatContact) -> Result<Value> {
    let client = chat.client();
    let (identifier, email, phone) = chat.shown_identity();
    Ok(json!({
        "id": wire_id(client.id)?,
        "name": client.name,
        "email": email,
        "phone_number": phone,
        "identifier": identifier,
        "blocked": false,
        "additional_attributes": {},
        "custom_attributes": attributes_json(client.custom_attributes.as_deref()),
        "contact_type": "visitor",
        "country_code": null,
        "last_activity_at": client.updated_at.to_rfc3339(),
        "created_at": client.created_at.to_rfc3339(),
        "updated_at": client.updated_at.to_rfc3339(),
        "last_name": null,
        "middle_name": null,
        "location": null,
        "account_id": wire_id(chat.business_id())?,
        "company_id": null,
        "label_list": [],
    }))
}

/// The contact as the create / get / update calls answer it: with its source id.
fn contact_with_source(chat: &ChatContact) -> Result<Value> {
    let mut value = contact_json(chat)?;
    value["source_id"] = json!(chat.source_id());
    value["pubsub_token"] = json!(chat.pubsub_token());
    Ok(value)
}

/// Where a contact's attachment files are served: `{prefix}{conversation_id}/attachments/{id}{query}`.
pub(super) struct Links {
    prefix: String,
    query: String,
}

impl Links {
    /// Links on Omega's configured public URL alone, for what is pushed without a request to
    /// take a host from (`/cable`); a strict inbox's hash is not in them (the widget adds the
    /// one it holds when it fetches).
    pub(super) fn on_public_url(public_url: Option<&str>, chat: &ChatContact) -> Links {
        let base = public_url.map(|b| b.trim_end_matches('/')).unwrap_or_default();
        Links {
            prefix: format!(
                "{base}/public/api/v1/inboxes/{}/contacts/{}/conversations/",
                chat.inbox_identifier(),
                chat.source_id()
            ),
            query: String::new(),
        }
    }

    fn file(&self, conversation_id: i64, attachment_id: i64) -> String {
        format!("{}{conversation_id}/attachments/{attachment_id}{}", self.prefix, self.query)
    }
}

/// Chatwoot's attachment JSON for one stored file.
fn attachment_json(links: &Links, m: &MessageView, a: &AttachmentSummary) -> Value {
    let extension = a.file_name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    let url = links.file(m.conversation_id, a.id);
    json!({
        "id": a.id, "message_id": m.id, "file_type": a.file_type, "account_id": m.business_id,
        "extension": extension, "data_url": url, "thumb_url": if a.file_type == "image" { url.as_str() } else { "" },
        "file_size": a.file_size, "width": a.width, "height": a.height, "content_type": a.content_type,
        "fallback_title": a.file_name, "coordinates_lat": 0, "coordinates_long": 0, "meta": {}, "transcribed_text": "",
    })
}

/// Chatwoot's message JSON: `message_type` 0 for the contact's messages, 1 for staff/outgoing.
pub(super) fn message_json(
    chat: &ChatContact,
    staff: &HashMap<i64, String>,
    links: &Links,
    m: &MessageView,
) -> Result<Value> {
    let client = chat.client();
    let incoming = m.direction == Direction::Inbound;
    let sender = if incoming {
        let mut contact = contact_json(chat)?;
        contact["type"] = json!("contact");
        contact["available_name"] = json!(client.name);
        contact["avatar_url"] = json!("");
        contact["thumbnail"] = json!("");
        contact
    } else {
        staff_json(m.sender_staff_id, m.sender_staff_id.and_then(|id| staff.get(&id).cloned()))?
    };
    let mut attachments: Vec<Value> = m.attachments.iter().map(|a| attachment_json(links, m, a)).collect();
    // MMS media are links to the provider's copies (not in Omega's store): shown as they are.
    let media = &m.media_urls;
    attachments.extend(media.iter().enumerate().map(|(i, url)| {
        let extension = url.rsplit('.').next().filter(|e| e.len() <= 5 && !e.contains('/')).unwrap_or_default();
        let image = ["jpg", "jpeg", "png", "gif", "webp"].contains(&extension.to_ascii_lowercase().as_str());
        json!({
            "id": i + 1, "message_id": m.id, "file_type": if image { "image" } else { "file" },
            "account_id": m.business_id, "extension": extension, "data_url": url, "thumb_url": url,
            "file_size": 0, "width": null, "height": null, "coordinates_lat": 0, "coordinates_long": 0,
            "fallback_title": null, "meta": {}, "transcribed_text": "",
        })
    }));
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
pub(super) fn conversation_uuid(c: &ConversationView) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("omega-conversation-{}-{}", c.business_id, c.id).as_bytes())
        .to_string()
}

impl ChatApi {
    async fn staff_names(&self, chat: &ChatContact, messages: &[MessageView]) -> Result<HashMap<i64, String>> {
        let mut ids: Vec<i64> = messages.iter().filter_map(|m| m.sender_staff_id).collect();
        ids.sort_unstable();
        ids.dedup();
        self.omega.chat_staff_names(chat, &ids).await
    }

    /// Where this contact's files are served: absolute URLs (a widget shows them from its own
    /// page's origin), on Omega's configured public URL or the host and scheme Envoy forwards.
    /// On an hmac_mandatory inbox the links carry the hash the call presented.
    fn links(&self, metadata: &MetadataMap, chat: &ChatContact, hash: Option<&str>) -> Links {
        let header = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
        let base = match &self.omega.webhooks.public_url {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None => match header("x-forwarded-host") {
                Some(host) => format!("{}://{host}", header("x-forwarded-proto").unwrap_or("http")),
                None => String::new(),
            },
        };
        let prefix = format!(
            "{base}/public/api/v1/inboxes/{}/contacts/{}/conversations/",
            chat.inbox_identifier(),
            chat.source_id()
        );
        let query = match hash.filter(|_| chat.hmac_mandatory()) {
            Some(hash) => {
                format!("?identifier_hash={}", form_urlencoded::byte_serialize(hash.as_bytes()).collect::<String>())
            }
            None => String::new(),
        };
        Links { prefix, query }
    }

    async fn render_messages(&self, chat: &ChatContact, links: &Links, messages: &[MessageView]) -> Result<Value> {
        let staff = self.staff_names(chat, messages).await?;
        Ok(Value::Array(messages.iter().map(|m| message_json(chat, &staff, links, m)).collect::<Result<_>>()?))
    }

    /// Chatwoot's conversation JSON (its public client API), with its messages and contact.
    async fn conversation_json(&self, chat: &ChatContact, links: &Links, c: &ConversationView) -> Result<Value> {
        let messages = self.omega.chat_messages(c, MessagePage::Latest).await?;
        Ok(json!({
            "id": wire_id(c.id)?,
            "uuid": conversation_uuid(c),
            "inbox_id": wire_id(chat.inbox_id())?,
            "contact_last_seen_at": c.contact_last_seen_at.map_or(0, |t| t.timestamp()),
            "status": c.status.as_str().to_ascii_lowercase(),
            "agent_last_seen_at": c.agent_last_seen_at.map_or(0, |t| t.timestamp()),
            "messages": self.render_messages(chat, links, &messages).await?,
            "contact": contact_json(chat)?,
            "custom_attributes": attributes_json(c.custom_attributes.as_deref()),
        }))
    }

    async fn conversation_of(
        &self,
        inbox: &str,
        contact: &str,
        id: &str,
        identifier_hash: Option<&str>,
    ) -> Result<(ChatContact, ConversationView)> {
        let chat = self.omega.chat_contact(inbox, contact, identifier_hash).await?;
        let conversation = self.omega.chat_conversation(&chat, path_id("conversation", id)?).await?;
        Ok((chat, conversation))
    }
}

/// The identifier hash a call carries: its query parameter, or its JSON body's field.
fn presented_hash<'a>(query: &'a str, body: Option<&'a Value>) -> Option<&'a str> {
    Some(query.trim()).filter(|h| !h.is_empty()).or_else(|| body.and_then(|b| b["identifier_hash"].as_str()))
}

/// Percent-encodes a file name for `filename*=UTF-8''…` (RFC 8187): all but unreserved bytes.
fn header_file_name(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A stored file as the answer: its checked content type, never sniffed by a browser; media
/// shown inline, anything else downloaded rather than opened on Omega's origin.
fn file_response(attachment: &AttachmentView, data: bytes::Bytes) -> Result<Response<HttpBody>> {
    let mut response = Response::new(HttpBody {
        content_type: attachment.content_type.clone(),
        data: data.to_vec(),
        extensions: Vec::new(),
    });
    let disposition = if attachment.file_type == "file" { "attachment" } else { "inline" };
    let disposition = format!("{disposition}; filename*=UTF-8''{}", header_file_name(&attachment.file_name));
    let metadata = response.metadata_mut();
    let value = |v: &str| MetadataValue::try_from(v).map_err(|e| Error::Internal(anyhow::anyhow!("header value: {e}")));
    metadata.insert("content-disposition", value(&disposition)?);
    metadata.insert("x-content-type-options", value("nosniff")?);
    metadata.insert("cache-control", value("private, max-age=86400")?);
    Ok(response)
}

#[tonic::async_trait]
impl ChatService for ChatApi {
    async fn get_inbox(&self, request: Request<GetChatInboxRequest>) -> Result<Response<HttpBody>, Status> {
        let (inbox, time_zone) = self.omega.chat_inbox(&request.get_ref().inbox_identifier).await?;
        // Chatwoot's public inbox: Omega keeps no working hours, CSAT survey or greeting for a
        // web-chat inbox, so those answer as switched off.
        Ok(json_response(json!({
            "identifier": inbox.identifier,
            "identity_validation_enabled": inbox.hmac_mandatory,
            "name": inbox.name,
            "timezone": time_zone,
            "working_hours": [],
            "working_hours_enabled": false,
            "csat_survey_enabled": false,
            "default_reply_action": null,
            "greeting_enabled": false,
        })))
    }

    async fn create_contact(&self, request: Request<CreateChatContactRequest>) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let body = body_json(r.body.as_ref()).await?;
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
        let body = body_json(r.body.as_ref()).await?;
        let chat =
            self.omega.update_chat_contact(&r.inbox_identifier, &r.contact_identifier, contact_input(&body)).await?;
        Ok(json_response(contact_with_source(&chat)?))
    }

    async fn create_conversation(
        &self,
        request: Request<CreateChatConversationRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let (metadata, _, r) = request.into_parts();
        let body = body_json(r.body.as_ref()).await?;
        let hash = presented_hash(&r.identifier_hash, Some(&body));
        let chat = self.omega.chat_contact(&r.inbox_identifier, &r.contact_identifier, hash).await?;
        let conversation = self.omega.create_chat_conversation(&chat, &body["custom_attributes"]).await?;
        let links = self.links(&metadata, &chat, hash);
        Ok(json_response(self.conversation_json(&chat, &links, &conversation).await?))
    }

    async fn list_conversations(
        &self,
        request: Request<ListChatConversationsRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let (metadata, _, r) = request.into_parts();
        let hash = presented_hash(&r.identifier_hash, None);
        let chat = self.omega.chat_contact(&r.inbox_identifier, &r.contact_identifier, hash).await?;
        let links = self.links(&metadata, &chat, hash);
        let mut list = Vec::new();
        for conversation in self.omega.chat_conversations(&chat).await? {
            list.push(self.conversation_json(&chat, &links, &conversation).await?);
        }
        Ok(json_response(Value::Array(list)))
    }

    async fn get_conversation(
        &self,
        request: Request<GetChatConversationRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let (metadata, _, r) = request.into_parts();
        let hash = presented_hash(&r.identifier_hash, None);
        let (chat, conversation) =
            self.conversation_of(&r.inbox_identifier, &r.contact_identifier, &r.conversation_id, hash).await?;
        let links = self.links(&metadata, &chat, hash);
        Ok(json_response(self.conversation_json(&chat, &links, &conversation).await?))
    }

    async fn toggle_status(&self, request: Request<ToggleChatStatusRequest>) -> Result<Response<HttpBody>, Status> {
        let (metadata, _, r) = request.into_parts();
        let body = body_json(r.body.as_ref()).await?;
        let hash = presented_hash(&r.identifier_hash, Some(&body));
        let (chat, conversation) =
            self.conversation_of(&r.inbox_identifier, &r.contact_identifier, &r.conversation_id, hash).await?;
        let conversation = self.omega.toggle_chat_status(&chat, &conversation).await?;
        let links = self.links(&metadata, &chat, hash);
        Ok(json_response(self.conversation_json(&chat, &links, &conversation).await?))
    }

    async fn toggle_typing(&self, request: Request<ToggleChatTypingRequest>) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let body = body_json(r.body.as_ref()).await?;
        let hash = presented_hash(&r.identifier_hash, Some(&body));
        let (chat, conversation) =
            self.conversation_of(&r.inbox_identifier, &r.contact_identifier, &r.conversation_id, hash).await?;
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
        let body = body_json(r.body.as_ref()).await?;
        let hash = presented_hash(&r.identifier_hash, Some(&body));
        let (_, conversation) =
            self.conversation_of(&r.inbox_identifier, &r.contact_identifier, &r.conversation_id, hash).await?;
        self.omega.chat_seen(&conversation).await?;
        Ok(json_response(json!({})))
    }

    async fn list_messages(&self, request: Request<ListChatMessagesRequest>) -> Result<Response<HttpBody>, Status> {
        let (metadata, _, r) = request.into_parts();
        let hash = presented_hash(&r.identifier_hash, None);
        let (chat, conversation) =
            self.conversation_of(&r.inbox_identifier, &r.contact_identifier, &r.conversation_id, hash).await?;
        let page = match (r.before.map(|b| required_id("before", b)), r.after.map(|a| required_id("after", a))) {
            (None, None) => MessagePage::Latest,
            (Some(before), None) => MessagePage::Before(before?),
            (None, Some(after)) => MessagePage::After(after?),
            (Some(before), Some(after)) => MessagePage::Between { after: after?, before: before? },
        };
        let messages = self.omega.chat_messages(&conversation, page).await?;
        let links = self.links(&metadata, &chat, hash);
        Ok(json_response(self.render_messages(&chat, &links, &messages).await?))
    }

    async fn create_message(&self, request: Request<CreateChatMessageRequest>) -> Result<Response<HttpBody>, Status> {
        let (metadata, _, r) = request.into_parts();
        let (body, uploads) = read_body(r.body.as_ref()).await?;
        let hash = presented_hash(&r.identifier_hash, Some(&body));
        let (chat, conversation) =
            self.conversation_of(&r.inbox_identifier, &r.contact_identifier, &r.conversation_id, hash).await?;
        let content = text(&body, "content").unwrap_or_default();
        let message =
            self.omega.create_chat_message(&chat, &conversation, &content, text(&body, "echo_id"), uploads).await?;
        let links = self.links(&metadata, &chat, hash);
        Ok(json_response(message_json(&chat, &HashMap::new(), &links, &message)?))
    }

    async fn get_attachment(&self, request: Request<GetChatAttachmentRequest>) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let hash = presented_hash(&r.identifier_hash, None);
        let (chat, conversation) =
            self.conversation_of(&r.inbox_identifier, &r.contact_identifier, &r.conversation_id, hash).await?;
        let id = path_id("attachment", &r.attachment_id)?;
        let (attachment, data) = self.omega.attachments.chat_attachment(&chat, &conversation, id).await?;
        Ok(file_response(&attachment, data)?)
    }

    async fn update_message(&self, request: Request<UpdateChatMessageRequest>) -> Result<Response<HttpBody>, Status> {
        let (metadata, _, r) = request.into_parts();
        let body = body_json(r.body.as_ref()).await?;
        let hash = presented_hash(&r.identifier_hash, Some(&body));
        let (chat, conversation) =
            self.conversation_of(&r.inbox_identifier, &r.contact_identifier, &r.conversation_id, hash).await?;
        let attributes = match &body["submitted_values"] {
            Value::Null => body["content_attributes"].clone(),
            values => json!({ "submitted_values": values }),
        };
        if !attributes.is_object() {
            return Err(Error::invalid("submitted_values", "is required").into());
        }
        let message =
            self.omega.update_chat_message(&conversation, path_id("message", &r.message_id)?, attributes).await?;
        let staff = self.staff_names(&chat, std::slice::from_ref(&message)).await?;
        let links = self.links(&metadata, &chat, hash);
        Ok(json_response(message_json(&chat, &staff, &links, &message)?))
    }
}

#[tonic::async_trait]
impl AttachmentService for ChatApi {
    async fn get_attachment(&self, request: Request<GetAttachmentRequest>) -> Result<Response<HttpBody>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let (business_id, id) =
            (required_id("business_id", r.business_id)?, required_id("attachment_id", r.attachment_id)?);
        let (attachment, data) = self.omega.attachments.attachment(&caller, business_id, id).await?;
        Ok(file_response(&attachment, data)?)
    }
}

fn encode_inbox(inbox: InboxView) -> Result<Inbox> {
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

/// A staff member as Chatwoot shows an agent ("Staff" when the name is unknown).
pub(super) fn staff_json(id: Option<i64>, name: Option<String>) -> Result<Value> {
    let name = name.unwrap_or_else(|| "Staff".into());
    Ok(json!({
        "id": id.map(wire_id).transpose()?,
        "name": name,
        "available_name": name,
        "avatar_url": "",
        "thumbnail": "",
        "type": "user",
        "availability_status": "online",
    }))
}
