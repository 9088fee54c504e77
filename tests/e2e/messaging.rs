//! Messages and their delivery, end to end: REST through Envoy into Omega, the durable outbox,
//! and fake Twilio / SendGrid / SMTP servers on loopback that check what the real ones check.

use crate::common;

use std::{collections::HashSet, time::Duration};

use common::{
    Db, TestApp, TestBusiness, eventually,
    fakes::{Behavior, FakeSendGrid, FakeTwilio, SmtpSink},
    spawn_app_with,
};
use serde_json::{Value, json};

both_databases!(
    a_queued_sms_reaches_twilio_once_and_callbacks_move_it_forward,
    bulk_queueing_shares_a_request_id_and_repeats_are_idempotent,
    bad_input_is_rejected_and_nothing_is_stored_or_sent,
    only_safe_failures_are_retried_and_retry_is_deliberate,
    pending_jobs_survive_a_crash_and_are_sent_once,
    emails_go_out_through_sendgrid_and_smtp,
    ingestion_finds_or_creates_the_client_and_reopens_the_conversation,
    recorded_messages_are_stored_and_never_sent,
    search_finds_ranks_and_highlights,
    search_beyond_a_thousand_matches_lists_newest_first,
    one_sender_is_paced_across_workers,
    retryable_failures_give_up_after_the_last_attempt,
);

/// An app whose Twilio is a fake, and a business with Twilio credentials and one consenting client.
async fn sms_setup(db: Db, env: &[(&str, &str)]) -> (TestApp, FakeTwilio, TestBusiness, u64) {
    let twilio = FakeTwilio::start().await;
    let base = twilio.base_url();
    let mut all_env = vec![("OMEGA_TWILIO_BASE_URL", base.as_str()), ("OMEGA_PUBLIC_URL", "https://omega.example")];
    all_env.extend_from_slice(env);
    let app = spawn_app_with(db, &all_env).await;
    let business = app.onboard_simple("lotus", "+14155550100").await;
    let resp = app
        .http
        .put(app.rest(&format!("/omega/businesses/{}/providers/twilio", business.id)))
        .header("x-api-key", &business.key)
        .json(&json!({ "account_sid": FakeTwilio::ACCOUNT_SID, "auth_token": FakeTwilio::AUTH_TOKEN }))
        .send()
        .await
        .unwrap();
    let settings = json_of(resp, 200).await;
    assert_eq!(settings["settings"]["twilio_account_sid"], FakeTwilio::ACCOUNT_SID);
    assert!(!settings.to_string().contains(FakeTwilio::AUTH_TOKEN), "secrets never come back");
    let client =
        app.upsert_client(&business, json!({ "name": "Carla", "phone": "+14155550199", "sms_consent": true })).await;
    (app, twilio, business, client)
}

