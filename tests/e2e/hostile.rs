//! Hostile input through the real Envoy: NUL characters and bytes that are not UTF-8, in bodies,
//! queries and chat JSON, are a 422 naming the field on both databases — never a 500, never
//! internals in the answer — and nothing is written. Envoy's own refusals (a URL too long, a
//! path it cannot read, a method a path lacks) are the same JSON error shape, and caps on
//! stored text are 422s naming the field.

use crate::common;

use common::{Db, spawn_app};
use serde_json::{Value, json};

both_databases!(
    nul_characters_are_refused_everywhere,
    bytes_that_are_not_utf8_are_refused,
    oversize_chat_is_refused,
    envoy_refusals_are_json,
    a_single_value_is_not_a_list,
    email_text_is_capped,
);

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

/// Asserts an answer of `status` in the documented error shape: JSON `{"code": <gRPC code>,
/// "message": <a real message>}`. Answers the message.
async fn error_shape(resp: reqwest::Response, status: u16) -> String {
    let got = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = resp.text().await.unwrap();
    assert_eq!(got, status, "{body}");
    assert!(content_type.starts_with("application/json"), "{content_type}: {body}");
    let json: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert!(json["code"].is_u64(), "a numeric code: {body}");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(message.len() > 10, "a real message: {body}");
    message.to_owned()
}

