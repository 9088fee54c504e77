//! Who a web-chat contact is. The inbox identifier is public, so an attacker can create contacts
//! at will: naming an existing client's email, phone or identifier must give the attacker a
//! contact of its own (never the client's thread), a visitor can never rewrite a client's phone,
//! email or reference, and only a valid identifier hash — or staff merging the visitor — joins a
//! contact to a client.

use crate::common;

use crate::common::json_of;
use common::{Db, TestApp, TestBusiness, spawn_app};
use serde_json::{Value, json};

both_databases!(
    a_visitor_naming_a_client_gets_a_contact_of_its_own,
    a_visitor_cannot_rewrite_a_client,
    a_proven_identifier_joins_the_clients_thread,
    mandatory_inboxes_want_the_hash_on_every_call,
    staff_merge_a_visitor_into_a_client,
);

const CARLA_PHONE: &str = "+14155550199";
const CARLA_EMAIL: &str = "carla@example.com";
const SMS_TEXT: &str = "Your lab results are ready, door code 4512";
const NOTE_TEXT: &str = "SECRET internal note";

struct Chat {
    app: TestApp,
    b: TestBusiness,
    inbox: Value,
    carla: u64,
    carla_conversation: u64,
}

/// A business whose client Carla already has a thread (an inbound SMS and an internal note), and
/// a web-chat inbox.
async fn setup(db: Db, hmac_mandatory: bool) -> Chat {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let carla = app
        .upsert_client(
            &b,
            json!({ "name": "Carla", "phone": CARLA_PHONE, "email": CARLA_EMAIL, "external_ref": "client-7" }),
        )
        .await;
    let carla_conversation = app.conversation(&b, carla).await;
    app.insert_inbound_message(&b, carla, carla_conversation, "SMS", SMS_TEXT).await;
    let note = json!({ "content": NOTE_TEXT, "sent_by": b.staff_ids[0], "sender_type": "staff" });
    let path = format!("/omega/businesses/{}/clients/{carla}/conversations/{carla_conversation}/note", b.id);
    json_of(app.post(&path, &b.key, Some(note)).await, 200).await;
    let body = json!({ "name": "Website chat", "location_id": b.location_ids[0], "hmac_mandatory": hmac_mandatory });
    let inbox = json_of(app.post(&format!("/omega/businesses/{}/inboxes", b.id), &b.key, Some(body)).await, 200).await
        ["inbox"]
        .clone();
    Chat { app, b, inbox, carla, carla_conversation }
}

impl Chat {
    fn public(&self, rest: &str) -> String {
        self.app.rest(&format!("/public/api/v1/inboxes/{}{rest}", self.inbox["inbox_identifier"].as_str().unwrap()))
    }

    async fn send(&self, method: reqwest::Method, rest: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = self.app.http.request(method, self.public(rest));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        request.send().await.unwrap()
    }

    async fn get(&self, rest: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, rest, None).await
    }

    async fn post(&self, rest: &str, body: Value) -> reqwest::Response {
        self.send(reqwest::Method::POST, rest, Some(body)).await
    }

    async fn patch(&self, rest: &str, body: Value) -> reqwest::Response {
        self.send(reqwest::Method::PATCH, rest, Some(body)).await
    }

    fn hash(&self, identifier: &str) -> String {
        use hmac::{Hmac, Mac};
        let token = self.inbox["hmac_token"].as_str().unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).unwrap();
        mac.update(identifier.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// What staff see of Carla's thread (notes included).
    async fn carla_thread(&self) -> String {
        let path = format!(
            "/omega/businesses/{}/clients/{}/conversations/{}/messages",
            self.b.id, self.carla, self.carla_conversation
        );
        let resp = self.app.get(&path, &self.b.key).await;
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }

    async fn client(&self, id: u64) -> reqwest::Response {
        self.app.get(&format!("/omega/businesses/{}/clients/{id}", self.b.id), &self.b.key).await
    }
}

fn source_of(contact: &Value) -> String {
    contact["source_id"].as_str().unwrap().to_owned()
}