async fn json_of(resp: reqwest::Response, status: u16) -> Value {
    let code = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!(code, status, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

async fn queue_sms(app: &TestApp, b: &TestBusiness, body: Value) -> reqwest::Response {
    let mut body = body;
    body["business_id"] = b.id.into();
    app.post("/omega/sms/queue", &b.key, Some(body)).await
}

async fn message(app: &TestApp, b: &TestBusiness, id: &str) -> Value {
    json_of(app.get(&format!("/omega/messages/{id}"), &b.key).await, 200).await
}

async fn wait_for_status(app: &TestApp, b: &TestBusiness, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        last = message(app, b, id).await;
        if last["message"]["status"] == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("message {id} never became {status}: {last}");
}

fn violated_field(body: &Value) -> &str {
    body["details"][0]["field_violations"][0]["field"].as_str().unwrap_or_default()
}

async fn a_queued_sms_reaches_twilio_once_and_callbacks_move_it_forward(db: Db) {
    let (app, twilio, b, client) = sms_setup(db, &[]).await;
    let queued =
        json_of(queue_sms(&app, &b, json!({ "client_id": client, "content": "See you at 6pm!" })).await, 200).await;
    let id = queued["messages"][0]["message_id"].as_str().unwrap().to_owned();
    assert_eq!(queued["messages"][0]["status"], "QUEUED");
    let request_id = queued["request_id"].as_str().unwrap().to_owned();
    assert_eq!(request_id.len(), 36, "a UUID request id: {queued}");

    let sent = wait_for_status(&app, &b, &id, "SENT").await;
    let sent_to_twilio = twilio.messages();
    assert_eq!(sent_to_twilio.len(), 1);
    let at_twilio = &sent_to_twilio[0];
    assert_eq!(at_twilio.to, "+14155550199");
    assert_eq!(at_twilio.from.as_deref(), Some("+14155550100"));
    assert_eq!(at_twilio.body, "See you at 6pm!");
    assert_eq!(at_twilio.status_callback.as_deref(), Some("https://omega.example/omega/twilio/sms/status"));
    let request = &twilio.requests()[0];
    assert!(request.authenticated);
    assert_eq!(request.path, format!("/2010-04-01/Accounts/{}/Messages.json", FakeTwilio::ACCOUNT_SID));
    assert_eq!(sent["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(sent["attempts"][0]["outcome"], "accepted");
    assert_eq!(sent["attempts"][0]["provider_message_id"], at_twilio.sid.as_str());

    // Status callbacks by Twilio's id: forward moves apply, late and repeated ones do not.
    let status = |s: &str| json!({ "provider_message_id": at_twilio.sid, "status": s });
    let delivered = json_of(app.post("/omega/sms/status", &b.key, Some(status("delivered"))).await, 200).await;
    assert_eq!(delivered["status"], "DELIVERED");
    assert_eq!(delivered["applied"], true);
    for late in ["sent", "queued", "delivered", "failed"] {
        let body = json_of(app.post("/omega/sms/status", &b.key, Some(status(late))).await, 200).await;
        assert_eq!(body["applied"], false, "{late}");
        assert_eq!(body["status"], "DELIVERED", "{late}");
    }
    let read =
        json_of(app.post("/omega/sms/status", &b.key, Some(json!({ "message_id": id, "status": "READ" }))).await, 200)
            .await;
    assert_eq!(read["status"], "READ");
    let bad = json_of(app.post("/omega/sms/status", &b.key, Some(status("teleported"))).await, 422).await;
    assert_eq!(violated_field(&bad), "status");
    json_of(app.post("/omega/email/status", &b.key, Some(status("delivered"))).await, 404).await;

    let by_request = json_of(app.get(&format!("/omega/messages/requests/{request_id}"), &b.key).await, 200).await;
    assert_eq!(by_request["messages"][0]["id"], id.as_str());
    assert_eq!(by_request["messages"][0]["status"], "READ");
    // The conversation shows it as its last message; the outbox sent it once.
    let profile = json_of(app.get(&format!("/omega/businesses/{}/clients/{client}", b.id), &b.key).await, 200).await;
    assert_eq!(profile["conversation"]["last_message"]["preview"], "See you at 6pm!");
    assert_eq!(profile["conversation"]["channels"], json!(["SMS"]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(twilio.requests().len(), 1);
}

async fn bulk_queueing_shares_a_request_id_and_repeats_are_idempotent(db: Db) {
    let (app, twilio, b, first) = sms_setup(db, &[]).await;
    let second = app.upsert_client(&b, json!({ "name": "Dan", "phone": "+14155550198", "sms_consent": true })).await;
    let third = app.upsert_client(&b, json!({ "name": "Eve", "phone": "+14155550197", "sms_consent": true })).await;
    let body = json!({ "client_ids": [first, second, third], "content": "Studio closed Monday", "idempotency_key": "closure-1" });
    let queued = json_of(queue_sms(&app, &b, body.clone()).await, 200).await;
    let ids: Vec<String> =
        queued["messages"].as_array().unwrap().iter().map(|m| m["message_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 3);
    let again = json_of(queue_sms(&app, &b, body).await, 200).await;
    assert_eq!(again["request_id"], queued["request_id"]);
    let again_ids: Vec<&str> =
        again["messages"].as_array().unwrap().iter().map(|m| m["message_id"].as_str().unwrap()).collect();
    assert_eq!(again_ids, ids.iter().map(String::as_str).collect::<Vec<_>>());
    for id in &ids {
        wait_for_status(&app, &b, id, "SENT").await;
    }
    let request = json_of(
        app.get(&format!("/omega/messages/requests/{}", queued["request_id"].as_str().unwrap()), &b.key).await,
        200,
    )
    .await;
    assert_eq!(request["messages"].as_array().unwrap().len(), 3);
    let recipients: HashSet<String> = twilio.messages().into_iter().map(|m| m.to).collect();
    assert_eq!(recipients.len(), 3);
    assert_eq!(twilio.messages().len(), 3, "each client texted once");
}

async fn bad_input_is_rejected_and_nothing_is_stored_or_sent(db: Db) {
    let (app, twilio, b, client) = sms_setup(db, &[]).await;
    let no_consent = app.upsert_client(&b, json!({ "name": "Stu", "phone": "+14155550190" })).await;
    let no_phone = app.upsert_client(&b, json!({ "name": "Ema", "email": "ema@x.example", "sms_consent": true })).await;
    for (body, field) in [
        (json!({ "client_id": client, "content": "" }), "content"),
        (json!({ "client_id": client, "content": "x".repeat(1601) }), "content"),
        (json!({ "content": "hi" }), "client_id"),
        (json!({ "client_id": client, "content": "hi", "media_urls": ["ftp://nope"] }), "media_urls[0]"),
        (json!({ "client_id": client, "content": "hi", "location_id": 999999 }), "location_id"),
        (json!({ "client_id": client, "content": "hi", "sent_by": 999999 }), "sent_by"),
    ] {
        let resp = json_of(queue_sms(&app, &b, body.clone()).await, 422).await;
        assert_eq!(violated_field(&resp), field, "{body}");
    }
    json_of(queue_sms(&app, &b, json!({ "client_id": 999999, "content": "hi" })).await, 404).await;
    for id in [no_consent, no_phone] {
        let resp =
            json_of(queue_sms(&app, &b, json!({ "client_ids": [client, id], "content": "hi" })).await, 409).await;
        assert_eq!(resp["code"], 9, "{resp}");
        assert!(resp["message"].as_str().unwrap().contains(&format!("client {id}")), "{resp}");
    }
    // Another business's key: 404, nothing written.
    let other = app.onboard_simple("other", "+14155550101").await;
    let mut body = json!({ "client_id": client, "content": "hi", "business_id": b.id });
    json_of(app.post("/omega/sms/queue", &other.key, Some(body.take())).await, 404).await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(twilio.requests().is_empty(), "nothing was sent");
    let path = format!("/omega/businesses/{}/conversations", b.id);
    let inbox = json_of(app.get(&path, &b.key).await, 200).await;
    assert_eq!(inbox["total_size"], 0, "not even a conversation was created: {inbox}");
}

async fn only_safe_failures_are_retried_and_retry_is_deliberate(db: Db) {
    let (app, twilio, b, client) = sms_setup(db, &[("OMEGA_PROVIDER_TIMEOUT_SECS", "1")]).await;
    let queue = |content: &str| {
        let body = json!({ "client_id": client, "content": content });
        let app = &app;
        let b = &b;
        async move {
            json_of(queue_sms(app, b, body).await, 200).await["messages"][0]["message_id"].as_str().unwrap().to_owned()
        }
    };

    // 429 (never processed) is retried: one message reaches the client.
    twilio.respond_next(Behavior::TooManyRequests);
    let id = queue("after a 429").await;
    let sent = wait_for_status(&app, &b, &id, "SENT").await;
    let outcomes: Vec<&str> =
        sent["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["retryable", "accepted"]);
    assert_eq!(twilio.messages().iter().filter(|m| m.body == "after a 429").count(), 1);

    // A rejection is final, with Twilio's code.
    twilio.respond_next(Behavior::Reject { code: 21211, status: 400 });
    let id = queue("to a bad number").await;
    let failed = wait_for_status(&app, &b, &id, "FAILED").await;
    assert_eq!(failed["message"]["error_code"], "21211");
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 1);

    // A timeout after the request went out is ambiguous: failed, not resent.
    twilio.respond_next(Behavior::Hang);
    let id = queue("maybe delivered").await;
    let failed = wait_for_status(&app, &b, &id, "FAILED").await;
    assert_eq!(failed["message"]["error_code"], "AMBIGUOUS");
    assert!(failed["message"]["error_message"].as_str().unwrap().contains("may have"), "{failed}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attempts_at_twilio = || twilio.requests().iter().filter(|r| r.field("Body") == Some("maybe delivered")).count();
    assert_eq!(attempts_at_twilio(), 1, "no blind resend");

    // Only a deliberate retry sends it again; its history is kept. Non-failed ones are left alone.
    let sent_ok = json_of(app.get(&format!("/omega/messages/requests/{}", "x"), &b.key).await, 404).await;
    assert_eq!(sent_ok["code"], 5);
    let retried =
        json_of(app.post("/omega/messages/retry", &b.key, Some(json!({ "message_ids": [id] }))).await, 200).await;
    assert_eq!(retried["retried"], json!([id]));
    let resent = wait_for_status(&app, &b, &id, "SENT").await;
    let outcomes: Vec<&str> =
        resent["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["ambiguous", "accepted"]);
    assert_eq!(attempts_at_twilio(), 2);
    let again =
        json_of(app.post("/omega/messages/retry", &b.key, Some(json!({ "message_ids": [id] }))).await, 200).await;
    assert_eq!(again["retried"], json!([]));
    assert_eq!(again["skipped"], 1);
    let bad =
        json_of(app.post("/omega/messages/retry", &b.key, Some(json!({ "since": "yesterday" }))).await, 422).await;
    assert_eq!(violated_field(&bad), "since");
}

async fn pending_jobs_survive_a_crash_and_are_sent_once(db: Db) {
    let (mut app, twilio, b, client) = sms_setup(db, &[("OMEGA_DELIVERY_WORKERS", "0")]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let queued = json_of(
            queue_sms(&app, &b, json!({ "client_id": client, "content": format!("queued before the crash {i}") }))
                .await,
            200,
        )
        .await;
        ids.push(queued["messages"][0]["message_id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(twilio.requests().is_empty(), "no worker ran yet");
    let base = twilio.base_url();
    app.restart(&[("OMEGA_TWILIO_BASE_URL", base.as_str()), ("OMEGA_DELIVERY_WORKERS", "3")]).await;
    for id in &ids {
        wait_for_status(&app, &b, id, "SENT").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bodies: Vec<String> = twilio.messages().into_iter().map(|m| m.body).collect();
    assert_eq!(bodies.len(), 5, "{bodies:?}");
    assert_eq!(bodies.iter().collect::<HashSet<_>>().len(), 5, "each sent once: {bodies:?}");
}

async fn emails_go_out_through_sendgrid_and_smtp(db: Db) {
    let sendgrid = FakeSendGrid::start().await;
    let smtp = SmtpSink::start().await;
    let base = sendgrid.base_url();
    let app = spawn_app_with(db, &[("OMEGA_SENDGRID_BASE_URL", base.as_str())]).await;
    let b = app
        .onboard(json!({
            "name": "Lotus", "time_zone": "America/New_York",
            "locations": [{ "name": "Main", "email_sender": "hello@lotus.example" }]
        }))
        .await;
    let client = app.upsert_client(&b, json!({ "name": "Carla", "email": "carla@example.com" })).await;
    let put = |kind: &str, body: Value| {
        let url = app.rest(&format!("/omega/businesses/{}/providers/{kind}", b.id));
        app.http.put(url).header("x-api-key", &b.key).json(&body).send()
    };
    json_of(put("sendgrid", json!({ "api_key": FakeSendGrid::API_KEY })).await.unwrap(), 200).await;
    let email = json!({ "business_id": b.id, "client_id": client, "subject": "Your booking", "content": "See you Monday", "html": "<p>See you Monday</p>" });
    let queued = json_of(app.post("/omega/email/queue", &b.key, Some(email.clone())).await, 200).await;
    let id = queued["messages"][0]["message_id"].as_str().unwrap().to_owned();
    let sent = wait_for_status(&app, &b, &id, "SENT").await;
    let accepted = sendgrid.accepted();
    assert_eq!(accepted.len(), 1);
    let request = sendgrid.requests()[0].json.clone().expect("a JSON body");
    assert_eq!(request["custom_args"]["omega_message_id"], id.as_str());
    assert_eq!(request["personalizations"][0]["to"][0]["email"], "carla@example.com");
    assert_eq!(request["from"]["email"], "hello@lotus.example");
    assert_eq!(sent["message"]["subject"], "Your booking");

    // Switch the business to SMTP: the next email goes to the SMTP server.
    let smtp_settings = json!({ "host": "127.0.0.1", "port": smtp.addr().port(), "tls": "none" });
    let settings = json_of(put("smtp", smtp_settings).await.unwrap(), 200).await;
    assert_eq!(settings["settings"]["email_provider"], "smtp");
    let queued = json_of(app.post("/omega/email/queue", &b.key, Some(email)).await, 200).await;
    let id = queued["messages"][0]["message_id"].as_str().unwrap().to_owned();
    wait_for_status(&app, &b, &id, "SENT").await;
    let delivered = smtp.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].header("Subject").as_deref(), Some("Your booking"));

    let bad = json_of(
        app.post(
            "/omega/email/queue",
            &b.key,
            Some(json!({ "business_id": b.id, "client_id": client, "content": "x" })),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(violated_field(&bad), "subject");
}

async fn ingestion_finds_or_creates_the_client_and_reopens_the_conversation(db: Db) {
    let (app, twilio, b, client) = sms_setup(db, &[]).await;
    let conversation = app.conversation(&b, client).await;
    let path =
        format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/status?status=RESOLVED", b.id);
    json_of(app.post(&path, &b.key, None).await, 200).await;

    let inbound = |sid: &str, phone: &str, text: &str| {
        json!({ "business_id": b.id, "channel": "sms", "direction": "inbound", "client": { "phone": phone },
                "content": text, "provider": "twilio", "provider_message_id": sid })
    };
    let first = json_of(
        app.post("/omega/messages", &b.key, Some(inbound("SM001", "(415) 555-0199", "Can I move my class?"))).await,
        200,
    )
    .await;
    assert_eq!(first["created"], true);
    assert_eq!(first["client_id"], client);
    assert_eq!(first["conversation_id"], conversation);
    let duplicate = json_of(
        app.post("/omega/messages", &b.key, Some(inbound("SM001", "(415) 555-0199", "Can I move my class?"))).await,
        200,
    )
    .await;
    assert_eq!(duplicate["created"], false);
    assert_eq!(duplicate["message_id"], first["message_id"]);
    let profile = json_of(app.get(&format!("/omega/businesses/{}/clients/{client}", b.id), &b.key).await, 200).await;
    assert_eq!(profile["conversation"]["status"], "OPEN", "an inbound message reopens a resolved conversation");
    assert_eq!(profile["conversation"]["unread_count"], 1, "the duplicate did not count twice");

    // A new number makes a new client and conversation.
    let stranger =
        json_of(app.post("/omega/messages", &b.key, Some(inbound("SM002", "+14155550111", "Hello?"))).await, 200).await;
    assert_ne!(stranger["client_id"], client);
    let clients = json_of(app.get(&format!("/omega/businesses/{}/clients?query=0111", b.id), &b.key).await, 200).await;
    assert_eq!(clients["total_size"], 1);

    for (body, field) in [
        (
            json!({ "business_id": b.id, "channel": "pigeon", "direction": "inbound", "client": { "phone": "+14155550111" }, "content": "x" }),
            "channel",
        ),
        (
            json!({ "business_id": b.id, "channel": "sms", "direction": "sideways", "client": { "phone": "+14155550111" }, "content": "x" }),
            "direction",
        ),
        (
            json!({ "business_id": b.id, "channel": "sms", "direction": "inbound", "client": {}, "content": "x" }),
            "client",
        ),
        (
            json!({ "business_id": b.id, "channel": "sms", "direction": "inbound", "client": { "phone": "nope" }, "content": "x" }),
            "client.phone",
        ),
        (
            json!({ "business_id": b.id, "channel": "sms", "direction": "inbound", "client": { "phone": "+14155550111" }, "content": "" }),
            "content",
        ),
    ] {
        let resp = json_of(app.post("/omega/messages", &b.key, Some(body.clone())).await, 422).await;
        assert_eq!(violated_field(&resp), field, "{body}");
    }
    assert!(twilio.requests().is_empty());
}

async fn recorded_messages_are_stored_and_never_sent(db: Db) {
    let (app, twilio, b, client) = sms_setup(db, &[]).await;
    let body = json!({ "business_id": b.id, "client_id": client, "direction": "OUTBOUND", "content": "Sent from the front desk phone",
                       "status": "delivered", "provider": "twilio", "provider_message_id": "SMrecorded1" });
    let recorded = json_of(app.post("/omega/sms/record", &b.key, Some(body.clone())).await, 200).await;
    assert_eq!(recorded["status"], "DELIVERED");
    let again = json_of(app.post("/omega/sms/record", &b.key, Some(body)).await, 200).await;
    assert_eq!(again["message_id"], recorded["message_id"], "the provider id dedupes");
    let email = json!({ "business_id": b.id, "client_id": client, "direction": "INBOUND", "content": "Thanks!", "subject": "Re: booking" });
    json_of(app.post("/omega/email/record", &b.key, Some(email)).await, 200).await;
    let messages = json_of(
        app.get(
            &format!(
                "/omega/businesses/{}/clients/{client}/conversations/{}/messages",
                b.id, recorded["conversation_id"]
            ),
            &b.key,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(messages["total_size"], 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(twilio.requests().is_empty(), "recording sends nothing");
}

async fn search_finds_ranks_and_highlights(db: Db) {
    let (app, _twilio, b, client) = sms_setup(db, &[]).await;
    let texts = [
        "Hi! Is my invoice for March ready?",
        "The studio opens at 7am on weekdays",
        "Invoice paid, thanks. Another invoice question: can I get a receipt?",
        "See you tomorrow",
    ];
    let mut conversation = 0;
    for (i, text) in texts.iter().enumerate() {
        let body = json!({ "business_id": b.id, "channel": "SMS", "direction": "INBOUND", "client": { "client_id": client },
                           "content": text, "provider": "twilio", "provider_message_id": format!("SMsearch{i}") });
        conversation = json_of(app.post("/omega/messages", &b.key, Some(body)).await, 200).await["conversation_id"]
            .as_u64()
            .unwrap();
    }
    let search = |q: &str| {
        let path =
            format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/messages/search?q={q}", b.id);
        let app = &app;
        let key = b.key.clone();
        async move { app.get(&path, &key).await }
    };
    let found = json_of(search("invoice").await, 200).await;
    assert_eq!(found["total_size"], 2);
    let hits = found["hits"].as_array().unwrap();
    assert!(
        hits[0]["message"]["content"].as_str().unwrap().starts_with("Invoice paid"),
        "two matches rank first: {found}"
    );
    assert!(hits[0]["highlight"].as_str().unwrap().to_lowercase().contains("<mark>invoice</mark>"), "{found}");
    assert!(hits[0]["rank"].as_f64().unwrap() >= hits[1]["rank"].as_f64().unwrap());
    // Every word must match, as a whole word; punctuation is not syntax.
    assert_eq!(json_of(search("invoice%20march").await, 200).await["total_size"], 1);
    assert_eq!(json_of(search("studio").await, 200).await["total_size"], 1);
    assert_eq!(json_of(search("studi").await, 200).await["total_size"], 0);
    // Only this conversation's messages: another client's invoice is not found.
    let other = json!({ "business_id": b.id, "channel": "SMS", "direction": "INBOUND",
                        "client": { "phone": "+14155550177", "name": "Other" },
                        "content": "My invoice never came", "provider": "twilio", "provider_message_id": "SMsearch-other" });
    json_of(app.post("/omega/messages", &b.key, Some(other)).await, 200).await;
    assert_eq!(json_of(search("invoice").await, 200).await["total_size"], 2);
    assert_eq!(json_of(search(&format!("c{conversation}")).await, 200).await["total_size"], 0);
    assert_eq!(json_of(search("%22invoice%22%20*%20(").await, 200).await["total_size"], 2);
    let page = json_of(search("invoice&page_size=1").await, 200).await;
    assert_eq!(page["hits"].as_array().unwrap().len(), 1);
    let token = page["next_page_token"].as_str().unwrap().to_owned();
    let next = json_of(search(&format!("invoice&page_size=1&page_token={token}")).await, 200).await;
    assert_ne!(next["hits"][0]["message"]["id"], page["hits"][0]["message"]["id"]);
    let body = json_of(search("%20").await, 422).await;
    assert_eq!(violated_field(&body), "q");
    let other = app.onboard_simple("other", "+14155550101").await;
    let path =
        format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/messages/search?q=invoice", b.id);
    json_of(app.get(&path, &other.key).await, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_postgresql_share_the_outbox_without_double_sends() {
    let (app, twilio, b, client) = sms_setup(Db::Postgres, &[("OMEGA_DELIVERY_WORKERS", "0")]).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let body = json!({ "client_id": client, "content": format!("replica test {i}") });
        ids.push(
            json_of(queue_sms(&app, &b, body).await, 200).await["messages"][0]["message_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let base = twilio.base_url();
    let env = [("OMEGA_TWILIO_BASE_URL", base.as_str()), ("OMEGA_DELIVERY_WORKERS", "4")];
    let (_one, _) = app.start_replica(&env).await;
    let (_two, _) = app.start_replica(&env).await;
    eventually(Duration::from_secs(30), "all 40 messages sent", || async { twilio.messages().len() >= 40 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bodies: Vec<String> = twilio.messages().into_iter().map(|m| m.body).collect();
    assert_eq!(bodies.len(), 40, "no message twice");
    assert_eq!(bodies.iter().collect::<HashSet<_>>().len(), 40);
    for id in &ids {
        wait_for_status(&app, &b, id, "SENT").await;
    }
}

async fn one_sender_is_paced_across_workers(db: Db) {
    // 5 per second from one number, 4 workers: 6 messages cannot all go out in under a second.
    let (app, twilio, b, client) =
        sms_setup(db, &[("OMEGA_SMS_SENDER_RATE", "5"), ("OMEGA_DELIVERY_WORKERS", "4")]).await;
    let started = std::time::Instant::now();
    let mut all = Vec::new();
    for i in 0..6 {
        let body = json!({ "client_id": client, "content": format!("paced {i}") });
        all.push(
            json_of(queue_sms(&app, &b, body).await, 200).await["messages"][0]["message_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for id in &all {
        wait_for_status(&app, &b, id, "SENT").await;
    }
    let elapsed = started.elapsed();
    assert_eq!(twilio.messages().len(), 6);
    assert!(elapsed >= Duration::from_millis(950), "6 sends at 5/s took only {elapsed:?}");
}

async fn retryable_failures_give_up_after_the_last_attempt(db: Db) {
    let (app, twilio, b, client) = sms_setup(db, &[("OMEGA_DELIVERY_MAX_ATTEMPTS", "3")]).await;
    for _ in 0..3 {
        twilio.respond_next(Behavior::TooManyRequests);
    }
    let queued =
        json_of(queue_sms(&app, &b, json!({ "client_id": client, "content": "rate limited" })).await, 200).await;
    let id = queued["messages"][0]["message_id"].as_str().unwrap().to_owned();
    let failed = wait_for_status(&app, &b, &id, "FAILED").await;
    let outcomes: Vec<&str> =
        failed["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["retryable", "retryable", "retryable"]);
    assert_eq!(failed["message"]["error_code"], "RETRYABLE");
    assert!(!failed["message"]["error_message"].as_str().unwrap().is_empty());
    assert!(twilio.messages().is_empty(), "Twilio never accepted it");
    assert_eq!(twilio.requests().len(), 3);
}

/// More than 1,000 matches: the total stops at 1,000 and says so, and hits come newest first.
async fn search_beyond_a_thousand_matches_lists_newest_first(db: Db) {
    let (app, _twilio, b, client) = sms_setup(db, &[]).await;
    let body = json!({ "business_id": b.id, "channel": "SMS", "direction": "INBOUND", "client": { "client_id": client },
                       "content": "first invoice", "provider": "twilio", "provider_message_id": "SMbulk-first" });
    let conversation =
        json_of(app.post("/omega/messages", &b.key, Some(body)).await, 200).await["conversation_id"].as_u64().unwrap();
    let rows = match db {
        Db::Sqlite => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1100) \
             INSERT INTO messages (public_id, business_id, conversation_id, client_id, channel, direction, sender_type, content, status, attempt_count, created_at) \
             SELECT 'bulk-' || i, $1, $2, $3, 'SMS', 'INBOUND', 'client', 'invoice number ' || i, 'RECEIVED', 0, $4 FROM n"
        }
        Db::Postgres => {
            "INSERT INTO messages (public_id, business_id, conversation_id, client_id, channel, direction, sender_type, content, status, attempt_count, created_at) \
             SELECT 'bulk-' || i, $1, $2, $3, 'SMS', 'INBOUND', 'client', 'invoice number ' || i, 'RECEIVED', 0, $4 FROM generate_series(1, 1100) AS i"
        }
    };
    let now = chrono::Utc::now();
    app.sql(rows, vec![(b.id as i64).into(), (conversation as i64).into(), (client as i64).into(), now.into()]).await;
    let path = format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/messages/search", b.id);
    let found = json_of(app.get(&format!("{path}?q=invoice&page_size=3"), &b.key).await, 200).await;
    assert_eq!(found["total_size"], 1000);
    assert_eq!(found["total_size_capped"], true);
    let contents: Vec<&str> =
        found["hits"].as_array().unwrap().iter().map(|h| h["message"]["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["invoice number 1100", "invoice number 1099", "invoice number 1098"]);
    // A later page, from the same ordering.
    let token = found["next_page_token"].as_str().unwrap();
    let next = json_of(app.get(&format!("{path}?q=invoice&page_size=3&page_token={token}"), &b.key).await, 200).await;
    assert_eq!(next["hits"][0]["message"]["content"], "invoice number 1097");
    assert!(found["hits"][0]["highlight"].as_str().unwrap().contains("<mark>invoice</mark>"), "{found}");
    // A rarer word is ranked as usual.
    let one = json_of(app.get(&format!("{path}?q=first"), &b.key).await, 200).await;
    assert_eq!(one["total_size"], 1);
    assert_eq!(one["total_size_capped"], false);
}
