//! Provider webhooks through real Envoy, posted as the providers post them: form bodies signed
//! over the public URL (Twilio), JSON arrays signed with ECDSA (SendGrid).

use crate::common;

use std::time::Duration;

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use common::{
    Db, TestApp, TestBusiness,
    fakes::{FakeSendGrid, FakeTwilio},
    spawn_app_with,
};
use omega::providers::signatures::twilio_signature;
use p256::{
    PublicKey,
    ecdsa::{Signature, SigningKey, signature::Signer},
    pkcs8::EncodePublicKey,
};
use serde_json::{Value, json};

both_databases!(
    a_signed_inbound_sms_is_stored_once,
    forged_or_unsigned_webhooks_are_refused_and_write_nothing,
    stop_and_start_change_sms_consent,
    mms_keeps_every_media_url,
    status_callbacks_move_messages_forward_only,
    a_browser_call_gets_its_twiml_and_a_call_record,
    voice_tokens_carry_every_claim,
    sendgrid_events_are_verified_and_applied_once,
    garbage_never_causes_a_500,
);

const VOICE_SECRET: &str = "voice-api-key-secret-0123456789abcdef";
/// A fixed P-256 private key for SendGrid's signatures in these tests.
const SENDGRID_PRIVATE: [u8; 32] = [7; 32];

fn sendgrid_key() -> SigningKey {
    SigningKey::from_bytes(&SENDGRID_PRIVATE.into()).unwrap()
}

struct Setup {
    app: TestApp,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
    b: TestBusiness,
    client: u64,
}

async fn setup(db: Db) -> Setup {
    let twilio = FakeTwilio::start().await;
    let sendgrid = FakeSendGrid::start().await;
    let (twilio_url, sendgrid_url) = (twilio.base_url(), sendgrid.base_url());
    let public_key = PublicKey::from(sendgrid_key().verifying_key());
    let public_key = STANDARD.encode(public_key.to_public_key_der().unwrap().as_bytes());
    let app = spawn_app_with(
        db,
        &[
            ("OMEGA_TWILIO_BASE_URL", &twilio_url),
            ("OMEGA_SENDGRID_BASE_URL", &sendgrid_url),
            ("OMEGA_SENDGRID_WEBHOOK_PUBLIC_KEY", &public_key),
            ("OMEGA_TWILIO_ACCOUNT_SID", "AC11111111111111111111111111111111"),
            ("OMEGA_TWILIO_AUTH_TOKEN", "platform-token-not-used-here-000"),
            ("OMEGA_TWILIO_API_KEY_SID", "SK22222222222222222222222222222222"),
            ("OMEGA_TWILIO_API_KEY_SECRET", VOICE_SECRET),
            ("OMEGA_TWILIO_TWIML_APP_SID", "AP33333333333333333333333333333333"),
        ],
    )
    .await;
    let b = app
        .onboard(json!({
            "name": "Lotus", "time_zone": "America/New_York",
            "locations": [{ "name": "Main", "phone_numbers": ["+14155550100"], "email_sender": "hi@lotus.example" }],
            "staff": [{ "name": "Ana", "email": "ana@lotus.example" }]
        }))
        .await;
    for (kind, body) in [
        ("twilio", json!({ "account_sid": FakeTwilio::ACCOUNT_SID, "auth_token": FakeTwilio::AUTH_TOKEN })),
        ("sendgrid", json!({ "api_key": FakeSendGrid::API_KEY })),
    ] {
        let resp = app
            .http
            .put(app.rest(&format!("/omega/businesses/{}/providers/{kind}", b.id)))
            .header("x-api-key", &b.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let client = app
        .upsert_client(
            &b,
            json!({ "name": "Carla", "phone": "+14155550199", "email": "carla@example.com", "sms_consent": true }),
        )
        .await;
    Setup { app, twilio, sendgrid, b, client }
}

/// Posts a form as Twilio does: signed over the public URL with the account's auth token.
async fn post_twilio(app: &TestApp, path: &str, params: &[(&str, &str)], tamper: bool) -> reqwest::Response {
    let url = app.rest(path);
    let owned: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let signature = twilio_signature(FakeTwilio::AUTH_TOKEN, &url, &owned);
    let mut body = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    if tamper {
        body = body.replacen("Body=", "Body=X", 1);
    }
    app.http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
}

fn inbound<'a>(sid: &'a str, body: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("MessageSid", sid),
        ("AccountSid", FakeTwilio::ACCOUNT_SID),
        ("From", "+14155550199"),
        ("To", "+14155550100"),
        ("Body", body),
        ("NumMedia", "0"),
        ("NumSegments", "1"),
        ("SmsStatus", "received"),
        ("ApiVersion", "2010-04-01"),
    ]
}