async fn a_visitor_naming_a_client_gets_a_contact_of_its_own(db: Db) {
    let chat = setup(db, false).await;
    let mut sources = Vec::new();
    for claim in [
        json!({ "email": CARLA_EMAIL }),
        json!({ "phone_number": CARLA_PHONE }),
        json!({ "identifier": "client-7" }),
        json!({ "identifier": "client-7", "email": CARLA_EMAIL, "phone_number": CARLA_PHONE, "name": "Carla" }),
    ] {
        let contact = json_of(chat.post("/contacts", claim.clone()).await, 200).await;
        assert_ne!(contact["id"], chat.carla, "{claim} bound the visitor to Carla: {contact}");
        let source = source_of(&contact);
        let token = contact["pubsub_token"].as_str().unwrap();
        assert!(token.len() >= 24 && token != source, "pubsub_token must be its own secret: {contact}");
        // The visitor sees what it said about itself, and nothing of Carla's.
        for (field, given) in [("email", "email"), ("phone_number", "phone_number"), ("identifier", "identifier")] {
            if let Some(value) = claim.get(given) {
                assert_eq!(&contact[field], value, "{contact}");
            }
        }
        let listed = json_of(chat.get(&format!("/contacts/{source}/conversations")).await, 200).await;
        assert_eq!(listed, json!([]), "{claim}: the visitor saw a thread");
        let conversation = json_of(chat.post(&format!("/contacts/{source}/conversations"), json!({})).await, 200).await;
        let id = conversation["id"].as_u64().unwrap();
        assert_ne!(id, chat.carla_conversation, "{claim}: the visitor got Carla's conversation");
        let messages = format!("/contacts/{source}/conversations/{id}/messages");
        json_of(chat.post(&messages, json!({ "content": "it is me, Carla" })).await, 200).await;
        let shown = chat.get(&messages).await.text().await.unwrap();
        assert!(!shown.contains(SMS_TEXT) && !shown.contains(NOTE_TEXT), "{claim}: {shown}");
        // Carla's own conversation is not reachable with the visitor's source id either.
        let hers = chat.get(&format!("/contacts/{source}/conversations/{}/messages", chat.carla_conversation)).await;
        assert_eq!(hers.status(), 404);
        sources.push(source);
    }
    sources.sort();
    sources.dedup();
    assert_eq!(sources.len(), 4, "every contact create is a new contact");
    let thread = chat.carla_thread().await;
    assert!(!thread.contains("it is me, Carla"), "a visitor posted into Carla's thread: {thread}");
}

