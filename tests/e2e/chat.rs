//! The Chatwoot-compatible public client API through Envoy at /public/api/v1: its request and
//! response shapes, a whole widget conversation, notes never leaking, and
//! bad input.

use crate::common;

use crate::common::{chat_inbox as inbox, chat_path as public, json_of};
use common::{Db, TestApp, spawn_app};
use serde_json::{Value, json};

both_databases!(
    the_documented_request_answers_the_documented_shape,
    a_widget_conversation_end_to_end,
    notes_and_other_clients_never_leak,
    bad_input_is_refused_and_writes_nothing,
    identifier_hashes_are_verified_when_required,
    messages_page_as_chatwoot_pages_them,
);

async fn post_public(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.http
        .post(app.rest(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn contact(app: &TestApp, inbox: &Value, body: Value) -> Value {
    json_of(post_public(app, &public(inbox, "/contacts"), body).await, 200).await
}

async fn the_documented_request_answers_the_documented_shape(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let inbox = inbox(&app, &b, false).await;
    let contact = contact(&app, &inbox, json!({ "name": "Carla", "email": "carla@example.com" })).await;
    let source = contact["source_id"].as_str().unwrap().to_owned();
    // curl --request POST --url …/public/api/v1/inboxes/{inbox}/contacts/{contact}/conversations
    //      --header 'Content-Type: application/json' --data '{ "custom_attributes": {} }'
    let resp = app
        .http
        .post(app.rest(&public(&inbox, &format!("/contacts/{source}/conversations"))))
        .header("Content-Type", "application/json")
        .body("\n{\n  \"custom_attributes\": {}\n}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let conversation = json_of(resp, 200).await;
    assert!(conversation["id"].is_u64(), "{conversation}");
    assert_eq!(conversation["uuid"].as_str().unwrap().len(), 36);
    assert_eq!(conversation["inbox_id"], inbox["id"]);
    assert!(conversation["contact_last_seen_at"].is_i64());
    assert!(conversation["agent_last_seen_at"].is_i64());
    assert_eq!(conversation["status"], "open");
    assert!(conversation["messages"].as_array().unwrap().is_empty());
    let c = &conversation["contact"];
    for field in [
        "id",
        "name",
        "email",
        "phone_number",
        "identifier",
        "blocked",
        "additional_attributes",
        "custom_attributes",
        "contact_type",
        "country_code",
        "last_activity_at",
        "created_at",
        "updated_at",
        "last_name",
        "middle_name",
        "location",
        "account_id",
        "company_id",
        "label_list",
    ] {
        assert!(c.get(field).is_some(), "contact.{field} missing: {c}");
    }
    assert_eq!(c["email"], "carla@example.com");
    assert_eq!(c["blocked"], false);
    assert!(c["label_list"].is_array());
    // Chatwoot's message shape.
    let message = json_of(
        post_public(
            &app,
            &public(&inbox, &format!("/contacts/{source}/conversations/{}/messages", conversation["id"])),
            json!({ "content": "Hello!" }),
        )
        .await,
        200,
    )
    .await;
    for field in [
        "id",
        "content",
        "message_type",
        "content_type",
        "content_attributes",
        "created_at",
        "conversation_id",
        "attachments",
        "sender",
    ] {
        assert!(message.get(field).is_some(), "message.{field} missing: {message}");
    }
    assert_eq!(message["message_type"], 0);
    assert!(message["created_at"].is_i64());
    assert_eq!(message["sender"]["type"], "contact");
    assert_eq!(message["conversation_id"], conversation["id"]);
    // The same conversation again: one per contact.
    let again =
        json_of(post_public(&app, &public(&inbox, &format!("/contacts/{source}/conversations")), json!({})).await, 200)
            .await;
    assert_eq!(again["id"], conversation["id"]);
    assert_eq!(again["messages"].as_array().unwrap().len(), 1);
}

async fn a_widget_conversation_end_to_end(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let inbox = inbox(&app, &b, false).await;
    // The client already texts the studio; the business's site signs her identifier, so the
    // chat joins the same thread.
    let client = app
        .upsert_client(
            &b,
            json!({ "name": "Carla", "phone": "+14155550199", "email": "carla@example.com", "external_ref": "client-7" }),
        )
        .await;
    let hash = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(inbox["hmac_token"].as_str().unwrap().as_bytes()).unwrap();
        mac.update(b"client-7");
        hex::encode(mac.finalize().into_bytes())
    };
    let contact = contact(&app, &inbox, json!({ "identifier": "client-7", "identifier_hash": hash })).await;
    assert_eq!(contact["id"], client);
    let source = contact["source_id"].as_str().unwrap().to_owned();
    let got =
        json_of(app.http.get(app.rest(&public(&inbox, &format!("/contacts/{source}")))).send().await.unwrap(), 200)
            .await;
    assert_eq!(got["id"], client);
    let updated = app
        .http
        .patch(app.rest(&public(&inbox, &format!("/contacts/{source}"))))
        .header("content-type", "application/json")
        .body(json!({ "name": "Carla Diaz" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(updated, 200).await["name"], "Carla Diaz");

    let conversation =
        json_of(post_public(&app, &public(&inbox, &format!("/contacts/{source}/conversations")), json!({})).await, 200)
            .await;
    let id = conversation["id"].as_u64().unwrap();
    let messages = public(&inbox, &format!("/contacts/{source}/conversations/{id}/messages"));
    json_of(post_public(&app, &messages, json!({ "content": "Is the 6pm class full?", "echo_id": "e1" })).await, 200)
        .await;
    // Staff see it in their inbox as an unread CHAT message of the client's conversation.
    let profile = json_of(app.get(&format!("/omega/businesses/{}/clients/{client}", b.id), &b.key).await, 200).await;
    assert_eq!(profile["conversation"]["conversation_id"], id);
    assert_eq!(profile["conversation"]["unread_count"], 1);
    assert_eq!(profile["conversation"]["channels"], json!(["CHAT"]));
    // A staff reply on the chat channel comes back through the public API.
    let reply = json!({ "business_id": b.id, "channel": "CHAT", "direction": "OUTBOUND", "client": { "client_id": client },
                        "content": "Two spots left!", "sent_by": b.staff_ids[0] });
    json_of(app.post("/omega/messages", &b.key, Some(reply)).await, 200).await;
    let list = json_of(app.http.get(app.rest(&messages)).send().await.unwrap(), 200).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["content"], "Two spots left!");
    assert_eq!(list[1]["message_type"], 1);
    assert_eq!(list[1]["sender"]["type"], "user");
    assert_eq!(list[1]["sender"]["name"], "Ana");
    // Form answers on a message.
    let first_id = list[0]["id"].as_u64().unwrap();
    let patched = app
        .http
        .patch(app.rest(&format!("{messages}/{first_id}")))
        .header("content-type", "application/json")
        .body(json!({ "submitted_values": [{ "name": "size", "value": "M" }] }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(patched, 200).await["content_attributes"]["submitted_values"][0]["value"], "M");

    // Staff resolve; the contact sees it resolved. Toggling resolves (never reopens, as in
    // Chatwoot); starting a conversation again reopens it.
    let resolve = format!("/omega/businesses/{}/clients/{client}/conversations/{id}/status?status=RESOLVED", b.id);
    json_of(app.post(&resolve, &b.key, None).await, 200).await;
    let seen = json_of(
        app.http
            .get(app.rest(&public(&inbox, &format!("/contacts/{source}/conversations/{id}"))))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(seen["status"], "resolved");
    let toggle_path = public(&inbox, &format!("/contacts/{source}/conversations/{id}/toggle_status"));
    let toggle = || async { json_of(post_public(&app, &toggle_path, json!({})).await, 200).await };
    let toggled = toggle().await;
    assert_eq!(toggled["status"], "resolved");
    let again =
        json_of(post_public(&app, &public(&inbox, &format!("/contacts/{source}/conversations")), json!({})).await, 200)
            .await;
    assert_eq!(again["id"], id);
    assert_eq!(again["status"], "open");
    let toggled = toggle().await;
    assert_eq!(toggled["status"], "resolved");
    let toggled = toggle().await;
    assert_eq!(toggled["status"], "resolved", "a second toggle keeps it resolved");
    json_of(post_public(&app, &public(&inbox, &format!("/contacts/{source}/conversations")), json!({})).await, 200)
        .await;
    // Typing: the query parameter alone is enough; values Chatwoot ignores are a no-op.
    for query in ["typing_status=on", "typing_status=recording"] {
        let path = public(&inbox, &format!("/contacts/{source}/conversations/{id}/toggle_typing?{query}"));
        json_of(app.http.post(app.rest(&path)).send().await.unwrap(), 200).await;
    }
    json_of(
        post_public(
            &app,
            &public(&inbox, &format!("/contacts/{source}/conversations/{id}/toggle_typing")),
            json!({ "typing_status": "on" }),
        )
        .await,
        200,
    )
    .await;
    json_of(
        post_public(
            &app,
            &public(&inbox, &format!("/contacts/{source}/conversations/{id}/update_last_seen")),
            json!({}),
        )
        .await,
        200,
    )
    .await;
    let listed = json_of(
        app.http.get(app.rest(&public(&inbox, &format!("/contacts/{source}/conversations")))).send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0]["contact_last_seen_at"].as_i64().unwrap() > 0);
}

async fn notes_and_other_clients_never_leak(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let inbox = inbox(&app, &b, false).await;
    let carla = contact(&app, &inbox, json!({ "email": "carla@example.com" })).await;
    let dan = contact(&app, &inbox, json!({ "email": "dan@example.com" })).await;
    let (carla_source, dan_source) = (carla["source_id"].as_str().unwrap(), dan["source_id"].as_str().unwrap());
    let conversation = json_of(
        post_public(&app, &public(&inbox, &format!("/contacts/{carla_source}/conversations")), json!({})).await,
        200,
    )
    .await;
    let id = conversation["id"].as_u64().unwrap();
    let client = carla["id"].as_u64().unwrap();
    let note = json!({ "content": "SECRET: owes two classes", "sent_by": b.staff_ids[0], "sender_type": "staff" });
    json_of(
        app.post(&format!("/omega/businesses/{}/clients/{client}/conversations/{id}/note", b.id), &b.key, Some(note))
            .await,
        200,
    )
    .await;
    json_of(
        post_public(
            &app,
            &public(&inbox, &format!("/contacts/{carla_source}/conversations/{id}/messages")),
            json!({ "content": "hi" }),
        )
        .await,
        200,
    )
    .await;
    for path in [
        format!("/contacts/{carla_source}/conversations/{id}/messages"),
        format!("/contacts/{carla_source}/conversations/{id}"),
        format!("/contacts/{carla_source}/conversations"),
    ] {
        let body = app.http.get(app.rest(&public(&inbox, &path))).send().await.unwrap().text().await.unwrap();
        assert!(!body.contains("SECRET"), "{path}: {body}");
    }
    // Dan cannot read Carla's conversation.
    let resp = app
        .http
        .get(app.rest(&public(&inbox, &format!("/contacts/{dan_source}/conversations/{id}/messages"))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let dans = json_of(
        app.http.get(app.rest(&public(&inbox, &format!("/contacts/{dan_source}/conversations")))).send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(dans, json!([]));
}

async fn bad_input_is_refused_and_writes_nothing(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let (a, other) = (inbox(&app, &b, false).await, inbox(&app, &b, false).await);
    let contact = contact(&app, &a, json!({ "email": "carla@example.com" })).await;
    let source = contact["source_id"].as_str().unwrap();
    let conversation =
        json_of(post_public(&app, &public(&a, &format!("/contacts/{source}/conversations")), json!({})).await, 200)
            .await;
    let id = conversation["id"].as_u64().unwrap();
    // Unknown inbox, unknown contact, and a contact of inbox A used on inbox B: 404.
    assert_eq!(
        post_public(&app, &format!("/public/api/v1/inboxes/nope/contacts/{source}/conversations"), json!({}))
            .await
            .status(),
        404
    );
    assert_eq!(post_public(&app, &public(&a, "/contacts/nope/conversations"), json!({})).await.status(), 404);
    assert_eq!(
        post_public(&app, &public(&other, &format!("/contacts/{source}/conversations")), json!({})).await.status(),
        404
    );
    assert_eq!(
        app.http.get(app.rest(&public(&other, &format!("/contacts/{source}")))).send().await.unwrap().status(),
        404
    );
    // Empty content: 422, nothing stored.
    let messages = public(&a, &format!("/contacts/{source}/conversations/{id}/messages"));
    for body in [json!({ "content": "" }), json!({ "content": "   " }), json!({})] {
        assert_eq!(post_public(&app, &messages, body.clone()).await.status(), 422, "{body}");
    }
    let bad = app
        .http
        .post(app.rest(&messages))
        .header("content-type", "application/json")
        .body("[1,2]")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let invalid_email = post_public(&app, &public(&a, "/contacts"), json!({ "email": "not-an-email" })).await;
    assert_eq!(invalid_email.status(), 422);
    let list = json_of(app.http.get(app.rest(&messages)).send().await.unwrap(), 200).await;
    assert_eq!(list, json!([]));
}

async fn identifier_hashes_are_verified_when_required(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let inbox = inbox(&app, &b, true).await;
    let token = inbox["hmac_token"].as_str().unwrap();
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(b"user-42");
    let hash = hex::encode(mac.finalize().into_bytes());
    let ok = contact(&app, &inbox, json!({ "identifier": "user-42", "identifier_hash": hash, "name": "Carla" })).await;
    assert_eq!(ok["identifier"], "user-42");
    for body in [
        json!({ "identifier": "user-42", "identifier_hash": "00".repeat(32) }),
        json!({ "identifier": "user-43", "identifier_hash": hash }),
        json!({ "name": "no hash" }),
    ] {
        assert_eq!(post_public(&app, &public(&inbox, "/contacts"), body.clone()).await.status(), 401, "{body}");
    }
    let clients = json_of(app.get(&format!("/omega/businesses/{}/clients", b.id), &b.key).await, 200).await;
    assert_eq!(clients["total_size"], 1, "refused contacts were not created");
}

async fn messages_page_as_chatwoot_pages_them(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let inbox = inbox(&app, &b, false).await;
    let contact = contact(&app, &inbox, json!({ "name": "Guest" })).await;
    let source = contact["source_id"].as_str().unwrap().to_owned();
    let conversation =
        json_of(post_public(&app, &public(&inbox, &format!("/contacts/{source}/conversations")), json!({})).await, 200)
            .await;
    let messages = public(&inbox, &format!("/contacts/{source}/conversations/{}/messages", conversation["id"]));
    let mut ids = Vec::new();
    for i in 0..25 {
        let m = json_of(post_public(&app, &messages, json!({ "content": format!("m{i}") })).await, 200).await;
        ids.push(m["id"].as_u64().unwrap());
    }
    let list = |query: String| {
        let url = app.rest(&format!("{messages}{query}"));
        let http = app.http.clone();
        async move { json_of(http.get(url).send().await.unwrap(), 200).await }
    };
    let contents = |page: &Value| -> Vec<String> {
        page.as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap().to_owned()).collect()
    };
    // The latest 20, oldest first: the newest message is always there.
    let latest = list(String::new()).await;
    assert_eq!(contents(&latest), (5..25).map(|i| format!("m{i}")).collect::<Vec<_>>());
    let before = list(format!("?before={}", ids[5])).await;
    assert_eq!(contents(&before), (0..5).map(|i| format!("m{i}")).collect::<Vec<_>>());
    let after = list(format!("?after={}", ids[22])).await;
    assert_eq!(contents(&after), ["m23", "m24"]);
    let between = list(format!("?after={}&before={}", ids[3], ids[6])).await;
    assert_eq!(contents(&between), ["m3", "m4", "m5"]);
    // The conversation carries the latest page too.
    let got = json_of(
        app.http
            .get(app.rest(&public(&inbox, &format!("/contacts/{source}/conversations/{}", conversation["id"]))))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(got["messages"].as_array().unwrap().len(), 20);
    assert_eq!(got["messages"][19]["content"], "m24");
}
