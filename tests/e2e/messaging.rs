//! Messages and their delivery, end to end: REST through Envoy into Omega, the durable outbox,
//! and fake Twilio / SendGrid / SMTP servers on loopback that check what the real ones check.

use crate::common;

use std::{collections::HashSet, time::Duration};

use crate::common::{json_of, violated_field};
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
    a_provider_slower_than_the_lease_loses_no_result,
    kill_mid_burst_leaves_only_the_calls_in_flight_ambiguous,
    sigterm_mid_burst_finishes_calls_in_flight_and_hands_back_the_rest,
    a_hung_call_holds_one_slot_not_the_batch,
    retry_reaches_every_failed_message_of_a_large_business,
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
    assert_eq!(request["next_page_token"], "", "one page holds them all");
    // Paged: two, then the third, oldest first, the same messages.
    let path = format!("/omega/messages/requests/{}", queued["request_id"].as_str().unwrap());
    let first_page = json_of(app.get(&format!("{path}?page_size=2"), &b.key).await, 200).await;
    let token = first_page["next_page_token"].as_str().unwrap();
    assert!(!token.is_empty(), "{first_page}");
    let rest = json_of(app.get(&format!("{path}?page_size=2&page_token={token}"), &b.key).await, 200).await;
    assert_eq!(rest["next_page_token"], "");
    let paged: Vec<&str> = first_page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["messages"].as_array().unwrap())
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(paged, ids.iter().map(String::as_str).collect::<Vec<_>>());
    json_of(app.get(&format!("{path}?page_size=1001"), &b.key).await, 422).await;
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
    let (app, twilio, b, client) =
        sms_setup(db, &[("OMEGA_PROVIDER_TIMEOUT_SECS", "1"), ("OMEGA_DELIVERY_RECONCILE_AFTER_SECS", "3")]).await;
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

    // While its outcome is unknown, not even a deliberate retry resends it.
    let unknown =
        json_of(app.post("/omega/messages/retry", &b.key, Some(json!({ "message_ids": [id] }))).await, 200).await;
    assert_eq!(unknown["retried"], json!([]), "{unknown}");
    assert_eq!(unknown["skipped"], 1);
    // Reconciliation asks Twilio, which never got it: certainly unsent, so retryable.
    eventually(Duration::from_secs(30), "the ambiguous send reconciled", || {
        let (app, b, id) = (&app, &b, &id);
        async move { message(app, b, id).await["message"]["error_code"] == "NOT_SENT" }
    })
    .await;
    let settled = message(&app, &b, &id).await;
    assert_eq!(settled["message"]["status"], "FAILED");
    assert!(twilio.lookups() >= 1);
    assert_eq!(attempts_at_twilio(), 1, "a lookup sends nothing");

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
    // A forged token far past any page (base64 of u64::MAX) is refused, not run.
    let forged = app.get(&format!("{path}?q=invoice&page_token=MTg0NDY3NDQwNzM3MDk1NTE2MTU"), &b.key).await;
    assert_eq!(forged.status().as_u16(), 422);
    assert!(forged.text().await.unwrap().contains("page_token"));
    // A rarer word is ranked as usual.
    let one = json_of(app.get(&format!("{path}?q=first"), &b.key).await, 200).await;
    assert_eq!(one["total_size"], 1);
    assert_eq!(one["total_size_capped"], false);
    // The next conversation's messages sit right after these in the index: they are its own.
    let other_client = app.upsert_client(&b, json!({ "name": "Other", "phone": "+14155550177" })).await;
    let other = json!({ "business_id": b.id, "channel": "SMS", "direction": "INBOUND",
                        "client": { "client_id": other_client },
                        "content": "another invoice", "provider": "twilio", "provider_message_id": "SMbulk-other" });
    let other = json_of(app.post("/omega/messages", &b.key, Some(other)).await, 200).await;
    let other_conversation = &other["conversation_id"];
    let other_path =
        format!("/omega/businesses/{}/clients/{other_client}/conversations/{other_conversation}/messages/search", b.id);
    let theirs = json_of(app.get(&format!("{other_path}?q=invoice"), &b.key).await, 200).await;
    assert_eq!(theirs["total_size"], 1, "{theirs}");
    assert_eq!(theirs["hits"][0]["message"]["content"], "another invoice");
    let ours = json_of(app.get(&format!("{path}?q=another"), &b.key).await, 200).await;
    assert_eq!(ours["total_size"], 0, "{ours}");
}

