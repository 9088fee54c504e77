//! Inbound email, end to end through Envoy: real MIME samples (fixtures/: multipart/related
//! inside multipart/mixed with multipart/alternative, ISO-8859-1 quoted-printable, encoded-word
//! subjects and names, an RFC 2231 file name, an inline image, a PDF; ISO-2022-JP) posted as a
//! relay posts them (message/rfc822) and as SendGrid Inbound Parse posts them (multipart/form-data,
//! its parsed fields in the charsets it names, and its raw mode); threading by In-Reply-To, by
//! the reply address and by sender, across two businesses; dedupe; the token.

use crate::common;

use crate::common::json_of;
use common::{Db, TestApp, TestBusiness, eventually, fakes::FakeSendGrid, spawn_app_with};
use serde_json::{Value, json};
use std::time::Duration;

both_databases!(
    a_reply_threads_into_its_conversation_with_its_attachments_once,
    sendgrid_inbound_parse_in_both_modes_and_businesses_stay_apart,
);

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/fixtures");
const INBOUND_DOMAIN: &str = "in.lotus.example";

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

async fn count(app: &TestApp, table: &str) -> i64 {
    let row = app.sql(&format!("SELECT COUNT(*) AS n FROM {table}"), vec![]).await.unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

/// The business's token and its two URLs (absolute, on Envoy's host).
async fn rotate_token(app: &TestApp, b: &TestBusiness) -> (String, String, String) {
    let path = format!("/omega/businesses/{}/email/inbound_token", b.id);
    let body = json_of(app.post(&path, &b.key, None).await, 200).await;
    let text = |f: &str| body[f].as_str().unwrap().to_owned();
    (text("token"), text("sendgrid_url"), text("raw_url"))
}

async fn post_raw(app: &TestApp, url: &str, message: Vec<u8>) -> reqwest::Response {
    app.http.post(url).header("content-type", "message/rfc822").body(message).send().await.unwrap()
}

/// A multipart/form-data body as SendGrid Inbound Parse posts it: text fields (raw bytes, in
/// whatever charset `charsets` names) and files.
fn sendgrid_form(fields: &[(&str, Vec<u8>)], files: &[(&str, &str, &str, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = "xYzZY";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    for (name, file_name, content_type, data) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post_form(app: &TestApp, url: &str, (content_type, body): (String, Vec<u8>)) -> reqwest::Response {
    app.http.post(url).header("content-type", content_type).body(body).send().await.unwrap()
}

async fn messages(app: &TestApp, b: &TestBusiness, client: u64, conversation: u64) -> Vec<Value> {
    let path =
        format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/messages?page_size=200", b.id);
    json_of(app.get(&path, &b.key).await, 200).await["messages"].as_array().unwrap().clone()
}

async fn profile(app: &TestApp, b: &TestBusiness, client: u64) -> Value {
    json_of(app.get(&format!("/omega/businesses/{}/clients/{client}", b.id), &b.key).await, 200).await
}

async fn attachment_bytes(app: &TestApp, b: &TestBusiness, attachment: &Value) -> Vec<u8> {
    let resp = app.get(attachment["url"].as_str().unwrap(), &b.key).await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap().to_vec()
}

fn onboarding(name: &str, sender: &str) -> Value {
    json!({
        "external_ref": format!("ext-{name}"), "name": name, "time_zone": "America/New_York",
        "locations": [{ "name": "Main", "email_sender": sender }],
        "staff": [{ "name": "Ana", "email": format!("ana@{name}.example"), "role": "manager" }]
    })
}

async fn a_reply_threads_into_its_conversation_with_its_attachments_once(db: Db) {
    let sendgrid = FakeSendGrid::start().await;
    let base = sendgrid.base_url();
    let app = spawn_app_with(
        db,
        &[("OMEGA_SENDGRID_BASE_URL", base.as_str()), ("OMEGA_EMAIL_INBOUND_DOMAIN", INBOUND_DOMAIN)],
    )
    .await;
    let b = app.onboard(onboarding("lotus", "hello@lotus.example")).await;
    // Not the address the reply comes from: the reply is threaded by its In-Reply-To alone.
    let carla = app.upsert_client(&b, json!({ "name": "Carla", "email": "carla.diaz@client.example" })).await;
    let conversation = app.conversation(&b, carla).await;
    let put = app.rest(&format!("/omega/businesses/{}/providers/sendgrid", b.id));
    let resp = app.http.put(put).header("x-api-key", &b.key).json(&json!({ "api_key": FakeSendGrid::API_KEY })).send();
    assert_eq!(resp.await.unwrap().status(), 200);

    // The email Omega sends carries a Message-ID with its id and a reply address.
    let email = json!({ "business_id": b.id, "client_id": carla, "subject": "Tu reservación", "content": "¿Te viene bien la clase de las 6 pm?" });
    let queued = json_of(app.post("/omega/email/queue", &b.key, Some(email)).await, 200).await;
    let sent_id = queued["messages"][0]["message_id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(20), "the email reaches SendGrid", || async { !sendgrid.accepted().is_empty() })
        .await;
    let request = sendgrid.requests()[0].json.clone().unwrap();
    assert_eq!(request["headers"]["Message-ID"], format!("<{sent_id}@omega>"));
    assert_eq!(request["reply_to"]["email"], format!("reply+{sent_id}@{INBOUND_DOMAIN}"));

    // Staff resolve the conversation; the client's reply reopens it.
    let status =
        format!("/omega/businesses/{}/clients/{carla}/conversations/{conversation}/status?status=RESOLVED", b.id);
    json_of(app.post(&status, &b.key, None).await, 200).await;

    let (token, _, raw_url) = rotate_token(&app, &b).await;
    assert!(token.starts_with("omi_") && token.len() == 44, "{token}");
    assert!(raw_url.starts_with(&format!("http://{}/omega/email/inbound/omi_", app.envoy_addr)), "{raw_url}");

    // A wrong token, a malformed one, or none (no such path): refused, nothing stored.
    let reply = String::from_utf8(fixture("reply_latin1_related.eml"))
        .unwrap()
        .replace("{{IN_REPLY_TO}}", &format!("<{sent_id}@omega>"))
        .into_bytes();
    let (messages_before, attachments_before) = (count(&app, "messages").await, count(&app, "attachments").await);
    let wrong = raw_url.replace(&token, &format!("omi_{}", "A".repeat(40)));
    for url in [wrong, raw_url.replace(&token, "x"), raw_url.replace(&format!("/{token}"), "")] {
        let resp = post_raw(&app, &url, reply.clone()).await;
        assert!(matches!(resp.status().as_u16(), 403 | 404 | 415), "{url}: {}", resp.status());
    }
    assert_eq!(count(&app, "messages").await, messages_before);
    assert_eq!(count(&app, "attachments").await, attachments_before);

    // The reply, as a relay posts it.
    let stored = json_of(post_raw(&app, &raw_url, reply.clone()).await, 200).await;
    assert_eq!(stored["conversation_id"], conversation, "{stored}");
    assert_eq!(stored["client_id"], carla);
    assert_eq!(stored["duplicate"], false);
    let listed = messages(&app, &b, carla, conversation).await;
    let inbound: Vec<&Value> = listed.iter().filter(|m| m["direction"] == "INBOUND").collect();
    assert_eq!(inbound.len(), 1, "{listed:?}");
    let message = inbound[0];
    assert_eq!(message["channel"], "EMAIL");
    assert_eq!(message["id"], stored["message_id"]);
    // ISO-8859-1 quoted-printable decoded, the quoted history left out; the subject's encoded word.
    assert_eq!(message["content"], "Sí, las 6 pm me viene bien. ¡Gracias!\n\nCarla");
    assert_eq!(message["subject"], "Re: Tu reservación");
    assert_eq!(message["provider_message_id"], "<CAF-reply-1@mail.client.example>");
    let attachments = message["attachments"].as_array().unwrap();
    let named = |name: &str| {
        attachments.iter().find(|a| a["file_name"] == name).unwrap_or_else(|| panic!("{name} in {attachments:?}"))
    };
    let logo = named("logo.png");
    assert_eq!(
        (logo["file_type"].as_str(), logo["width"].as_u64(), logo["height"].as_u64()),
        (Some("image"), Some(2), Some(1))
    );
    assert_eq!(attachment_bytes(&app, &b, logo).await, fixture("logo.png"));
    let pdf = named("exención.pdf");
    assert_eq!(pdf["content_type"], "application/pdf");
    assert_eq!(attachment_bytes(&app, &b, pdf).await, fixture("waiver.pdf"));
    // The whole message, quoted history included, as it came.
    let original = named("original.eml");
    assert_eq!(original["content_type"], "message/rfc822");
    assert_eq!(attachment_bytes(&app, &b, original).await, reply);
    assert_eq!(attachments.len(), 3);

    // Staff send the client's PDF on (an email carries files the business holds); an id that is
    // not one of them is a 422 naming it, and nothing is queued.
    let forward = json!({ "business_id": b.id, "client_id": carla, "subject": "Firmado", "content": "Adjunto.", "attachment_ids": [pdf["id"]] });
    let queued = json_of(app.post("/omega/email/queue", &b.key, Some(forward.clone())).await, 200).await;
    let forward_id = queued["messages"][0]["message_id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(20), "the email with the PDF reaches SendGrid", || async {
        sendgrid.accepted().len() == 2
    })
    .await;
    let request = sendgrid.requests().last().unwrap().json.clone().unwrap();
    assert_eq!(request["custom_args"]["omega_message_id"], forward_id.as_str());
    assert_eq!(request["attachments"][0]["filename"], "exención.pdf");
    assert_eq!(request["attachments"][0]["type"], "application/pdf");
    let content = request["attachments"][0]["content"].as_str().unwrap();
    assert_eq!(base64_decode(content), fixture("waiver.pdf"));
    let mut unknown = forward.clone();
    unknown["attachment_ids"] = json!([pdf["id"], 999_999]);
    let refused = json_of(app.post("/omega/email/queue", &b.key, Some(unknown)).await, 422).await;
    assert_eq!(refused["details"][0]["field_violations"][0]["field"], "attachment_ids[1]", "{refused}");

    let summary = profile(&app, &b, carla).await;
    assert_eq!(summary["conversation"]["status"], "OPEN", "{summary}");
    assert_eq!(summary["conversation"]["unread_count"], 1, "{summary}");

    // The same email again (the relay retrying): 200, nothing new.
    let (messages_after, attachments_after) = (count(&app, "messages").await, count(&app, "attachments").await);
    let again = json_of(post_raw(&app, &raw_url, reply.clone()).await, 200).await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["message_id"], stored["message_id"]);
    assert_eq!(count(&app, "messages").await, messages_after);
    assert_eq!(count(&app, "attachments").await, attachments_after);

    // A reply from another address, with no In-Reply-To, finds the thread by the reply address.
    let forwarded = format!(
        "From: Carla at work <carla@work.example>\r\nTo: reply+{sent_id}@{INBOUND_DOMAIN}\r\nSubject: Re: Tu reservación\r\nMessage-ID: <work-1@work.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nFrom my work address: see you at 6.\r\n"
    );
    let by_address = json_of(post_raw(&app, &raw_url, forwarded.into_bytes()).await, 200).await;
    assert_eq!(by_address["conversation_id"], conversation, "{by_address}");
    assert_eq!(profile(&app, &b, carla).await["conversation"]["unread_count"], 2);

    // Rotating the token retires the old one.
    let (new_token, _, new_raw_url) = rotate_token(&app, &b).await;
    assert_ne!(new_token, token);
    assert_eq!(post_raw(&app, &raw_url, b"From: x@y.example\r\n\r\nhi".to_vec()).await.status(), 403);
    // Bad input with a good token: a body that is not an email is a 422 naming it.
    let bad = json_of(post_raw(&app, &new_raw_url, b"\r\n\r\n".to_vec()).await, 422).await;
    assert_eq!(bad["details"][0]["field_violations"][0]["field"], "body", "{bad}");
    // Only the hash is stored.
    let row = app.sql("SELECT token_hash FROM email_inbound_tokens", vec![]).await.unwrap();
    let hash: String = row.try_get("", "token_hash").unwrap();
    assert!(!hash.contains(&new_token[4..]) && hash.len() == 64, "{hash}");
}

async fn sendgrid_inbound_parse_in_both_modes_and_businesses_stay_apart(db: Db) {
    let app = spawn_app_with(db, &[]).await;
    let lotus = app.onboard(onboarding("lotus", "hello@lotus.example")).await;
    let other = app.onboard(onboarding("other", "hi@other.example")).await;
    let hanako = app.upsert_client(&lotus, json!({ "name": "Hanako", "email": "hanako@client.example" })).await;
    let (_, sendgrid_url, raw_url) = rotate_token(&app, &lotus).await;
    let (_, other_sendgrid_url, _) = rotate_token(&app, &other).await;

    // Parsed mode, an unknown sender: the text in windows-1252, the HTML in ISO-8859-1, as the
    // `charsets` field says; the original headers carry the ids and an encoded-word subject.
    let headers = "Received: by mx.sendgrid.net\nFrom: =?UTF-8?Q?Jos=C3=A9_P=C3=A9rez?= <jose@new.example>\nTo: hello@lotus.example\nSubject: =?windows-1252?Q?Caf=E9_=96_horarios?=\nMessage-ID: <parsed-1@new.example>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n";
    let text: Vec<u8> =
        b"\x93Hola\x94, \xbfqu\xe9 horarios tienen?\n\nOn Mon, Nov 30, 2026 Lotus wrote:\n> old".to_vec();
    let html: Vec<u8> = b"<p>Hola, \xbfqu\xe9 horarios tienen?</p>".to_vec();
    let form = sendgrid_form(
        &[
            ("headers", headers.as_bytes().to_vec()),
            ("dkim", b"{@new.example : pass}".to_vec()),
            ("content-ids", b"{}".to_vec()),
            ("to", b"hello@lotus.example".to_vec()),
            ("from", "José Pérez <jose@new.example>".as_bytes().to_vec()),
            ("text", text),
            ("html", html),
            ("sender_ip", b"203.0.113.7".to_vec()),
            ("envelope", br#"{"to":["hello@lotus.example"],"from":"jose@new.example"}"#.to_vec()),
            ("attachments", b"1".to_vec()),
            ("subject", b"Caf\xe9 \x96 horarios".to_vec()),
            (
                "charsets",
                br#"{"to":"UTF-8","html":"iso-8859-1","subject":"windows-1252","from":"UTF-8","text":"windows-1252"}"#
                    .to_vec(),
            ),
            ("SPF", b"pass".to_vec()),
            (
                "attachment-info",
                br#"{"attachment1":{"filename":"waiver.pdf","name":"waiver.pdf","type":"application/pdf"}}"#.to_vec(),
            ),
        ],
        &[("attachment1", "waiver.pdf", "application/pdf", fixture("waiver.pdf"))],
    );
    let clients_before = count(&app, "clients").await;
    let stored = json_of(post_form(&app, &sendgrid_url, form.clone()).await, 200).await;
    assert_eq!(count(&app, "clients").await, clients_before + 1, "an unknown sender becomes a client");
    let jose = stored["client_id"].as_u64().unwrap();
    let jose_profile = profile(&app, &lotus, jose).await;
    assert_eq!(jose_profile["client"]["email"], "jose@new.example", "{jose_profile}");
    assert_eq!(jose_profile["client"]["name"], "José Pérez");
    assert_eq!(jose_profile["conversation"]["unread_count"], 1);
    let listed = messages(&app, &lotus, jose, stored["conversation_id"].as_u64().unwrap()).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["content"], "“Hola”, ¿qué horarios tienen?");
    assert_eq!(listed[0]["subject"], "Café – horarios");
    let attachments = listed[0]["attachments"].as_array().unwrap();
    let pdf = attachments.iter().find(|a| a["file_name"] == "waiver.pdf").expect("the PDF");
    assert_eq!(attachment_bytes(&app, &lotus, pdf).await, fixture("waiver.pdf"));
    let full = attachments.iter().find(|a| a["file_name"] == "message.txt").expect("the full text");
    let full = String::from_utf8(attachment_bytes(&app, &lotus, full).await).unwrap();
    assert!(full.contains("“Hola”") && full.contains("> old"), "{full}");
    // SendGrid retries the same post: nothing new.
    let again = json_of(post_form(&app, &sendgrid_url, form).await, 200).await;
    assert_eq!((again["duplicate"].as_bool(), &again["message_id"]), (Some(true), &stored["message_id"]));
    assert_eq!(count(&app, "clients").await, clients_before + 1);

    // Raw mode ("POST the raw, full MIME message"): ISO-2022-JP from a known client, threaded by
    // the sender's address.
    let raw = fixture("new_iso2022jp.eml");
    let form = sendgrid_form(
        &[
            ("email", raw.clone()),
            ("to", b"hello@lotus.example".to_vec()),
            ("from", b"hanako@client.example".to_vec()),
            ("envelope", br#"{"to":["hello@lotus.example"],"from":"hanako@client.example"}"#.to_vec()),
            ("charsets", br#"{"to":"UTF-8","from":"UTF-8","subject":"UTF-8"}"#.to_vec()),
        ],
        &[],
    );
    let stored = json_of(post_form(&app, &sendgrid_url, form).await, 200).await;
    assert_eq!(stored["client_id"], hanako, "{stored}");
    let conversation = app.conversation(&lotus, hanako).await;
    assert_eq!(stored["conversation_id"], conversation);
    let listed = messages(&app, &lotus, hanako, conversation).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["subject"], "予約について");
    assert_eq!(listed[0]["content"], "こんにちは。来週の予約を変更できますか？\n\n山田");
    let original =
        listed[0]["attachments"].as_array().unwrap().iter().find(|a| a["file_name"] == "original.eml").cloned();
    assert_eq!(attachment_bytes(&app, &lotus, &original.expect("the original")).await, raw);

    // Another business's token cannot thread into this business: a reply that names this
    // business's message stays in the other business, with its own client.
    let record = json!({ "business_id": lotus.id, "client_id": hanako, "direction": "OUTBOUND", "subject": "Hola", "content": "Nos vemos" });
    let sent = json_of(app.post("/omega/email/record", &lotus.key, Some(record)).await, 200).await;
    let sent_id = sent["message_id"].as_str().unwrap().to_owned();
    let lotus_messages = listed.len() + 1;
    let crossing = format!(
        "From: hanako@client.example\r\nTo: reply+{sent_id}@{INBOUND_DOMAIN}\r\nSubject: Re: Hola\r\nMessage-ID: <cross-1@client.example>\r\nIn-Reply-To: <{sent_id}@omega>\r\nContent-Type: text/plain\r\n\r\nHi\r\n"
    );
    let form = sendgrid_form(&[("email", crossing.into_bytes())], &[]);
    let elsewhere = json_of(post_form(&app, &other_sendgrid_url, form).await, 200).await;
    assert_ne!(elsewhere["conversation_id"], conversation);
    assert_ne!(elsewhere["client_id"], hanako);
    let other_client = elsewhere["client_id"].as_u64().unwrap();
    assert_eq!(profile(&app, &other, other_client).await["client"]["email"], "hanako@client.example");
    assert_eq!(messages(&app, &lotus, hanako, conversation).await.len(), lotus_messages);
    // Nor can it read this business's client through that id.
    assert_eq!(app.get(&format!("/omega/businesses/{}/clients/{hanako}", other.id), &other.key).await.status(), 404);

    // Mail services wrap the message: Mailgun's route to a URL ending in `mime` posts it as the
    // `body-mime` field; Postmark's inbound JSON carries it as `RawEmail`.
    let mailgun_message = "From: Hanako <hanako@client.example>\r\nTo: hello@lotus.example\r\nSubject: =?UTF-8?B?5LqI57SE?=\r\nMessage-ID: <mg-1@client.example>\r\nContent-Type: text/plain; charset=windows-1252\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nMerci =96 =3D\r\n";
    let form = sendgrid_form(
        &[
            ("recipient", b"hello@lotus.example".to_vec()),
            ("sender", b"hanako@client.example".to_vec()),
            ("timestamp", b"1796371200".to_vec()),
            ("token", b"5f1c0e7d".to_vec()),
            ("signature", b"0f3e".to_vec()),
            ("body-mime", mailgun_message.as_bytes().to_vec()),
        ],
        &[],
    );
    // (The route's URL ends in `mime` by a query parameter Omega ignores.)
    let by_mailgun = json_of(post_form(&app, &format!("{raw_url}?format=mime"), form).await, 200).await;
    assert_eq!(by_mailgun["client_id"], hanako, "{by_mailgun}");
    let postmark = json!({
        "From": "hanako@client.example", "MessageID": "8b1f", "Subject": "Gracias",
        "RawEmail": "From: hanako@client.example\r\nTo: hello@lotus.example\r\nSubject: Gracias\r\nMessage-ID: <pm-1@client.example>\r\n\r\nNos vemos.\r\n"
    });
    let resp = app.http.post(&raw_url).json(&postmark).send().await.unwrap();
    assert_eq!(json_of(resp, 200).await["client_id"], hanako);
    let listed = messages(&app, &lotus, hanako, conversation).await;
    let contents: Vec<&str> = listed.iter().filter_map(|m| m["content"].as_str()).collect();
    assert!(contents.contains(&"Merci – =") && contents.contains(&"Nos vemos."), "{contents:?}");
    assert!(listed.iter().any(|m| m["subject"] == "予約"), "{listed:?}");

    // A form that is not SendGrid's: 422, nothing stored.
    let before = count(&app, "messages").await;
    let resp = app.http.post(&sendgrid_url).header("content-type", "text/plain").body("hello").send().await.unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(count(&app, "messages").await, before);
}