async fn json_of(resp: reqwest::Response, status: u16) -> Value {
    let code = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!(code, status, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

async fn conversation_messages(s: &Setup) -> Value {
    let profile =
        json_of(s.app.get(&format!("/omega/businesses/{}/clients/{}", s.b.id, s.client), &s.b.key).await, 200).await;
    let Some(conversation) = profile["conversation"]["conversation_id"].as_u64() else {
        return json!({ "total_size": 0, "messages": [] });
    };
    json_of(
        s.app
            .get(
                &format!("/omega/businesses/{}/clients/{}/conversations/{conversation}/messages", s.b.id, s.client),
                &s.b.key,
            )
            .await,
        200,
    )
    .await
}

async fn a_signed_inbound_sms_is_stored_once(db: Db) {
    let s = setup(db).await;
    for _ in 0..2 {
        let resp =
            post_twilio(&s.app, "/omega/twilio/sms/incoming", &inbound("SM100", "Can I book Friday?"), false).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/xml"));
        assert_eq!(resp.text().await.unwrap(), r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#);
    }
    let messages = conversation_messages(&s).await;
    assert_eq!(messages["total_size"], 1, "the same MessageSid twice is one message");
    let message = &messages["messages"][0];
    assert_eq!(message["content"], "Can I book Friday?");
    assert_eq!(message["direction"], "INBOUND");
    assert_eq!(message["provider_message_id"], "SM100");
    let profile =
        json_of(s.app.get(&format!("/omega/businesses/{}/clients/{}", s.b.id, s.client), &s.b.key).await, 200).await;
    assert_eq!(profile["conversation"]["unread_count"], 1);

    // A number nobody uses: acknowledged (so Twilio does not retry) and dropped.
    let mut stray = inbound("SM101", "hello?");
    stray[3] = ("To", "+14155550999");
    assert_eq!(post_twilio(&s.app, "/omega/twilio/sms/incoming", &stray, false).await.status(), 200);
    assert_eq!(conversation_messages(&s).await["total_size"], 1);
}

async fn forged_or_unsigned_webhooks_are_refused_and_write_nothing(db: Db) {
    let s = setup(db).await;
    let tampered = post_twilio(&s.app, "/omega/twilio/sms/incoming", &inbound("SM200", "hi"), true).await;
    assert_eq!(tampered.status(), 403);
    let unsigned = s
        .app
        .http
        .post(s.app.rest("/omega/twilio/sms/incoming"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("MessageSid=SM201&AccountSid=AC0123456789abcdef0123456789abcdef&From=%2B14155550199&To=%2B14155550100&Body=hi")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 403);
    // Signed for another URL (a replay against another endpoint): refused.
    let params: Vec<(String, String)> =
        inbound("SM202", "hi").iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let signature = twilio_signature(FakeTwilio::AUTH_TOKEN, &s.app.rest("/omega/twilio/sms/status"), &params);
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&params).finish();
    let replayed = s
        .app
        .http
        .post(s.app.rest("/omega/twilio/sms/incoming"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 403);
    assert_eq!(conversation_messages(&s).await["total_size"], 0, "nothing stored");
}

async fn stop_and_start_change_sms_consent(db: Db) {
    let s = setup(db).await;
    let consent = || async {
        let profile =
            json_of(s.app.get(&format!("/omega/businesses/{}/clients/{}", s.b.id, s.client), &s.b.key).await, 200)
                .await;
        profile["client"]["sms_consent"].as_bool().unwrap()
    };
    assert!(consent().await);
    assert_eq!(
        post_twilio(&s.app, "/omega/twilio/sms/incoming", &inbound("SM300", " stop "), false).await.status(),
        200
    );
    assert!(!consent().await);
    let queue = json!({ "business_id": s.b.id, "client_id": s.client, "content": "Promo!" });
    let refused = json_of(s.app.post("/omega/sms/queue", &s.b.key, Some(queue.clone())).await, 409).await;
    assert!(refused["message"].as_str().unwrap().contains("STOP"), "{refused}");
    assert_eq!(
        post_twilio(&s.app, "/omega/twilio/sms/incoming", &inbound("SM301", "START"), false).await.status(),
        200
    );
    assert!(consent().await);
    json_of(s.app.post("/omega/sms/queue", &s.b.key, Some(queue)).await, 200).await;
}

async fn mms_keeps_every_media_url(db: Db) {
    let s = setup(db).await;
    let mut params = inbound("MM400", "Look at this");
    params.retain(|(k, _)| *k != "NumMedia");
    params.extend([
        ("NumMedia", "2"),
        ("MediaUrl0", "https://api.twilio.com/media/one"),
        ("MediaContentType0", "image/jpeg"),
        ("MediaUrl1", "https://api.twilio.com/media/two"),
        ("MediaContentType1", "image/png"),
    ]);
    assert_eq!(post_twilio(&s.app, "/omega/twilio/sms/incoming", &params, false).await.status(), 200);
    let message = &conversation_messages(&s).await["messages"][0];
    assert_eq!(message["media_urls"], json!(["https://api.twilio.com/media/one", "https://api.twilio.com/media/two"]));
}

async fn status_callbacks_move_messages_forward_only(db: Db) {
    let s = setup(db).await;
    let queued = json_of(
        s.app
            .post(
                "/omega/sms/queue",
                &s.b.key,
                Some(json!({ "business_id": s.b.id, "client_id": s.client, "content": "Hi" })),
            )
            .await,
        200,
    )
    .await;
    let id = queued["messages"][0]["message_id"].as_str().unwrap().to_owned();
    common::eventually(Duration::from_secs(10), "the SMS to be sent", || async { !s.twilio.messages().is_empty() })
        .await;
    let sid = s.twilio.messages()[0].sid.clone();
    let app = &s.app;
    let status = |value: &'static str, sid: String| async move {
        let params =
            vec![("MessageSid", sid.as_str()), ("AccountSid", FakeTwilio::ACCOUNT_SID), ("MessageStatus", value)];
        post_twilio(app, "/omega/twilio/sms/status", &params, false).await.status()
    };
    common::eventually(Duration::from_secs(10), "SENT", || async {
        json_of(s.app.get(&format!("/omega/messages/{id}"), &s.b.key).await, 200).await["message"]["status"] == "SENT"
    })
    .await;
    assert_eq!(status("delivered", sid.clone()).await, 200);
    assert_eq!(status("sent", sid.clone()).await, 200);
    assert_eq!(status("delivered", sid.clone()).await, 200);
    let message = json_of(s.app.get(&format!("/omega/messages/{id}"), &s.b.key).await, 200).await;
    assert_eq!(message["message"]["status"], "DELIVERED");
    // Unknown messages are acknowledged, not errors (Twilio would retry for hours).
    assert_eq!(status("delivered", "SMunknown".into()).await, 200);
    // An undelivered callback for another message keeps Twilio's error code.
    let second = json_of(
        s.app
            .post(
                "/omega/sms/queue",
                &s.b.key,
                Some(json!({ "business_id": s.b.id, "client_id": s.client, "content": "Again" })),
            )
            .await,
        200,
    )
    .await["messages"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    common::eventually(Duration::from_secs(10), "the second SMS", || async { s.twilio.messages().len() == 2 }).await;
    let sid2 = s.twilio.messages()[1].sid.clone();
    let params = vec![
        ("MessageSid", sid2.as_str()),
        ("AccountSid", FakeTwilio::ACCOUNT_SID),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ];
    common::eventually(Duration::from_secs(10), "SENT", || async {
        json_of(s.app.get(&format!("/omega/messages/{second}"), &s.b.key).await, 200).await["message"]["status"]
            == "SENT"
    })
    .await;
    assert_eq!(post_twilio(&s.app, "/omega/twilio/sms/status", &params, false).await.status(), 200);
    let message = json_of(s.app.get(&format!("/omega/messages/{second}"), &s.b.key).await, 200).await;
    assert_eq!(message["message"]["status"], "UNDELIVERED");
    assert_eq!(message["message"]["error_code"], "30003");
}

async fn a_browser_call_gets_its_twiml_and_a_call_record(db: Db) {
    let s = setup(db).await;
    let from = format!("client:staff_{}_{}", s.b.id, s.b.staff_ids[0]);
    let params = vec![
        ("CallSid", "CA500"),
        ("AccountSid", FakeTwilio::ACCOUNT_SID),
        ("ApplicationSid", "AP33333333333333333333333333333333"),
        ("From", from.as_str()),
        ("To", "(415) 555-0199"),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
    ];
    let resp = post_twilio(&s.app, "/omega/voice-calls/twiml", &params, false).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/xml"));
    let callback = s.app.rest("/omega/twilio/voice/status");
    assert_eq!(
        resp.text().await.unwrap(),
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial callerId="+14155550100" answerOnBridge="true"><Number statusCallback="{callback}" statusCallbackEvent="initiated ringing answered completed">+14155550199</Number></Dial></Response>"#
        )
    );
    let call = |status: &'static str, sequence: &'static str, duration: Option<&'static str>| {
        let mut params = vec![
            ("CallSid", "CA500"),
            ("AccountSid", FakeTwilio::ACCOUNT_SID),
            ("CallStatus", status),
            ("SequenceNumber", sequence),
        ];
        if let Some(duration) = duration {
            params.push(("CallDuration", duration));
        }
        let app = &s.app;
        async move { post_twilio(app, "/omega/twilio/voice/status", &params, false).await.status() }
    };
    assert_eq!(call("ringing", "1", None).await, 200);
    assert_eq!(call("completed", "3", Some("42")).await, 200);
    assert_eq!(call("in-progress", "2", None).await, 200); // late
    let messages = conversation_messages(&s).await;
    let record = &messages["messages"][0];
    assert_eq!(record["channel"], "VOICE");
    assert_eq!(record["status"], "DELIVERED");
    assert_eq!(record["duration_seconds"], 42);
    assert_eq!(record["sender_staff_id"], s.b.staff_ids[0]);

    // No number, or a caller who is not staff: spoken refusals, not errors.
    let mut no_to = params.clone();
    no_to.retain(|(k, _)| *k != "To");
    let resp = post_twilio(&s.app, "/omega/voice-calls/twiml", &no_to, false).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("<Say>"));
    let mut stranger = params.clone();
    stranger[3] = ("From", "client:nobody");
    let text = post_twilio(&s.app, "/omega/voice-calls/twiml", &stranger, false).await.text().await.unwrap();
    assert!(text.contains("<Hangup/>"), "{text}");
    let mut bad_number = params.clone();
    bad_number[4] = ("To", "not-a-number");
    let text = post_twilio(&s.app, "/omega/voice-calls/twiml", &bad_number, false).await.text().await.unwrap();
    assert!(text.contains("<Reject"), "{text}");
}

async fn voice_tokens_carry_every_claim(db: Db) {
    let s = setup(db).await;
    let staff = s.b.staff_ids[0];
    let body = json_of(
        s.app
            .get(&format!("/omega/voice-calls/token?business_id={}&staff_id={staff}&ttl_seconds=600", s.b.id), &s.b.key)
            .await,
        200,
    )
    .await;
    let token = body["token"].as_str().unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header, json!({ "typ": "JWT", "alg": "HS256", "cty": "twilio-fpa;v=1" }));
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], "SK22222222222222222222222222222222");
    assert_eq!(claims["sub"], "AC11111111111111111111111111111111");
    assert!(claims["jti"].as_str().unwrap().starts_with("SK22222222222222222222222222222222-"));
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["nbf"].as_i64().unwrap(), 600);
    let identity = format!("staff_{}_{staff}", s.b.id);
    assert_eq!(claims["grants"]["identity"], identity.as_str());
    assert_eq!(body["identity"], identity.as_str());
    assert_eq!(claims["grants"]["voice"]["incoming"]["allow"], true);
    assert_eq!(claims["grants"]["voice"]["outgoing"]["application_sid"], "AP33333333333333333333333333333333");
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(VOICE_SECRET.as_bytes()).unwrap();
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).expect("signed with the API key secret");

    for query in ["ttl_seconds=86401", "ttl_seconds=10"] {
        let resp = json_of(
            s.app
                .get(&format!("/omega/voice-calls/token?business_id={}&staff_id={staff}&{query}", s.b.id), &s.b.key)
                .await,
            422,
        )
        .await;
        assert!(resp.to_string().contains("ttl_seconds"));
    }
    json_of(
        s.app.get(&format!("/omega/voice-calls/token?business_id={}&staff_id=999999", s.b.id), &s.b.key).await,
        422,
    )
    .await;
    json_of(s.app.get(&format!("/omega/voice-calls/token?business_id={}&staff_id={staff}", s.b.id), "").await, 401)
        .await;
}