// ---- delivery tells the truth: claims, crashes, outages, reconciliation ----

/// Every row a query answers (fixtures and checks straight from the database).
async fn rows(db_url: &str, sql: &str) -> Vec<sea_orm::QueryResult> {
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(db_url).await.unwrap();
    let backend = db.get_database_backend();
    let rows = db.query_all_raw(sea_orm::Statement::from_string(backend, sql)).await;
    // Closed before any panic: a pool dropped while unwinding can keep the test's runtime from
    // shutting down.
    db.close().await.ok();
    rows.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn count(db_url: &str, sql: &str) -> i64 {
    rows(db_url, sql).await[0].try_get::<i64>("", "n").unwrap()
}

/// The outbound messages as stored: (content, status, error code, provider id).
async fn outbound(db_url: &str) -> Vec<(String, String, Option<String>, Option<String>)> {
    rows(
        db_url,
        "SELECT content, status, error_code, provider_message_id FROM messages WHERE direction = 'OUTBOUND' ORDER BY id",
    )
    .await
    .into_iter()
    .map(|r| {
        (
            r.try_get("", "content").unwrap(),
            r.try_get("", "status").unwrap(),
            r.try_get("", "error_code").unwrap(),
            r.try_get("", "provider_message_id").unwrap(),
        )
    })
    .collect()
}

/// Messages whose history holds an ambiguous attempt (a send whose outcome was unknown).
async fn ever_ambiguous(db_url: &str) -> i64 {
    count(db_url, "SELECT COUNT(DISTINCT message_id) AS n FROM message_attempts WHERE outcome = 'ambiguous'").await
}

async fn queue_many(app: &TestApp, b: &TestBusiness, client: u64, n: usize, prefix: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let body = json!({ "client_id": client, "content": format!("{prefix} {i}") });
        let queued = json_of(queue_sms(app, b, body).await, 200).await;
        ids.push(queued["messages"][0]["message_id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Every message SENT with the SID Twilio gave the message of its body, and Twilio holding
/// each body exactly once: nothing lost, nothing sent twice.
async fn assert_each_sent_once(db_url: &str, twilio: &FakeTwilio, n: usize) {
    let at_twilio = twilio.messages();
    let bodies: HashSet<&str> = at_twilio.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(at_twilio.len(), n, "each message reached Twilio once");
    assert_eq!(bodies.len(), n, "no body twice");
    let stored = outbound(db_url).await;
    assert_eq!(stored.len(), n);
    for (content, status, code, sid) in stored {
        let twin = at_twilio.iter().find(|m| m.body == content).unwrap_or_else(|| panic!("{content} never sent"));
        assert_eq!(status, "SENT", "{content}: {code:?}");
        assert_eq!(sid.as_deref(), Some(twin.sid.as_str()), "{content}");
    }
}

async fn all_sent(db_url: &str, n: i64) -> bool {
    count(db_url, "SELECT COUNT(*) AS n FROM messages WHERE direction = 'OUTBOUND' AND status = 'SENT'").await == n
}

fn dispatch_env<'a>(base: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("OMEGA_TWILIO_BASE_URL", base),
        ("OMEGA_PUBLIC_URL", "https://omega.example"),
        ("OMEGA_DELIVERY_WORKERS", "2"),
        ("OMEGA_DELIVERY_CONCURRENCY", "2"),
        ("OMEGA_DELIVERY_LEASE_SECS", "5"),
        ("OMEGA_DELIVERY_RECONCILE_AFTER_SECS", "1"),
        // Ambiguous sends are looked up once a call can no longer be in flight: after this.
        ("OMEGA_PROVIDER_TIMEOUT_SECS", "10"),
    ];
    env.extend_from_slice(extra);
    env
}

/// A provider answering in 6 s, past the 5 s lease: the worker's renewed claim keeps every
/// send its own, each result is recorded, none is called ambiguous, and a retry of the
/// business has nothing to resend.
async fn a_provider_slower_than_the_lease_loses_no_result(db: Db) {
    let (mut app, twilio, b, client) = sms_setup(db, &[("OMEGA_DELIVERY_WORKERS", "0")]).await;
    let ids = queue_many(&app, &b, client, 8, "slow provider").await;
    twilio.set_answer(common::fakes::Answer::After(Duration::from_secs(6)));
    let base = twilio.base_url();
    app.restart(&dispatch_env(
        &base,
        &[("OMEGA_DELIVERY_CONCURRENCY", "4"), ("OMEGA_DELIVERY_RECONCILE_AFTER_SECS", "3600")],
    ))
    .await;
    let url = app.db.url.clone();
    eventually(Duration::from_secs(90), "all 8 sent", || all_sent(&url, 8)).await;
    assert_eq!(ever_ambiguous(&url).await, 0, "no live send was settled as abandoned");
    assert_each_sent_once(&url, &twilio, 8).await;
    for id in &ids {
        let history = message(&app, &b, id).await;
        let outcomes: Vec<&str> =
            history["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, ["accepted"], "{history}");
    }
    let retry =
        json_of(app.post("/omega/messages/retry", &b.key, Some(json!({ "business_id": b.id }))).await, 200).await;
    assert_eq!(retry["retried"], json!([]), "nothing to resend");
    assert_eq!(twilio.messages().len(), 8);
}

/// kill -9 while every call is in flight (Twilio created the messages, its answers never
/// came): only those calls are ambiguous, each is found at Twilio and settled SENT, and the
/// rest are sent once after the restart.
async fn kill_mid_burst_leaves_only_the_calls_in_flight_ambiguous(db: Db) {
    let (mut app, twilio, _b, client) = sms_setup(db, &[("OMEGA_DELIVERY_WORKERS", "0")]).await;
    let _ids = queue_many(&app, &_b, client, 30, "kill burst").await;
    twilio.set_answer(common::fakes::Answer::Never);
    let base = twilio.base_url();
    let env = dispatch_env(&base, &[]);
    app.restart(&env).await;
    // Two workers, two calls each: four sends truly in flight, then the process dies.
    eventually(Duration::from_secs(30), "4 calls in flight", || async { twilio.unanswered() == 4 }).await;
    let in_flight = twilio.unanswered() as i64;
    twilio.set_answer(common::fakes::Answer::Promptly);
    app.restart(&env).await;
    let url = app.db.url.clone();
    eventually(Duration::from_secs(60), "all 30 sent", || all_sent(&url, 30)).await;
    let ambiguous = ever_ambiguous(&url).await;
    assert!(ambiguous <= in_flight, "{ambiguous} ambiguous, {in_flight} calls in flight");
    assert_eq!(ambiguous, in_flight, "each call in flight was settled as ambiguous, then reconciled");
    assert!(twilio.lookups() >= 1, "reconciled by looking at Twilio");
    assert_each_sent_once(&url, &twilio, 30).await;
}

/// SIGTERM with a slow provider: the calls in flight finish and are recorded, the untouched
/// jobs go back to the outbox, nothing is left `sending` or ambiguous.
async fn sigterm_mid_burst_finishes_calls_in_flight_and_hands_back_the_rest(db: Db) {
    let (mut app, twilio, _b, client) = sms_setup(db, &[("OMEGA_DELIVERY_WORKERS", "0")]).await;
    queue_many(&app, &_b, client, 30, "sigterm burst").await;
    twilio.set_answer(common::fakes::Answer::After(Duration::from_secs(2)));
    let base = twilio.base_url();
    let env = dispatch_env(&base, &[("OMEGA_DELIVERY_RECONCILE_AFTER_SECS", "3600")]);
    app.restart(&env).await;
    eventually(Duration::from_secs(30), "calls in flight", || async { !twilio.messages().is_empty() }).await;
    let pid = app.omega.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exited = tokio::task::block_in_place(|| app.omega.child.wait()).unwrap();
    assert!(exited.success(), "omega stopped cleanly: {exited}");
    let url = app.db.url.clone();
    let left =
        count(&url, "SELECT COUNT(*) AS n FROM delivery_jobs WHERE state IN ('running', 'sending', 'settling')").await;
    assert_eq!(left, 0, "every job finished or handed back");
    assert_eq!(ever_ambiguous(&url).await, 0);
    let sent = count(&url, "SELECT COUNT(*) AS n FROM messages WHERE status = 'SENT'").await;
    assert_eq!(sent as usize, twilio.messages().len(), "every call made was recorded");
    assert!(sent < 30, "the rest was handed back, not sent during the drain");
    twilio.set_answer(common::fakes::Answer::Promptly);
    app.restart(&env).await;
    eventually(Duration::from_secs(60), "all 30 sent", || all_sent(&url, 30)).await;
    assert_each_sent_once(&url, &twilio, 30).await;
}

/// A call that hangs holds one of its worker's slots, not the worker: the rest of the batch
/// goes out through the other slot while it is still in flight, and it is the only send left
/// `sending`.
async fn a_hung_call_holds_one_slot_not_the_batch(db: Db) {
    let (mut app, twilio, b, client) = sms_setup(db, &[("OMEGA_DELIVERY_WORKERS", "0")]).await;
    queue_many(&app, &b, client, 6, "window").await;
    twilio.respond_next(common::fakes::Behavior::Hang);
    let base = twilio.base_url();
    app.restart(&dispatch_env(
        &base,
        &[
            ("OMEGA_DELIVERY_WORKERS", "1"),
            ("OMEGA_PROVIDER_TIMEOUT_SECS", "120"),
            ("OMEGA_DELIVERY_RECONCILE_AFTER_SECS", "3600"),
        ],
    ))
    .await;
    let url = app.db.url.clone();
    // Far less than the hung call's 120 s timeout, which a batch sent in waves would wait out.
    eventually(Duration::from_secs(60), "5 sent while one call hangs", || async {
        count(&url, "SELECT COUNT(*) AS n FROM messages WHERE status = 'SENT'").await == 5
    })
    .await;
    let sending = count(&url, "SELECT COUNT(*) AS n FROM delivery_jobs WHERE state = 'sending'").await;
    assert_eq!(sending, 1, "the hung call is the only send in flight");
    assert_eq!(twilio.messages().len(), 5);
}

/// Retry's limit applies to the FAILED messages that were certainly not sent: paging through
/// a business with more than a thousand outbound messages reaches every one, and never one
/// whose outcome is unknown or that Twilio accepted.
async fn retry_reaches_every_failed_message_of_a_large_business(db: Db) {
    let (app, _twilio, b, client) = sms_setup(db, &[("OMEGA_DELIVERY_WORKERS", "0")]).await;
    let conversation = app.conversation(&b, client).await as i64;
    let now = chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros()).unwrap();
    let insert = |count: i64, prefix: &'static str, status: &'static str, code: Option<&'static str>| {
        let app = &app;
        let b = &b;
        async move {
            app.sql(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
                 INSERT INTO messages (public_id, business_id, conversation_id, client_id, channel, direction, sender_type, \
                   content, status, error_code, attempt_count, to_address, from_address, created_at) \
                 SELECT $2 || i, $3, $4, $5, 'SMS', 'OUTBOUND', 'system', $2 || i, $6, $7, 1, '+14155550199', \
                   '+14155550100', $8 FROM n",
                vec![
                    count.into(),
                    prefix.into(),
                    (b.id as i64).into(),
                    conversation.into(),
                    (client as i64).into(),
                    status.into(),
                    code.map(str::to_owned).into(),
                    now.into(),
                ],
            )
            .await;
        }
    };
    insert(1_100, "old-sent-", "SENT", None).await;
    insert(60, "unsent-a-", "FAILED", Some("RETRYABLE")).await;
    insert(10, "ambiguous-", "FAILED", Some("AMBIGUOUS")).await;
    insert(10, "accepted-", "FAILED", Some("30008")).await;
    insert(300, "mid-sent-", "DELIVERED", None).await;
    insert(90, "unsent-b-", "FAILED", Some("NOT_SENT")).await;
    app.sql(
        "INSERT INTO message_attempts (message_id, attempt, started_at, finished_at, outcome, provider_message_id) \
         SELECT id, 1, $1, $1, 'accepted', 'SMacc' || id FROM messages WHERE public_id LIKE 'accepted-%'",
        vec![now.into()],
    )
    .await;
    let mut retried = HashSet::new();
    for _ in 0..10 {
        let body = json!({ "business_id": b.id, "limit": 40 });
        let page = json_of(app.post("/omega/messages/retry", &b.key, Some(body)).await, 200).await;
        let ids = page["retried"].as_array().unwrap().clone();
        if ids.is_empty() {
            assert_eq!(page["skipped"], 20, "the possibly delivered ones are left alone: {page}");
            break;
        }
        assert!(ids.len() <= 40);
        retried.extend(ids.into_iter().map(|id| id.as_str().unwrap().to_owned()));
    }
    let reached: Vec<String> = rows(&app.db.url, "SELECT public_id FROM messages WHERE status = 'QUEUED' ORDER BY id")
        .await
        .into_iter()
        .map(|r| r.try_get("", "public_id").unwrap())
        .collect();
    assert_eq!(retried.len(), 150, "every certainly unsent failure, past the first thousand messages");
    assert_eq!(reached.len(), 150);
    assert!(reached.iter().all(|id| id.starts_with("unsent-")), "{reached:?}");
    assert!(reached.iter().all(|id| retried.contains(id)));
}

/// Restarts the app's Omega (dispatching to `twilio`) and Envoy with Omega's line to PostgreSQL
/// through a proxy the test can cut.
async fn restart_through_a_proxy(app: &mut TestApp, twilio: &FakeTwilio) -> common::fakes::TcpProxy {
    let proxy = common::fakes::TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let proxied = app.db.url.replace("127.0.0.1:5432", &proxy.addr().to_string());
    let base = twilio.base_url();
    let env = dispatch_env(&base, &[]);
    let _ = app.omega.child.kill();
    let _ = app.omega.child.wait();
    let (omega, grpc_addr) = common::start_omega(app.dir.path(), &proxied, &app.platform_key, &env).await;
    let (envoy, envoy_addr, envoy_admin) = common::start_envoy(app.dir.path(), grpc_addr).await;
    (app.omega, app.envoy, app.grpc_addr, app.envoy_addr, app.envoy_admin) =
        (omega, envoy, grpc_addr, envoy_addr, envoy_admin);
    proxy
}

/// A PostgreSQL outage mid-backlog (the line to the database cut for 4 s): no new send starts
/// once results cannot be recorded, the ones held are recorded when it returns, health and
/// requests say 503 within about a second, and every message ends SENT once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_backlog_starts_no_new_sends_and_loses_no_result() {
    let (mut app, twilio, b, client) = sms_setup(Db::Postgres, &[("OMEGA_DELIVERY_WORKERS", "0")]).await;
    queue_many(&app, &b, client, 40, "outage backlog").await;
    twilio.set_answer(common::fakes::Answer::After(Duration::from_millis(500)));
    let proxy = restart_through_a_proxy(&mut app, &twilio).await;
    eventually(Duration::from_secs(30), "some sent", || async { twilio.messages().len() >= 8 }).await;

    proxy.cut();
    let at_cut = twilio.requests().len();
    let asked = std::time::Instant::now();
    let resp = app.get("/omega/health/db", &app.platform_key).await;
    assert_eq!(resp.status(), 503);
    assert!(asked.elapsed() < Duration::from_secs(4), "503 took {:?}", asked.elapsed());
    let health = tonic_health::pb::health_client::HealthClient::new(app.grpc_channel().await);
    eventually(Duration::from_secs(4), "grpc health NOT_SERVING", || {
        let mut health = health.clone();
        async move {
            let resp = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
            resp.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
        }
    })
    .await;
    // The outage lasts a few seconds; what matters is what the workers did meanwhile.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = twilio.requests().len() - at_cut;
    // At most the calls each worker had already marked as sending when the line went down.
    assert!(during <= 2 * 2, "{during} sends started while the database was gone");
    proxy.restore();

    let url = app.db.url.clone();
    eventually(Duration::from_secs(90), "all 40 sent", || all_sent(&url, 40)).await;
    assert_each_sent_once(&url, &twilio, 40).await;
}

