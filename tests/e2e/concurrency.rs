//! Writes that meet: notes, message ingest, status changes, chat messages, typing and last-seen,
//! client and staff upserts, 32 at a time, through Envoy. Two writes meeting is never a server
//! error (on SQLite every write, single or in a transaction, goes through the one writer, which
//! takes the write lock at `BEGIN IMMEDIATE`, and the read pool is read-only; PostgreSQL's rows
//! are locked per change).

use crate::common;

use common::{Db, spawn_app};
use serde_json::{Value, json};

both_databases!(mixed_concurrent_writers_never_fail);

async fn mixed_concurrent_writers_never_fail(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let mut conversations = Vec::new();
    for i in 0..8 {
        let client =
            app.upsert_client(&b, json!({ "name": format!("Client {i}"), "phone": format!("+1415555020{i}") })).await;
        conversations.push((client, app.conversation(&b, client).await));
    }
    let inbox: Value = app
        .post(&format!("/omega/businesses/{}/inboxes", b.id), &b.key, Some(json!({ "name": "Chat" })))
        .await
        .json()
        .await
        .unwrap();
    let identifier = inbox["inbox"]["inbox_identifier"].as_str().unwrap().to_owned();
    let public = |rest: &str| app.rest(&format!("/public/api/v1/inboxes/{identifier}{rest}"));
    let post_json = |url: String, body: Value| {
        app.http.post(url).header("content-type", "application/json").body(body.to_string()).send()
    };
    let contact: Value =
        post_json(public("/contacts"), json!({ "name": "Guest" })).await.unwrap().json().await.unwrap();
    let source = contact["source_id"].as_str().unwrap().to_owned();
    let chat: Value =
        post_json(public(&format!("/contacts/{source}/conversations")), json!({})).await.unwrap().json().await.unwrap();
    let chat_messages = public(&format!("/contacts/{source}/conversations/{}/messages", chat["id"]));

    const TOTAL: usize = 192;
    let statuses = ["PENDING", "OPEN"];
    let mut outcomes = Vec::new();
    for round in 0..TOTAL / 32 {
        let calls = (0..32).map(|j| {
            let i = round * 32 + j;
            let (client, conversation) = conversations[i % conversations.len()];
            let base = format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}", b.id);
            let (app, b, chat_messages) = (&app, &b, chat_messages.clone());
            async move {
                let resp = match i % 8 {
                    0 => {
                        let note = json!({ "content": format!("note {i}"), "sent_by": b.staff_ids[0], "sender_type": "staff" });
                        app.post(&format!("{base}/note"), &b.key, Some(note)).await
                    }
                    1 => {
                        let message = json!({ "business_id": b.id, "channel": "SMS", "direction": "INBOUND",
                                              "client": { "client_id": client }, "content": format!("text {i}"),
                                              "provider_message_id": format!("SM{i:032}") });
                        app.post("/omega/messages", &b.key, Some(message)).await
                    }
                    2 => app.post(&format!("{base}/status?status={}", statuses[(i / 4) % 2]), &b.key, None).await,
                    6 => {
                        let client = json!({ "name": format!("Client {i}"), "phone": format!("+1415555020{}", i % 8) });
                        app.post(&format!("/omega/businesses/{}/clients", b.id), &b.key, Some(client)).await
                    }
                    7 => {
                        let staff = json!({ "name": format!("Ana {i}"), "email": "ana@lotus.example" });
                        app.post(&format!("/omega/businesses/{}/staffs", b.id), &b.key, Some(staff)).await
                    }
                    4 | 5 => {
                        // Typing and last-seen: the widget's single writes beside the others.
                        let (path, body) = if i % 8 == 4 {
                            (chat_messages.replace("/messages", "/toggle_typing"), json!({ "typing_status": "on" }))
                        } else {
                            (chat_messages.replace("/messages", "/update_last_seen"), json!({}))
                        };
                        app.http
                            .post(path)
                            .header("content-type", "application/json")
                            .body(body.to_string())
                            .send()
                            .await
                            .unwrap()
                    }
                    _ => app
                        .http
                        .post(chat_messages)
                        .header("content-type", "application/json")
                        .body(json!({ "content": format!("chat {i}") }).to_string())
                        .send()
                        .await
                        .unwrap(),
                };
                let status = resp.status().as_u16();
                (i, status, resp.text().await.unwrap())
            }
        });
        outcomes.extend(futures_util::future::join_all(calls).await);
    }
    let failures: Vec<_> = outcomes
        .iter()
        // A status change that lost a race to another change of the same conversation is a 409
        // the caller retries; nothing else may fail.
        .filter(|(i, status, _)| !(*status == 200 || (i % 8 == 2 && *status == 409)))
        .collect();
    assert!(failures.is_empty(), "{} of {TOTAL} writes failed: {failures:?}", failures.len());
    let row = app.sql("SELECT COUNT(*) AS n FROM messages", vec![]).await.unwrap();
    // Notes, texts and chat messages: three of every eight calls stored one message.
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), (TOTAL * 3 / 8) as i64);
}