async fn post_sendgrid(app: &TestApp, provider: &str, body: &str, valid: bool) -> reqwest::Response {
    let timestamp = "1700000000";
    // An invalid signature is a real one over other bytes.
    let signed = if valid { format!("{timestamp}{body}") } else { format!("{timestamp}{body} ") };
    let signature: Signature = sendgrid_key().sign(signed.as_bytes());
    let signature = STANDARD.encode(signature.to_der().as_bytes());
    app.http
        .post(app.rest(&format!("/omega/email/webhooks/{provider}")))
        .header("content-type", "application/json")
        .header("x-twilio-email-event-webhook-signature", signature)
        .header("x-twilio-email-event-webhook-timestamp", timestamp)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn sendgrid_events_are_verified_and_applied_once(db: Db) {
    let s = setup(db).await;
    let queued = json_of(
        s.app
            .post(
                "/omega/email/queue",
                &s.b.key,
                Some(
                    json!({ "business_id": s.b.id, "client_id": s.client, "subject": "Booking", "content": "See you" }),
                ),
            )
            .await,
        200,
    )
    .await;
    let id = queued["messages"][0]["message_id"].as_str().unwrap().to_owned();
    common::eventually(Duration::from_secs(10), "the email to be sent", || async {
        json_of(s.app.get(&format!("/omega/messages/{id}"), &s.b.key).await, 200).await["message"]["status"] == "SENT"
    })
    .await;
    assert_eq!(s.sendgrid.accepted().len(), 1);
    let event = |event_id: &str, event: &str| {
        json!([{ "email": "carla@example.com", "timestamp": 1700000000, "event": event, "sg_event_id": event_id,
                 "sg_message_id": "abc.filter", "omega_message_id": id }])
        .to_string()
    };
    let delivered = json_of(post_sendgrid(&s.app, "sendgrid", &event("ev1", "delivered"), true).await, 200).await;
    assert_eq!(delivered["applied"], 1);
    let again = json_of(post_sendgrid(&s.app, "sendgrid", &event("ev1", "delivered"), true).await, 200).await;
    assert_eq!(again["applied"], 0, "a retried event changes nothing");
    let late = json_of(post_sendgrid(&s.app, "sendgrid", &event("ev2", "processed"), true).await, 200).await;
    assert_eq!(late["applied"], 0, "statuses never move back");
    json_of(post_sendgrid(&s.app, "sendgrid", &event("ev3", "open"), true).await, 200).await;
    let message = json_of(s.app.get(&format!("/omega/messages/{id}"), &s.b.key).await, 200).await;
    assert_eq!(message["message"]["status"], "READ");

    assert_eq!(post_sendgrid(&s.app, "sendgrid", &event("ev4", "bounce"), false).await.status(), 403);
    assert_eq!(post_sendgrid(&s.app, "mailgun", &event("ev5", "bounce"), true).await.status(), 404);
    assert_eq!(post_sendgrid(&s.app, "sendgrid", "not json", true).await.status(), 422);
}

async fn garbage_never_causes_a_500(db: Db) {
    let s = setup(db).await;
    let paths = [
        "/omega/twilio/sms/incoming",
        "/omega/twilio/sms/status",
        "/omega/twilio/voice/status",
        "/omega/voice-calls/twiml",
    ];
    let huge = "A".repeat(300 * 1024);
    for path in paths {
        for (content_type, body) in [
            ("application/json", "{\"MessageSid\":\"SM1\"}"),
            ("application/x-www-form-urlencoded", "%%%&&&==="),
            ("application/x-www-form-urlencoded", ""),
            ("text/plain", huge.as_str()),
            ("application/x-www-form-urlencoded", "\u{0}\u{1}binary"),
        ] {
            let resp = s
                .app
                .http
                .post(s.app.rest(path))
                .header("content-type", content_type)
                .body(body.to_owned())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            assert!((400..500).contains(&status), "{path} {content_type}: {status}");
        }
        // Signed, but missing what the endpoint needs: 422, never 500.
        let resp = post_twilio(&s.app, path, &[("AccountSid", FakeTwilio::ACCOUNT_SID)], false).await;
        let status = resp.status().as_u16();
        assert!(
            (400..500).contains(&status) || (path == "/omega/voice-calls/twiml" && status == 200),
            "{path}: {status}"
        );
    }
    assert_eq!(conversation_messages(&s).await["total_size"], 0);
}