/// Ingest through a PostgreSQL outage: 32 inbound SMS at once while the line is cut each answer
/// 503 with gRPC's UNAVAILABLE (never another error), and once it is back the same messages sent
/// again (as Twilio retries them, same provider ids) are stored exactly once each, whatever the
/// concurrent writes that shared a transaction saw when the line went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_through_a_database_outage_answers_503_and_stores_each_retry_once() {
    let (mut app, twilio, b, client) = sms_setup(Db::Postgres, &[]).await;
    let conversation = app.conversation(&b, client).await;
    let proxy = restart_through_a_proxy(&mut app, &twilio).await;
    // Through the proxy before the cut: the pool's connections are open when the line goes.
    for resp in ingest_outage_sms(&app, &b, 0..16).await {
        assert_eq!(json_of(resp, 200).await["created"], true);
    }

    proxy.cut();
    for resp in ingest_outage_sms(&app, &b, 16..48).await {
        let status = resp.status();
        let body: Value = resp.json().await.expect("a JSON error");
        assert_eq!((status.as_u16(), &body["code"]), (503, &json!(14)), "{body}");
    }
    proxy.restore();

    let url = app.db.url.clone();
    eventually(Duration::from_secs(30), "ingest is back", || async {
        app.post("/omega/messages", &b.key, Some(outage_sms(&b, 16))).await.status() == 200
    })
    .await;
    for resp in ingest_outage_sms(&app, &b, 16..48).await {
        json_of(resp, 200).await;
    }
    let stored =
        "SELECT COUNT(DISTINCT provider_message_id) AS n FROM messages WHERE provider_message_id LIKE 'SMOUT%'";
    assert_eq!(count(&url, stored).await, 48);
    let all = "SELECT COUNT(*) AS n FROM messages WHERE provider_message_id LIKE 'SMOUT%'";
    assert_eq!(count(&url, all).await, 48, "a message stored twice");
    let unread = format!("SELECT unread_count::bigint AS n FROM conversations WHERE id = {conversation}");
    assert_eq!(count(&url, &unread).await, 48, "each stored message counted once");
}