async fn envoy_refusals_are_json(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let send = |method: &str, path: &str| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        app.http.request(method, app.rest(path)).header("x-api-key", &b.key).send()
    };
    // Over Envoy's 60 KiB of URL and headers: a 431 Envoy answers itself.
    let long = format!("/omega/businesses/{}/clients?query={}", b.id, "a".repeat(62_000));
    let message = error_shape(send("GET", &long).await.unwrap(), 431).await;
    assert!(message.contains("60 KiB"), "{message}");
    // Under it, but over hyper's default 16 KiB: Omega answers (this query is just long).
    let long = format!("/omega/businesses/{}/clients?query={}", b.id, "a".repeat(30_000));
    let resp = send("GET", &long).await.unwrap();
    assert!(resp.status().as_u16() == 200 || resp.status().as_u16() == 422, "{}", resp.status());
    // Undecodable paths.
    for path in ["/omega/health%00", &format!("/omega/businesses/{}%00/clients", b.id)] {
        let message = error_shape(send("GET", path).await.unwrap(), 400).await;
        assert!(message.contains("path_normalization_failed"), "{path}: {message}");
    }
    error_shape(send("GET", "/omega/%FF%FE").await.unwrap(), 404).await;
    // A known path with another method: 405 with the methods its bindings have.
    let resp = send("POST", "/omega/health").await.unwrap();
    assert_eq!(resp.headers()["allow"], "GET");
    error_shape(resp, 405).await;
    let resp = send("DELETE", &format!("/omega/businesses/{}/clients", b.id)).await.unwrap();
    assert_eq!(resp.headers()["allow"], "GET, POST");
    let message = error_shape(resp, 405).await;
    assert!(message.contains("DELETE"), "{message}");
    let resp = send("PUT", &format!("/omega/businesses/{}/clients/1", b.id)).await.unwrap();
    assert!(resp.headers()["allow"].to_str().unwrap().contains("GET"));
    error_shape(resp, 405).await;
    // Methods Envoy's codec refuses, and one it passes on to the edge.
    error_shape(send("QUERY", "/omega/health").await.unwrap(), 400).await;
    let query = app
        .http
        .request(reqwest::Method::from_bytes(b"QUERY").unwrap(), app.rest("/omega/health"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(query.headers()["allow"], "GET");
    error_shape(query, 405).await;
    // A body with lists is read whole at the edge, up to the same 4 MiB as any other.
    let queue = |content: usize| json!({ "business_id": b.id, "client_ids": [1], "content": "x".repeat(content) });
    let message = error_shape(app.post("/omega/sms/queue", &b.key, Some(queue(5 << 20))).await, 413).await;
    assert!(message.contains("4 MiB"), "{message}");
    refused(app.post("/omega/sms/queue", &b.key, Some(queue(2 << 20))).await, "content").await;
    // Unknown paths stay 404 JSON, and the right method still works.
    error_shape(send("GET", "/omega/nowhere").await.unwrap(), 404).await;
    assert_eq!(send("GET", "/omega/health").await.unwrap().status(), 200);
}

async fn a_single_value_is_not_a_list(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let client = app.upsert_client(&b, json!({ "name": "Carla", "phone": "+14155550199" })).await;
    let messages = count(&app, "messages").await;
    let queue = json!({ "business_id": b.id, "client_ids": client.to_string(), "content": "hi" });
    refused(app.post("/omega/sms/queue", &b.key, Some(queue)).await, "client_ids").await;
    let queue = json!({ "business_id": b.id, "clientIds": client, "content": "hi" });
    refused(app.post("/omega/sms/queue", &b.key, Some(queue)).await, "clientIds").await;
    // Nested: a location's phone numbers during onboarding.
    let onboard = json!({ "name": "Iris", "time_zone": "America/New_York",
                          "locations": [{ "name": "Main", "phone_numbers": "+14155550111" }] });
    refused(app.post("/omega/business/onboard", &app.platform_key, Some(onboard)).await, "phone_numbers").await;
    assert_eq!(count(&app, "businesses").await, 1, "nothing onboarded");
    // Text that merely looks like the key is content, and lists and null pass the edge (to a
    // business without an SMS provider, which the backend refuses as a conflict).
    let queue = json!({ "business_id": b.id, "client_ids": [client], "content": "\"client_ids\": 1" });
    let passed = app.post("/omega/sms/queue", &b.key, Some(queue)).await;
    assert_eq!(passed.status(), 409, "{}", passed.text().await.unwrap());
    let queue = json!({ "business_id": b.id, "client_id": client, "client_ids": null, "content": "again" });
    let passed = app.post("/omega/sms/queue", &b.key, Some(queue)).await;
    assert_eq!(passed.status(), 409, "{}", passed.text().await.unwrap());
    assert_eq!(count(&app, "messages").await, messages);
}

async fn email_text_is_capped(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let client = app.upsert_client(&b, json!({ "name": "Carla", "email": "carla@example.com" })).await;
    let messages = count(&app, "messages").await;
    let email = |subject: usize, content: usize, html: usize| {
        json!({ "business_id": b.id, "client_id": client, "subject": "s".repeat(subject),
                "content": "c".repeat(content), "html": "h".repeat(html) })
    };
    refused(app.post("/omega/email/queue", &b.key, Some(email(999, 10, 10))).await, "subject").await;
    refused(app.post("/omega/email/queue", &b.key, Some(email(10, 200_001, 10))).await, "content").await;
    refused(app.post("/omega/email/queue", &b.key, Some(email(10, 10, 1_000_001))).await, "html").await;
    // Recording one sent elsewhere has the same caps.
    let record = |content: usize, html: usize| {
        json!({ "business_id": b.id, "channel": "EMAIL", "direction": "INBOUND", "client": { "client_id": client },
                "subject": "Hello", "content": "c".repeat(content), "html": "h".repeat(html) })
    };
    refused(app.post("/omega/messages", &b.key, Some(record(200_001, 10))).await, "content").await;
    refused(app.post("/omega/messages", &b.key, Some(record(10, 1_000_001))).await, "html").await;
    assert_eq!(count(&app, "messages").await, messages, "nothing written");
    // At the caps it is stored, and a page of such messages stays under the proxy's limit:
    // the page stops at its byte budget and the next one holds the rest.
    for _ in 0..12 {
        assert_eq!(app.post("/omega/messages", &b.key, Some(record(200_000, 10))).await.status(), 200);
    }
    let conversation = app.conversation(&b, client).await;
    let path = format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/messages", b.id);
    let page: Value = app.get(&format!("{path}?page_size=200"), &b.key).await.json().await.unwrap();
    let first = page["messages"].as_array().unwrap().len();
    assert!((1..12).contains(&first), "a page within its budget: {first}");
    let token = page["next_page_token"].as_str().unwrap();
    let rest: Value = app.get(&format!("{path}?page_size=200&page_token={token}"), &b.key).await.json().await.unwrap();
    assert_eq!(first + rest["messages"].as_array().unwrap().len(), 12);
}
