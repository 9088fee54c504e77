//! Provider webhooks through real Envoy, posted as the providers post them: form bodies signed
//! over the public URL (Twilio), JSON arrays signed with ECDSA (SendGrid).

use crate::common;

use std::time::Duration;

use crate::common::json_of;
use crate::common::{C_SID, C_TOKEN, PLATFORM_SID, PLATFORM_TOKEN};
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
    a_twilio_account_belongs_to_one_business,
    webhooks_must_be_signed_by_the_account_that_owns_what_they_address,
    another_businesss_provider_message_id_answers_as_an_unknown_one,
    provider_secrets_are_sealed_at_rest_and_rotate,
);

const C_SERVICE: &str = "MGcccccccccccccccccccccccccccccccc";

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
            ("OMEGA_TWILIO_ACCOUNT_SID", PLATFORM_SID),
            ("OMEGA_TWILIO_AUTH_TOKEN", PLATFORM_TOKEN),
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
    post_twilio_signed(app, path, params, FakeTwilio::AUTH_TOKEN, tamper).await
}

/// `post_twilio`, signed with `token`.
async fn post_twilio_signed(
    app: &TestApp,
    path: &str,
    params: &[(&str, &str)],
    token: &str,
    tamper: bool,
) -> reqwest::Response {
    let url = app.rest(path);
    let owned: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let signature = twilio_signature(token, &url, &owned);
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

    // A number nobody uses: refused like a forgery (there is no owner to verify it against, and
    // the answer must not tell the two apart), and dropped.
    let mut stray = inbound("SM101", "hello?");
    stray[3] = ("To", "+14155550999");
    assert_eq!(post_twilio(&s.app, "/omega/twilio/sms/incoming", &stray, false).await.status(), 403);
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

/// Queues "Hi" to the setup's client; answers the message id.
async fn queue_hi(s: &Setup) -> String {
    let body = json!({ "business_id": s.b.id, "client_id": s.client, "content": "Hi" });
    let queued = json_of(s.app.post("/omega/sms/queue", &s.b.key, Some(body)).await, 200).await;
    queued["messages"][0]["message_id"].as_str().unwrap().to_owned()
}

async fn status_callbacks_move_messages_forward_only(db: Db) {
    let s = setup(db).await;
    let id = queue_hi(&s).await;
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
    // Unknown messages are refused like forgeries: a message of another business must answer
    // the same as no message at all.
    assert_eq!(status("delivered", "SMunknown".into()).await, 403);
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
    // Twilio reports the dialed `<Number>` leg under its own CallSid, naming the browser's call
    // as ParentCallSid: applied to the call record.
    let leg = vec![
        ("CallSid", "CA501"),
        ("ParentCallSid", "CA500"),
        ("AccountSid", FakeTwilio::ACCOUNT_SID),
        ("CallStatus", "completed"),
        ("SequenceNumber", "4"),
        ("CallDuration", "50"),
    ];
    assert_eq!(post_twilio(&s.app, "/omega/twilio/voice/status", &leg, false).await.status(), 200);
    assert_eq!(conversation_messages(&s).await["messages"][0]["duration_seconds"], 50);

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

async fn put_provider(app: &TestApp, business: &TestBusiness, kind: &str, body: Value) -> reqwest::Response {
    app.http
        .put(app.rest(&format!("/omega/businesses/{}/providers/{kind}", business.id)))
        .header("x-api-key", &business.key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn provider_settings(app: &TestApp, business: &TestBusiness) -> Value {
    json_of(app.get(&format!("/omega/businesses/{}/providers", business.id), &business.key).await, 200).await
}

async fn a_twilio_account_belongs_to_one_business(db: Db) {
    let s = setup(db).await;
    let c = s.app.onboard_simple("Cedar", "+14155550200").await;
    // The account b registered, with c's own token (any spelling): taken.
    for sid in [FakeTwilio::ACCOUNT_SID.to_owned(), FakeTwilio::ACCOUNT_SID.to_uppercase()] {
        let body = json!({ "account_sid": sid, "auth_token": C_TOKEN });
        let refused = json_of(put_provider(&s.app, &c, "twilio", body).await, 409).await;
        assert!(refused["message"].as_str().unwrap().contains("another business"), "{refused}");
    }
    // The platform's account (the `sub` of every voice token): refused, naming the field.
    let body = json!({ "account_sid": PLATFORM_SID, "auth_token": C_TOKEN });
    let refused = json_of(put_provider(&s.app, &c, "twilio", body).await, 422).await;
    assert_eq!(refused["details"][0]["field_violations"][0]["field"], "account_sid", "{refused}");
    assert_eq!(provider_settings(&s.app, &c).await["twilio_configured"], false);
    // b still owns its account, and c may have one of its own.
    assert_eq!(provider_settings(&s.app, &s.b).await["twilio_account_sid"], FakeTwilio::ACCOUNT_SID);
    let own = json!({ "account_sid": C_SID, "auth_token": C_TOKEN });
    json_of(put_provider(&s.app, &c, "twilio", own).await, 200).await;
}

async fn webhooks_must_be_signed_by_the_account_that_owns_what_they_address(db: Db) {
    let s = setup(db).await;
    let consent = || async {
        let path = format!("/omega/businesses/{}/clients/{}", s.b.id, s.client);
        json_of(s.app.get(&path, &s.b.key).await, 200).await["client"]["sms_consent"].as_bool().unwrap()
    };
    let c = s
        .app
        .onboard(json!({
            "name": "Cedar", "time_zone": "America/New_York",
            "locations": [{ "name": "Main", "phone_numbers": ["+14155550200"], "messaging_service_sid": C_SERVICE }],
        }))
        .await;
    // c tries to claim b's account with its own token (refused now), then forges a STOP from
    // b's client to b's number with that token: refused, consent unchanged, nothing stored.
    let claim = json!({ "account_sid": FakeTwilio::ACCOUNT_SID, "auth_token": C_TOKEN });
    assert_eq!(put_provider(&s.app, &c, "twilio", claim).await.status(), 409);
    let stop = inbound("SM900", "STOP");
    let resp = post_twilio_signed(&s.app, "/omega/twilio/sms/incoming", &stop, C_TOKEN, false).await;
    assert_eq!(resp.status(), 403);
    // Signed by c's own account, naming it: still not the account of b's number.
    json_of(put_provider(&s.app, &c, "twilio", json!({ "account_sid": C_SID, "auth_token": C_TOKEN })).await, 200)
        .await;
    let mut own_account = inbound("SM901", "STOP");
    own_account[1] = ("AccountSid", C_SID);
    let resp = post_twilio_signed(&s.app, "/omega/twilio/sms/incoming", &own_account, C_TOKEN, false).await;
    assert_eq!(resp.status(), 403);
    // c's own messaging service with b's number: they disagree, so the message has no owner.
    let mut mixed = own_account.clone();
    mixed.push(("MessagingServiceSid", C_SERVICE));
    let resp = post_twilio_signed(&s.app, "/omega/twilio/sms/incoming", &mixed, C_TOKEN, false).await;
    assert_eq!(resp.status(), 403);
    // Signed by the platform's account: b has an account of its own, so not b's either.
    let mut platform = inbound("SM902", "STOP");
    platform[1] = ("AccountSid", PLATFORM_SID);
    let resp = post_twilio_signed(&s.app, "/omega/twilio/sms/incoming", &platform, PLATFORM_TOKEN, false).await;
    assert_eq!(resp.status(), 403);
    assert!(consent().await, "no forged STOP changed the consent");
    assert_eq!(conversation_messages(&s).await["total_size"], 0, "nothing was stored");
    // c's own number, signed by c's own account: accepted (the rule does not lock owners out).
    let mut c_inbound = inbound("SM903", "hello");
    c_inbound[1] = ("AccountSid", C_SID);
    c_inbound[3] = ("To", "+14155550200");
    let resp = post_twilio_signed(&s.app, "/omega/twilio/sms/incoming", &c_inbound, C_TOKEN, false).await;
    assert_eq!(resp.status(), 200);

    // A status callback for b's message, correctly signed by c's account (or the platform's):
    // refused, the status unchanged.
    let id = queue_hi(&s).await;
    let status_of = || async {
        json_of(s.app.get(&format!("/omega/messages/{id}"), &s.b.key).await, 200).await["message"]["status"].clone()
    };
    common::eventually(Duration::from_secs(10), "SENT", || async { status_of().await == "SENT" }).await;
    let sid = s.twilio.messages()[0].sid.clone();
    for (account, token) in [(C_SID, C_TOKEN), (PLATFORM_SID, PLATFORM_TOKEN), (FakeTwilio::ACCOUNT_SID, C_TOKEN)] {
        let params = vec![("MessageSid", sid.as_str()), ("AccountSid", account), ("MessageStatus", "delivered")];
        let resp = post_twilio_signed(&s.app, "/omega/twilio/sms/status", &params, token, false).await;
        assert_eq!(resp.status(), 403, "signed by {account}");
    }
    assert_eq!(status_of().await, "SENT");
    // A browser call placed as b's staff, signed by c's account: refused, no call recorded.
    let from = format!("client:staff_{}_{}", s.b.id, s.b.staff_ids[0]);
    let call = vec![("CallSid", "CA900"), ("AccountSid", C_SID), ("From", from.as_str()), ("To", "+14155550199")];
    let resp = post_twilio_signed(&s.app, "/omega/voice-calls/twiml", &call, C_TOKEN, false).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(conversation_messages(&s).await["total_size"], 1, "only the SMS b sent");
    // b's own account moves it.
    let params =
        vec![("MessageSid", sid.as_str()), ("AccountSid", FakeTwilio::ACCOUNT_SID), ("MessageStatus", "delivered")];
    assert_eq!(post_twilio(&s.app, "/omega/twilio/sms/status", &params, false).await.status(), 200);
    assert_eq!(status_of().await, "DELIVERED");
}

async fn another_businesss_provider_message_id_answers_as_an_unknown_one(db: Db) {
    let s = setup(db).await;
    let c = s.app.onboard_simple("Cedar", "+14155550200").await;
    let c_client = s.app.upsert_client(&c, json!({ "name": "Dan", "phone": "+14155550188" })).await;
    let record = |business: &TestBusiness, client: u64, provider_id: &str| {
        json!({ "business_id": business.id, "client_id": client, "direction": "OUTBOUND", "content": "Sent elsewhere",
                "status": "delivered", "provider": "twilio", "provider_message_id": provider_id })
    };
    json_of(s.app.post("/omega/sms/record", &s.b.key, Some(record(&s.b, s.client, "SMheld1"))).await, 200).await;
    // c records the id b holds, and an id nobody holds: the same answer.
    let held = s.app.post("/omega/sms/record", &c.key, Some(record(&c, c_client, "SMheld1"))).await;
    let unknown = s.app.post("/omega/sms/record", &c.key, Some(record(&c, c_client, "SMnobody1"))).await;
    assert_eq!(held.status(), unknown.status());
    let (held, unknown) = (json_of(held, 200).await, json_of(unknown, 200).await);
    assert_eq!(held["status"], unknown["status"]);
    assert_ne!(held["message_id"], unknown["message_id"]);
    // Each business keeps its own message under the id; b's is untouched.
    let again =
        json_of(s.app.post("/omega/sms/record", &c.key, Some(record(&c, c_client, "SMheld1"))).await, 200).await;
    assert_eq!(again["message_id"], held["message_id"], "the id still dedupes within c");
    assert_eq!(conversation_messages(&s).await["total_size"], 1);
}

async fn queue_sms(s: &Setup) {
    let body = json!({ "business_id": s.b.id, "client_id": s.client, "content": "Hi" });
    json_of(s.app.post("/omega/sms/queue", &s.b.key, Some(body)).await, 200).await;
}

/// The `config` column of a business's credentials, as stored.
async fn stored_config(app: &TestApp, business: &TestBusiness, kind: &str) -> String {
    let row = app
        .sql(
            "SELECT config FROM provider_credentials WHERE business_id = $1 AND kind = $2",
            vec![(business.id as i64).into(), kind.into()],
        )
        .await
        .expect("a credentials row");
    row.try_get::<String>("", "config").unwrap()
}

async fn provider_secrets_are_sealed_at_rest_and_rotate(db: Db) {
    let mut s = setup(db).await;
    // Sealed: no secret in the row, and the row names its key.
    let twilio = stored_config(&s.app, &s.b, "twilio").await;
    let sendgrid = stored_config(&s.app, &s.b, "sendgrid").await;
    assert!(!twilio.contains(FakeTwilio::AUTH_TOKEN) && !sendgrid.contains(FakeSendGrid::API_KEY), "{twilio}");
    assert!(twilio.starts_with("omega:v1:") && !twilio.contains(FakeTwilio::ACCOUNT_SID), "{twilio}");
    let old_id = twilio.split(':').nth(2).unwrap().to_owned();
    // …and still works: an SMS goes out with the stored token.
    queue_sms(&s).await;
    common::eventually(Duration::from_secs(10), "the SMS to be sent", || async { !s.twilio.messages().is_empty() })
        .await;
    assert!(s.twilio.requests().iter().all(|r| r.authenticated));

    // A row stored in clear before encryption existed: read as it is.
    let c = s.app.onboard_simple("Cedar", "+14155550200").await;
    let legacy = r#"{"host":"smtp.cedar.example","port":2525,"tls":"none","username":"cedar","password":"legacy-smtp-password"}"#;
    s.app
        .sql(
            "INSERT INTO provider_credentials (business_id, kind, config, updated_at) VALUES ($1, 'smtp', $2, $3)",
            vec![(c.id as i64).into(), legacy.into(), chrono::Utc::now().into()],
        )
        .await;
    assert_eq!(provider_settings(&s.app, &c).await["smtp_host"], "smtp.cedar.example");

    // Rotation: a new key, the old one (the key file's) given as previous.
    let old_key = std::fs::read_to_string(s.app.dir.path().join("omega-secrets.key")).unwrap().trim().to_owned();
    let new_key = STANDARD.encode([42u8; 32]);
    let rotate = |env: Vec<(&'static str, String)>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_omega"));
        command.args(["keys", "rotate-secrets"]).env_clear().env("OMEGA_DATABASE_URL", &s.app.db.url);
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().unwrap()
    };
    // Without the old key the rows cannot be read: the rotation fails and changes nothing.
    let failed = rotate(vec![("OMEGA_SECRETS_KEY", new_key.clone()), ("OMEGA_SECRETS_KEY_ID", "k2".into())]);
    assert!(!failed.status.success());
    assert_eq!(stored_config(&s.app, &s.b, "twilio").await, twilio);
    let done = rotate(vec![
        ("OMEGA_SECRETS_KEY", new_key.clone()),
        ("OMEGA_SECRETS_KEY_ID", "k2".into()),
        ("OMEGA_SECRETS_PREVIOUS_KEYS", old_key.clone()),
    ]);
    let output = String::from_utf8_lossy(&done.stderr).into_owned();
    assert!(done.status.success(), "{output}");
    assert!(output.contains("3 of 3"), "{output}");
    assert!(!output.contains(&new_key) && !output.contains(&old_key), "no key is printed");
    for (business, kind, secret) in [
        (&s.b, "twilio", FakeTwilio::AUTH_TOKEN),
        (&s.b, "sendgrid", FakeSendGrid::API_KEY),
        (&c, "smtp", "legacy-smtp-password"),
    ] {
        let stored = stored_config(&s.app, business, kind).await;
        assert!(stored.starts_with("omega:v1:k2:") && !stored.contains(secret), "{stored}");
    }
    assert_ne!(old_id, "k2");

    // The old key dropped: Omega runs on the new one alone, and the credentials still work.
    let mut env: Vec<(String, String)> = s.app.env.clone();
    env.push(("OMEGA_SECRETS_KEY".into(), new_key.clone()));
    env.push(("OMEGA_SECRETS_KEY_ID".into(), "k2".into()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    s.app.restart(&env_refs).await;
    std::fs::remove_file(s.app.dir.path().join("omega-secrets.key")).unwrap();
    queue_sms(&s).await;
    common::eventually(Duration::from_secs(10), "the second SMS to be sent", || async {
        s.twilio.messages().len() == 2
    })
    .await;
    assert!(s.twilio.requests().iter().all(|r| r.authenticated));
    assert_eq!(provider_settings(&s.app, &c).await["smtp_host"], "smtp.cedar.example");
}
