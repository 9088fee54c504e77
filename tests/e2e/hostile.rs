//! Hostile input through the real Envoy: NUL characters and bytes that are not UTF-8, in bodies,
//! queries and chat JSON, are a 422 naming the field on both databases — never a 500, never
//! internals in the answer — and nothing is written.

use crate::common;

use common::{Db, spawn_app};
use serde_json::{Value, json};

both_databases!(nul_characters_are_refused_everywhere, bytes_that_are_not_utf8_are_refused, oversize_chat_is_refused);

/// Asserts a 422 JSON answer whose text names `field`, and no internals.
async fn refused(resp: reqwest::Response, field: &str) {
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 422, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert!(json.to_string().contains(field), "the answer names {field}: {body}");
    assert!(!body.contains("Protobuf") && !body.contains("decode"), "internals leaked: {body}");
}

/// A web-chat inbox of `b`: its public identifier.
async fn chat_inbox(app: &common::TestApp, b: &common::TestBusiness) -> String {
    let resp = app.post(&format!("/omega/businesses/{}/inboxes", b.id), &b.key, Some(json!({ "name": "Chat" }))).await;
    resp.json::<Value>().await.unwrap()["inbox"]["inbox_identifier"].as_str().unwrap().to_owned()
}

async fn count(app: &common::TestApp, table: &str) -> i64 {
    let row = app.sql(&format!("SELECT COUNT(*) AS n FROM {table}"), vec![]).await.unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

async fn nul_characters_are_refused_everywhere(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let client = app.upsert_client(&b, json!({ "name": "Carla", "phone": "+14155550199" })).await;
    let conversation = app.conversation(&b, client).await;
    let (clients, messages) = (count(&app, "clients").await, count(&app, "messages").await);

    let note = json!({ "content": "door code\u{0}4512", "sent_by": b.staff_ids[0], "sender_type": "staff" });
    let path = format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/note", b.id);
    refused(app.post(&path, &b.key, Some(note)).await, "content").await;
    let upsert = json!({ "name": "Dan", "phone": "+14155550123", "external_ref": "x\u{0}y" });
    refused(app.post(&format!("/omega/businesses/{}/clients", b.id), &b.key, Some(upsert)).await, "external_ref").await;
    // A message naming a new client: neither the message nor the client is written.
    let message = json!({ "business_id": b.id, "channel": "SMS", "direction": "INBOUND",
                          "client": { "phone": "+14155550177", "name": "New" }, "content": "hi\u{0}" });
    refused(app.post("/omega/messages", &b.key, Some(message)).await, "content").await;
    refused(app.get(&format!("/omega/businesses/{}/clients?query=a%00b", b.id), &b.key).await, "query").await;
    let search = format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/messages/search", b.id);
    refused(app.get(&format!("{search}?q=a%00b"), &b.key).await, "q").await;
    refused(app.post("/omega/api-keys", &app.platform_key, Some(json!({ "label": "a\u{0}" }))).await, "label").await;

    // Web chat: unauthenticated JSON bodies.
    let inbox = chat_inbox(&app, &b).await;
    let public = |rest: &str| app.rest(&format!("/public/api/v1/inboxes/{inbox}{rest}"));
    let post = |url: String, body: Value| {
        app.http.post(url).header("content-type", "application/json").body(body.to_string()).send()
    };
    refused(post(public("/contacts"), json!({ "name": "Mal\u{0}lory" })).await.unwrap(), "name").await;
    let contact: Value = post(public("/contacts"), json!({ "name": "Guest" })).await.unwrap().json().await.unwrap();
    let source = contact["source_id"].as_str().unwrap();
    let chat: Value =
        post(public(&format!("/contacts/{source}/conversations")), json!({})).await.unwrap().json().await.unwrap();
    let chat_messages = public(&format!("/contacts/{source}/conversations/{}/messages", chat["id"]));
    refused(post(chat_messages.clone(), json!({ "content": "a\u{0}b" })).await.unwrap(), "content").await;

    assert_eq!(count(&app, "clients").await, clients + 1, "only the chat visitor was added");
    assert_eq!(count(&app, "messages").await, messages, "nothing half-written");
}

async fn bytes_that_are_not_utf8_are_refused(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let client = app.upsert_client(&b, json!({ "name": "Carla", "phone": "+14155550199" })).await;
    let conversation = app.conversation(&b, client).await;
    refused(app.get(&format!("/omega/businesses/{}/clients?query=%FF%FE", b.id), &b.key).await, "query").await;
    let search = format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/messages/search", b.id);
    refused(app.get(&format!("{search}?q=%C0%AF"), &b.key).await, "q").await;
    refused(app.get(&format!("/omega/businesses/{}/conversations?query=%C3%28", b.id), &b.key).await, "query").await;
}

async fn oversize_chat_is_refused(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let inbox = chat_inbox(&app, &b).await;
    let public = |rest: &str| app.rest(&format!("/public/api/v1/inboxes/{inbox}{rest}"));
    let post = |url: String, body: Value| {
        app.http.post(url).header("content-type", "application/json").body(body.to_string()).send()
    };
    let contact: Value = post(public("/contacts"), json!({})).await.unwrap().json().await.unwrap();
    let source = contact["source_id"].as_str().unwrap();
    let chat: Value =
        post(public(&format!("/contacts/{source}/conversations")), json!({})).await.unwrap().json().await.unwrap();
    let messages = public(&format!("/contacts/{source}/conversations/{}/messages", chat["id"]));
    refused(post(messages.clone(), json!({ "content": "x".repeat(150_001) })).await.unwrap(), "content").await;
    // A page of the longest messages allowed still reaches the widget (over a megabyte).
    for _ in 0..8 {
        let ok = post(messages.clone(), json!({ "content": "x".repeat(150_000) })).await.unwrap();
        assert_eq!(ok.status(), 200);
    }
    let listed = app.http.get(&messages).send().await.unwrap();
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 8);
    let conversation =
        app.http.get(public(&format!("/contacts/{source}/conversations/{}", chat["id"]))).send().await.unwrap();
    assert_eq!(conversation.status(), 200);
    // A request over the message limit is a 413 JSON answer, not a 400 from deep inside.
    let huge = post(messages.clone(), json!({ "content": "y".repeat(5 * 1024 * 1024) })).await.unwrap();
    let status = huge.status().as_u16();
    let body = huge.text().await.unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(serde_json::from_str::<Value>(&body).is_ok(), "not JSON: {body}");
}