async fn a_visitor_cannot_rewrite_a_client(db: Db) {
    let chat = setup(db, false).await;
    let contact = json_of(chat.post("/contacts", json!({ "email": CARLA_EMAIL })).await, 200).await;
    let source = source_of(&contact);
    let patched = json_of(
        chat.patch(
            &format!("/contacts/{source}"),
            json!({ "name": "Mallory", "email": "mallory@evil.example", "phone_number": "+14155550666",
                    "identifier": "client-7" }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(patched["email"], "mallory@evil.example");
    assert_eq!(patched["name"], "Mallory");
    let carla = json_of(chat.client(chat.carla).await, 200).await;
    assert_eq!(carla["client"]["phone"], CARLA_PHONE, "{carla}");
    assert_eq!(carla["client"]["email"], CARLA_EMAIL, "{carla}");
    assert_eq!(carla["client"]["name"], "Carla", "{carla}");
    assert_eq!(carla["client"]["external_ref"], "client-7", "{carla}");
    // The visitor's claims are not put on any client record: texts to that phone, or an inbound
    // text from it, never reach the visitor.
    let visitor = json_of(chat.client(contact["id"].as_u64().unwrap()).await, 200).await;
    assert!(visitor["client"]["phone"].as_str().unwrap_or_default().is_empty(), "{visitor}");
    assert!(visitor["client"]["email"].as_str().unwrap_or_default().is_empty(), "{visitor}");
    // A wrong hash for Carla's identifier is refused and changes nothing.
    let forged = chat
        .patch(&format!("/contacts/{source}"), json!({ "identifier": "client-7", "identifier_hash": "ab".repeat(32) }))
        .await;
    assert_eq!(forged.status(), 401);
    let listed = json_of(chat.get(&format!("/contacts/{source}/conversations")).await, 200).await;
    assert_eq!(listed, json!([]));
}

async fn a_proven_identifier_joins_the_clients_thread(db: Db) {
    let chat = setup(db, false).await;
    // At create: the business's site signed Carla's identifier.
    let contact = json_of(
        chat.post("/contacts", json!({ "identifier": "client-7", "identifier_hash": chat.hash("client-7") })).await,
        200,
    )
    .await;
    assert_eq!(contact["id"], chat.carla);
    assert_eq!(contact["email"], CARLA_EMAIL);
    let source = source_of(&contact);
    let listed = json_of(chat.get(&format!("/contacts/{source}/conversations")).await, 200).await;
    assert_eq!(listed[0]["id"], chat.carla_conversation);
    let shown = listed.to_string();
    assert!(shown.contains(SMS_TEXT), "the proven client sees its thread: {shown}");
    assert!(!shown.contains(NOTE_TEXT), "notes never reach the widget: {shown}");
    let forged = chat.post("/contacts", json!({ "identifier": "client-7", "identifier_hash": "00".repeat(32) })).await;
    assert_eq!(forged.status(), 401);

    // Later: a visitor chats first, then proves who it is; its messages join Carla's thread.
    let visitor = json_of(chat.post("/contacts", json!({ "name": "Guest" })).await, 200).await;
    let (visitor_source, visitor_id) = (source_of(&visitor), visitor["id"].as_u64().unwrap());
    let conversation =
        json_of(chat.post(&format!("/contacts/{visitor_source}/conversations"), json!({})).await, 200).await;
    let messages = format!("/contacts/{visitor_source}/conversations/{}/messages", conversation["id"]);
    json_of(chat.post(&messages, json!({ "content": "before I logged in" })).await, 200).await;
    let proven = json_of(
        chat.patch(
            &format!("/contacts/{visitor_source}"),
            json!({ "identifier": "client-7", "identifier_hash": chat.hash("client-7") }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(proven["id"], chat.carla, "{proven}");
    assert!(chat.carla_thread().await.contains("before I logged in"));
    assert_eq!(chat.client(visitor_id).await.status(), 404, "the visitor record was merged away");
    let listed = json_of(chat.get(&format!("/contacts/{visitor_source}/conversations")).await, 200).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], chat.carla_conversation);
    // One conversation for Carla in the inbox: the visitor's was folded into hers.
    let inbox =
        json_of(chat.app.get(&format!("/omega/businesses/{}/conversations", chat.b.id), &chat.b.key).await, 200).await;
    assert_eq!(inbox["conversations"].as_array().unwrap().len(), 1, "{inbox}");
}

async fn mandatory_inboxes_want_the_hash_on_every_call(db: Db) {
    let chat = setup(db, true).await;
    let hash = chat.hash("client-7");
    let contact =
        json_of(chat.post("/contacts", json!({ "identifier": "client-7", "identifier_hash": hash })).await, 200).await;
    let source = source_of(&contact);
    let with = |rest: &str| format!("{rest}?identifier_hash={hash}");
    // Without the hash, every call is refused — reads included.
    for rest in [format!("/contacts/{source}"), format!("/contacts/{source}/conversations")] {
        assert_eq!(chat.get(&rest).await.status(), 401, "{rest}");
        assert_eq!(chat.get(&with(&rest)).await.status(), 200, "{rest}");
    }
    let conversation = format!("/contacts/{source}/conversations/{}", chat.carla_conversation);
    let messages = format!("{conversation}/messages");
    assert_eq!(chat.get(&messages).await.status(), 401);
    assert_eq!(chat.get(&format!("{messages}?identifier_hash={}", "00".repeat(32))).await.status(), 401);
    let shown = json_of(chat.get(&with(&messages)).await, 200).await.to_string();
    assert!(shown.contains(SMS_TEXT));
    assert_eq!(chat.post(&messages, json!({ "content": "no hash" })).await.status(), 401);
    json_of(chat.post(&messages, json!({ "content": "with hash", "identifier_hash": hash })).await, 200).await;
    assert_eq!(chat.post(&format!("{conversation}/toggle_status"), json!({})).await.status(), 401);
    assert_eq!(chat.patch(&format!("/contacts/{source}"), json!({ "name": "X" })).await.status(), 401);
    let thread = chat.carla_thread().await;
    assert!(!thread.contains("no hash") && thread.contains("with hash"), "{thread}");
}

async fn staff_merge_a_visitor_into_a_client(db: Db) {
    let chat = setup(db, false).await;
    let visitor = json_of(chat.post("/contacts", json!({ "name": "Guest", "email": CARLA_EMAIL })).await, 200).await;
    let (visitor_source, visitor_id) = (source_of(&visitor), visitor["id"].as_u64().unwrap());
    let conversation =
        json_of(chat.post(&format!("/contacts/{visitor_source}/conversations"), json!({})).await, 200).await;
    let messages = format!("/contacts/{visitor_source}/conversations/{}/messages", conversation["id"]);
    json_of(chat.post(&messages, json!({ "content": "this is Carla, from the website" })).await, 200).await;

    let merge = |client: u64, visitor: u64| {
        let path = format!("/omega/businesses/{}/clients/{client}/merge_visitor", chat.b.id);
        let body = json!({ "visitor_client_id": visitor });
        let key = chat.b.key.clone();
        let app = &chat.app;
        async move { app.post(&path, &key, Some(body)).await }
    };
    // Only a visitor record can be merged, and only by the business's own key.
    let dan = chat.app.upsert_client(&chat.b, json!({ "name": "Dan", "phone": "+14155550123" })).await;
    let refused = json_of(merge(dan, chat.carla).await, 422).await;
    assert!(refused.to_string().contains("visitor_client_id"), "{refused}");
    let other = chat.app.onboard_simple("other", "+14155550111").await;
    let cross = chat
        .app
        .post(
            &format!("/omega/businesses/{}/clients/{}/merge_visitor", chat.b.id, chat.carla),
            &other.key,
            Some(json!({ "visitor_client_id": visitor_id })),
        )
        .await;
    assert!([403, 404].contains(&cross.status().as_u16()), "another business's key: {}", cross.status());
    assert_eq!(chat.client(visitor_id).await.status(), 200, "the refused merge changed nothing");

    // Search follows the moved messages: Carla's thread finds the visitor's words only after.
    let search = || {
        let path = format!(
            "/omega/businesses/{}/clients/{}/conversations/{}/messages/search?q=website",
            chat.b.id, chat.carla, chat.carla_conversation
        );
        let (app, key) = (&chat.app, chat.b.key.clone());
        async move { json_of(app.get(&path, &key).await, 200).await["total_size"].clone() }
    };
    assert_eq!(search().await, 0);
    let merged = json_of(merge(chat.carla, visitor_id).await, 200).await;
    assert_eq!(merged["conversation_id"], chat.carla_conversation);
    assert_eq!(search().await, 1);
    let thread = chat.carla_thread().await;
    assert!(thread.contains("this is Carla, from the website"), "{thread}");
    assert_eq!(chat.client(visitor_id).await.status(), 404);
    // The widget's contact now sees Carla's thread (still never her notes).
    let contact = json_of(chat.get(&format!("/contacts/{visitor_source}")).await, 200).await;
    assert_eq!(contact["id"], chat.carla);
    let listed = json_of(chat.get(&format!("/contacts/{visitor_source}/conversations")).await, 200).await;
    let shown = listed.to_string();
    assert!(shown.contains(SMS_TEXT) && !shown.contains(NOTE_TEXT), "{shown}");
    // The inbox's counters hold one open conversation, not two.
    let filters =
        json_of(chat.app.get(&format!("/omega/businesses/{}/conversations", chat.b.id), &chat.b.key).await, 200).await;
    assert_eq!(filters["conversations"].as_array().unwrap().len(), 1, "{filters}");
    // Merging again is refused: the visitor is gone.
    assert_eq!(merge(chat.carla, visitor_id).await.status(), 422);
}