/// Inbound SMS number `n` from the setup's client, with its own provider id.
fn outage_sms(b: &TestBusiness, n: usize) -> Value {
    json!({ "business_id": b.id, "channel": "sms", "direction": "inbound", "client": { "phone": "+14155550199" },
            "content": format!("message {n}"), "provider": "twilio", "provider_message_id": format!("SMOUT{n:02}") })
}

/// Ingests [`outage_sms`] numbered `range`, all at once.
async fn ingest_outage_sms(app: &TestApp, b: &TestBusiness, range: std::ops::Range<usize>) -> Vec<reqwest::Response> {
    futures_util::future::join_all(range.map(|n| app.post("/omega/messages", &b.key, Some(outage_sms(b, n))))).await
}

/// Three replicas share a backlog against a slow provider; one is killed mid-burst. Its sends
/// in flight are reconciled at Twilio, the rest is sent by the others: no duplicate, nothing
/// lost, nothing left ambiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_one_killed_send_each_message_once() {
    let (app, twilio, b, client) = sms_setup(Db::Postgres, &[("OMEGA_DELIVERY_WORKERS", "0")]).await;
    queue_many(&app, &b, client, 40, "three replicas").await;
    twilio.set_answer(common::fakes::Answer::After(Duration::from_millis(400)));
    let base = twilio.base_url();
    let env = dispatch_env(&base, &[]);
    let (doomed, _) = app.start_replica(&env).await;
    let (_two, _) = app.start_replica(&env).await;
    let (_three, _) = app.start_replica(&env).await;
    eventually(Duration::from_secs(30), "the burst is under way", || async { twilio.messages().len() >= 8 }).await;
    drop(doomed); // SIGKILL
    let url = app.db.url.clone();
    // Each send the dead replica left is reconciled: SENT if it reached Twilio, otherwise
    // FAILED as certainly unsent, which a retry may resend without texting anyone twice.
    let settled = "SELECT COUNT(*) AS n FROM messages WHERE status = 'SENT' OR error_code = 'NOT_SENT'";
    eventually(Duration::from_secs(90), "all 40 settled", || async { count(&url, settled).await == 40 }).await;
    let unsent = count(&url, "SELECT COUNT(*) AS n FROM messages WHERE error_code = 'NOT_SENT'").await;
    assert_eq!(twilio.messages().len() as i64 + unsent, 40, "the unsent ones never reached Twilio");
    let retry =
        json_of(app.post("/omega/messages/retry", &b.key, Some(json!({ "business_id": b.id }))).await, 200).await;
    assert_eq!(retry["retried"].as_array().unwrap().len() as i64, unsent, "{retry}");
    eventually(Duration::from_secs(90), "all 40 sent", || all_sent(&url, 40)).await;
    assert_each_sent_once(&url, &twilio, 40).await;
    let unsettled = count(&url, "SELECT COUNT(*) AS n FROM messages WHERE error_code = 'AMBIGUOUS'").await;
    assert_eq!(unsettled, 0);
}
