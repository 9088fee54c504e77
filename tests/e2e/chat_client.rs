//! The Chatwoot public client API as Chatwoot's own clients call it, through the real Envoy: the
//! inbox's details, custom attributes, a base URL ending in `/`, Chatwoot's 404 for ids that
//! cannot exist, form-encoded bodies, and multipart `attachments[]` uploads served back with
//! access checks (to the contact, and to staff over REST and gRPC).

use crate::common;

use crate::common::{chat_inbox as inbox, chat_path as public, json_of};
use common::{Db, TestApp, spawn_app, spawn_app_with, with_key};
use omega::proto::omega::v1::{
    GetAttachmentRequest, ListConversationMessagesRequest, attachment_service_client::AttachmentServiceClient,
    conversation_service_client::ConversationServiceClient,
};
use serde_json::{Value, json};

both_databases!(
    inbox_details_as_chatwoot_renders_them,
    custom_attributes_are_kept_and_rendered,
    double_slashes_and_impossible_ids,
    form_encoded_bodies_work_like_json,
    attachments_are_stored_and_served_only_to_their_readers,
    attachment_limits_are_enforced_and_write_nothing,
    the_python_sdk_drives_a_whole_visitor_journey,
    attachments_in_a_bucket_are_shared_by_replicas,
    attachment_links_carry_the_hash_on_a_strict_inbox,
);

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    app.http.request(method, app.rest(path)).header("content-type", content_type).body(body).send().await.unwrap()
}

async fn post_json(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    send(app, reqwest::Method::POST, path, "application/json", body.to_string().into_bytes()).await
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.http.get(app.rest(path)).send().await.unwrap()
}

/// A contact and its conversation: (source id, conversation id).
async fn contact_with_conversation(app: &TestApp, inbox: &Value, body: Value) -> (String, u64) {
    let contact = json_of(post_json(app, &public(inbox, "/contacts"), body).await, 200).await;
    let source = contact["source_id"].as_str().unwrap().to_owned();
    let conversation =
        json_of(post_json(app, &public(inbox, &format!("/contacts/{source}/conversations")), json!({})).await, 200)
            .await;
    (source, conversation["id"].as_u64().unwrap())
}

/// The field a 422 names (the first field violation in its details).
fn violated_field(error: &Value) -> String {
    let details = error["details"].as_array().cloned().unwrap_or_default();
    details
        .iter()
        .flat_map(|d| d["field_violations"].as_array().cloned().unwrap_or_default())
        .map(|v| v["field"].as_str().unwrap_or_default().to_owned())
        .next()
        .unwrap_or_else(|| panic!("no field violation in {error}"))
}

async fn inbox_details_as_chatwoot_renders_them(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let (open, strict) = (inbox(&app, &b, false).await, inbox(&app, &b, true).await);
    let details = json_of(get(&app, &public(&open, "")).await, 200).await;
    assert_eq!(details["identifier"], open["inbox_identifier"]);
    assert_eq!(details["name"], "Website chat");
    assert_eq!(details["identity_validation_enabled"], false);
    assert!(details["timezone"].as_str().is_some_and(|z| !z.is_empty()), "{details}");
    assert_eq!(details["working_hours"], json!([]));
    for field in ["working_hours_enabled", "csat_survey_enabled", "greeting_enabled"] {
        assert_eq!(details[field], false, "{field}: {details}");
    }
    // The hmac token is the business's secret: never shown.
    assert!(!details.to_string().contains(open["hmac_token"].as_str().unwrap()), "{details}");
    assert_eq!(json_of(get(&app, &public(&strict, "")).await, 200).await["identity_validation_enabled"], true);
    let missing = json_of(get(&app, "/public/api/v1/inboxes/nope").await, 404).await;
    assert_eq!(missing["code"], 5, "{missing}");
    assert_eq!(missing["error"], "Resource could not be found", "{missing}");
    // The /omega API's 404s stay Omega's own shape.
    let omega = json_of(app.get("/omega/businesses/999999/clients/1", &b.key).await, 404).await;
    assert!(omega.get("error").is_none(), "{omega}");
}

async fn custom_attributes_are_kept_and_rendered(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let inbox = inbox(&app, &b, false).await;
    let created = json_of(
        post_json(&app, &public(&inbox, "/contacts"), json!({ "name": "Ann", "custom_attributes": { "plan": "pro" } }))
            .await,
        200,
    )
    .await;
    assert_eq!(created["custom_attributes"], json!({ "plan": "pro" }));
    let source = created["source_id"].as_str().unwrap().to_owned();
    let contact = public(&inbox, &format!("/contacts/{source}"));
    // An update merges key by key, as Chatwoot does.
    let body = json!({ "custom_attributes": { "seats": 3, "plan": "team" } }).to_string().into_bytes();
    let updated = json_of(send(&app, reqwest::Method::PATCH, &contact, "application/json", body).await, 200).await;
    assert_eq!(updated["custom_attributes"], json!({ "plan": "team", "seats": 3 }));
    assert_eq!(
        json_of(get(&app, &contact).await, 200).await["custom_attributes"],
        json!({ "plan": "team", "seats": 3 })
    );

    let conversations = format!("{contact}/conversations");
    let conversation =
        json_of(post_json(&app, &conversations, json!({ "custom_attributes": { "topic": "billing" } })).await, 200)
            .await;
    assert_eq!(conversation["custom_attributes"], json!({ "topic": "billing" }));
    assert_eq!(conversation["contact"]["custom_attributes"], json!({ "plan": "team", "seats": 3 }));
    let id = conversation["id"].as_u64().unwrap();
    let again =
        json_of(post_json(&app, &conversations, json!({ "custom_attributes": { "order": 42 } })).await, 200).await;
    assert_eq!(again["id"], id);
    assert_eq!(again["custom_attributes"], json!({ "topic": "billing", "order": 42 }));
    let got = json_of(get(&app, &format!("{conversations}/{id}")).await, 200).await;
    assert_eq!(got["custom_attributes"], json!({ "topic": "billing", "order": 42 }));

    // Anything but an object, or too much of it: a 422 naming the field, and nothing changes.
    let huge = json!({ "notes": "x".repeat(20_000) });
    for bad in [json!("pro"), json!([1, 2]), json!(7), huge] {
        let body = json!({ "custom_attributes": bad }).to_string().into_bytes();
        let refused = json_of(send(&app, reqwest::Method::PATCH, &contact, "application/json", body).await, 422).await;
        assert_eq!(violated_field(&refused), "custom_attributes", "{refused}");
        let refused = json_of(post_json(&app, &conversations, json!({ "custom_attributes": bad })).await, 422).await;
        assert_eq!(violated_field(&refused), "custom_attributes", "{refused}");
        let refused =
            json_of(post_json(&app, &public(&inbox, "/contacts"), json!({ "custom_attributes": bad })).await, 422)
                .await;
        assert_eq!(violated_field(&refused), "custom_attributes", "{refused}");
    }
    assert_eq!(
        json_of(get(&app, &contact).await, 200).await["custom_attributes"],
        json!({ "plan": "team", "seats": 3 })
    );
    let got = json_of(get(&app, &format!("{conversations}/{id}")).await, 200).await;
    assert_eq!(got["custom_attributes"], json!({ "topic": "billing", "order": 42 }));
    // null changes nothing.
    let body = json!({ "custom_attributes": null, "name": "Ann B" }).to_string().into_bytes();
    let updated = json_of(send(&app, reqwest::Method::PATCH, &contact, "application/json", body).await, 200).await;
    assert_eq!(updated["custom_attributes"], json!({ "plan": "team", "seats": 3 }));
}

async fn double_slashes_and_impossible_ids(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let inbox = inbox(&app, &b, false).await;
    // A base URL ending in "/" (the Python SDK's default shape) joined with "/public/…".
    let contact =
        json_of(post_json(&app, &format!("/{}", public(&inbox, "/contacts")), json!({ "name": "Ann" })).await, 200)
            .await;
    let source = contact["source_id"].as_str().unwrap().to_owned();
    let details = json_of(get(&app, &format!("//{}", public(&inbox, "").trim_start_matches('/'))).await, 200).await;
    assert_eq!(details["identifier"], inbox["inbox_identifier"]);
    let (_, id) = contact_with_conversation(&app, &inbox, json!({})).await;
    let conversations = public(&inbox, &format!("/contacts/{source}/conversations"));
    let mine =
        json_of(post_json(&app, &format!("//{}", conversations.trim_start_matches('/')), json!({})).await, 200).await;
    let mine = mine["id"].as_u64().unwrap();
    assert_ne!(mine, id);
    assert_eq!(json_of(get(&app, &format!("{conversations}//{mine}")).await, 200).await["id"], mine);
    // Ids that no conversation or message can have: Chatwoot's 404, not a 422 from the edge.
    for bad in ["abc", "12x", "-1", "0", "4294967296", "99999999999999999999", "1.5"] {
        let resp = get(&app, &format!("{conversations}/{bad}")).await;
        let body = json_of(resp, 404).await;
        assert_eq!(body["code"], 5, "{bad}: {body}");
        assert_eq!(body["error"], "Resource could not be found", "Chatwoot's own 404 field: {body}");
        json_of(get(&app, &format!("{conversations}/{bad}/messages")).await, 404).await;
        json_of(post_json(&app, &format!("{conversations}/{bad}/messages"), json!({ "content": "hi" })).await, 404)
            .await;
        let body = json!({ "submitted_values": [] }).to_string().into_bytes();
        let path = format!("{conversations}/{mine}/messages/{bad}");
        json_of(send(&app, reqwest::Method::PATCH, &path, "application/json", body).await, 404).await;
    }
    // The /omega API keeps empty ids a 422 (slashes are merged on the Chatwoot paths only).
    let resp = app.post("/omega/businesses//clients//conversation", &b.key, None).await;
    assert_eq!(resp.status(), 422);
}

async fn form_encoded_bodies_work_like_json(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let inbox = inbox(&app, &b, false).await;
    let form = "application/x-www-form-urlencoded";
    let body = b"name=Ann+Lee&email=ann%40example.com&custom_attributes[plan]=pro&custom_attributes[seats]=3".to_vec();
    let contact = json_of(send(&app, reqwest::Method::POST, &public(&inbox, "/contacts"), form, body).await, 200).await;
    assert_eq!(contact["name"], "Ann Lee");
    assert_eq!(contact["email"], "ann@example.com");
    assert_eq!(contact["custom_attributes"], json!({ "plan": "pro", "seats": "3" }));
    let source = contact["source_id"].as_str().unwrap().to_owned();
    let path = public(&inbox, &format!("/contacts/{source}"));
    let updated = json_of(send(&app, reqwest::Method::PATCH, &path, form, b"name=Ann+B".to_vec()).await, 200).await;
    assert_eq!(updated["name"], "Ann B");
    let conversations = format!("{path}/conversations");
    let conversation = json_of(
        send(&app, reqwest::Method::POST, &conversations, form, b"custom_attributes[topic]=x".to_vec()).await,
        200,
    )
    .await;
    assert_eq!(conversation["custom_attributes"], json!({ "topic": "x" }));
    let id = conversation["id"].as_u64().unwrap();
    let messages = format!("{conversations}/{id}/messages");
    let message = json_of(
        send(&app, reqwest::Method::POST, &messages, form, b"content=Hello+there%21&echo_id=e1".to_vec()).await,
        200,
    )
    .await;
    assert_eq!(message["content"], "Hello there!");
    // A retry with the same echo id is the same message.
    let again = json_of(
        send(&app, reqwest::Method::POST, &messages, form, b"content=Hello+there%21&echo_id=e1".to_vec()).await,
        200,
    )
    .await;
    assert_eq!(again["id"], message["id"]);
    let typing = format!("{conversations}/{id}/toggle_typing");
    json_of(send(&app, reqwest::Method::POST, &typing, form, b"typing_status=on".to_vec()).await, 200).await;
    let status = format!("{conversations}/{id}/toggle_status");
    let resolved = json_of(send(&app, reqwest::Method::POST, &status, form, Vec::new()).await, 200).await;
    assert_eq!(resolved["status"], "resolved");
    // A form without content is still a 422 naming the field.
    let refused = json_of(send(&app, reqwest::Method::POST, &messages, form, b"echo_id=e2".to_vec()).await, 422).await;
    assert_eq!(violated_field(&refused), "content");
    let list = json_of(get(&app, &messages).await, 200).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

/// A PNG's signature and header chunk (all an image-size reader looks at) for a `w`×`h` image,
/// then some bytes.
fn png(w: u32, h: u32) -> Vec<u8> {
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];
    out.extend_from_slice(b"IHDR");
    out.extend_from_slice(&w.to_be_bytes());
    out.extend_from_slice(&h.to_be_bytes());
    out.extend_from_slice(&[8, 2, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]);
    out.extend_from_slice(&[0u8; 64]);
    out
}

/// A file part: (field name, file name, content type, bytes).
type Part<'a> = (&'a str, &'a str, &'a str, &'a [u8]);

/// A multipart/form-data body as browsers and SDKs send it: (content type, body).
fn multipart(fields: &[(&str, &str)], files: &[Part]) -> (String, Vec<u8>) {
    let boundary = "----omega-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
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

async fn attachments_are_stored_and_served_only_to_their_readers(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let other = app.onboard_simple("other", "+14155550111").await;
    let inbox = inbox(&app, &b, false).await;
    let (source, id) = contact_with_conversation(&app, &inbox, json!({ "name": "Ann" })).await;
    let (dan, dans_id) = contact_with_conversation(&app, &inbox, json!({ "name": "Dan" })).await;
    let messages = public(&inbox, &format!("/contacts/{source}/conversations/{id}/messages"));
    let image = png(640, 480);
    let pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n".to_vec();
    let (content_type, body) = multipart(
        &[("content", "Here is my receipt"), ("echo_id", "up-1")],
        &[
            ("attachments[]", "photo.png", "image/png", &image),
            ("attachments[]", "receipt März.pdf", "application/pdf", &pdf),
        ],
    );
    let message = json_of(send(&app, reqwest::Method::POST, &messages, &content_type, body).await, 200).await;
    assert_eq!(message["content"], "Here is my receipt");
    let files = message["attachments"].as_array().unwrap().clone();
    assert_eq!(files.len(), 2, "{message}");
    let (photo, receipt) = (&files[0], &files[1]);
    assert_eq!(photo["file_type"], "image");
    assert_eq!(photo["extension"], "png");
    assert_eq!(photo["file_size"], image.len());
    assert_eq!((photo["width"].clone(), photo["height"].clone()), (json!(640), json!(480)));
    assert_eq!(photo["message_id"], message["id"]);
    assert_eq!(photo["account_id"], b.id);
    assert_eq!(receipt["file_type"], "file");
    assert_eq!(receipt["file_size"], pdf.len());
    assert!(receipt["width"].is_null());
    // Absolute URLs on the host the widget called.
    let data_url = photo["data_url"].as_str().unwrap().to_owned();
    assert!(data_url.starts_with(&format!("http://{}/public/api/v1/", app.envoy_addr)), "{data_url}");
    assert_eq!(photo["thumb_url"], photo["data_url"]);

    let resp = app.http.get(&data_url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert!(resp.headers()["content-disposition"].to_str().unwrap().starts_with("inline"));
    assert_eq!(resp.bytes().await.unwrap().as_ref(), image.as_slice());
    let resp = app.http.get(receipt["data_url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/pdf");
    let disposition = resp.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert_eq!(disposition, "attachment; filename*=UTF-8''receipt%20M%C3%A4rz.pdf");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), pdf.as_slice());
    // The conversation and the message list render the same attachments.
    let list = json_of(get(&app, &messages).await, 200).await;
    assert_eq!(list[0]["attachments"][0]["data_url"], photo["data_url"]);

    // Another contact gets nothing: not through its own conversation, not through hers.
    let attachment_id = photo["id"].as_u64().unwrap();
    let through_dans = public(&inbox, &format!("/contacts/{dan}/conversations/{dans_id}/attachments/{attachment_id}"));
    json_of(get(&app, &through_dans).await, 404).await;
    let through_hers = public(&inbox, &format!("/contacts/{dan}/conversations/{id}/attachments/{attachment_id}"));
    json_of(get(&app, &through_hers).await, 404).await;
    json_of(
        get(&app, &public(&inbox, &format!("/contacts/{source}/conversations/{id}/attachments/999999"))).await,
        404,
    )
    .await;

    // Staff see them on the message, over REST and gRPC, and read them with the business's key.
    let client_id = message["sender"]["id"].as_u64().unwrap();
    let staff_path = format!("/omega/businesses/{}/clients/{client_id}/conversations/{id}/messages", b.id);
    let listed = json_of(app.get(&staff_path, &b.key).await, 200).await;
    let staff_files = listed["messages"][0]["attachments"].as_array().unwrap().clone();
    assert_eq!(staff_files.len(), 2, "{listed}");
    assert_eq!(staff_files[0]["content_type"], "image/png");
    assert_eq!(staff_files[0]["file_name"], "photo.png");
    assert_eq!(staff_files[0]["width"], 640);
    assert_eq!(staff_files[0]["file_size"], image.len(), "a number, as every size and id on REST");
    let url = staff_files[0]["url"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("/omega/businesses/{}/attachments/{attachment_id}", b.id));
    let resp = app.get(&url, &b.key).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), image.as_slice());
    assert_eq!(app.get(&url, "").await.status(), 401);
    assert!([403, 404].contains(&app.get(&url, &other.key).await.status().as_u16()));
    let wrong_business = format!("/omega/businesses/{}/attachments/{attachment_id}", other.id);
    assert_eq!(app.get(&wrong_business, &other.key).await.status(), 404);

    let mut grpc = ConversationServiceClient::new(app.grpc_channel().await);
    let request = ListConversationMessagesRequest {
        business_id: b.id as u32,
        client_id: client_id as u32,
        conversation_id: id as u32,
        ..Default::default()
    };
    let listed = grpc.list_conversation_messages(with_key(request, &b.key)).await.unwrap().into_inner();
    let files = &listed.messages[0].attachments;
    assert_eq!(files.len(), 2);
    assert_eq!((files[0].width, files[0].height, files[0].file_size), (Some(640), Some(480), image.len() as u32));
    assert_eq!(files[1].file_name, "receipt März.pdf");

    // An upload with no text is a message too; a retry of the same echo id stores nothing new.
    let (content_type, body) = multipart(&[], &[("attachments[]", "b.png", "image/png", &image)]);
    let bare = json_of(send(&app, reqwest::Method::POST, &messages, &content_type, body).await, 200).await;
    assert_eq!(bare["content"], "");
    assert_eq!(bare["attachments"].as_array().unwrap().len(), 1);
    let rows = app.sql("SELECT COUNT(*) AS n FROM attachments", vec![]).await.unwrap();
    assert_eq!(rows.try_get::<i64>("", "n").unwrap(), 3);
    let stored =
        std::fs::read_dir(app.dir.path().join("attachments/attachments").join(b.id.to_string())).unwrap().count();
    assert_eq!(stored, 3, "one file per attachment in the store");
}

async fn attachment_limits_are_enforced_and_write_nothing(db: Db) {
    let app = spawn_app_with(db, &[("OMEGA_ATTACHMENT_MAX_BYTES", "1000"), ("OMEGA_ATTACHMENT_MAX_FILES", "2")]).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let inbox = inbox(&app, &b, false).await;
    let (source, id) = contact_with_conversation(&app, &inbox, json!({})).await;
    let messages = public(&inbox, &format!("/contacts/{source}/conversations/{id}/messages"));
    let small = png(2, 2);
    let svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>".to_vec();
    let html_as_png = b"<html><script>alert(1)</script></html>".to_vec();
    let big = [png(10, 10), vec![0u8; 2000]].concat();
    let cases: Vec<(&str, Vec<Part>)> = vec![
        ("svg", vec![("attachments[]", "x.svg", "image/svg+xml", &svg)]),
        ("html dressed as a png", vec![("attachments[]", "x.png", "image/png", &html_as_png)]),
        ("html", vec![("attachments[]", "x.html", "text/html", &html_as_png)]),
        ("too large", vec![("attachments[]", "big.png", "image/png", &big)]),
        ("empty", vec![("attachments[]", "e.txt", "text/plain", b"")]),
        (
            "too many",
            vec![
                ("attachments[]", "1.png", "image/png", &small),
                ("attachments[]", "2.png", "image/png", &small),
                ("attachments[]", "3.png", "image/png", &small),
            ],
        ),
    ];
    for (what, files) in cases {
        let (content_type, body) = multipart(&[("content", "look")], &files);
        let refused = json_of(send(&app, reqwest::Method::POST, &messages, &content_type, body).await, 422).await;
        assert_eq!(violated_field(&refused), "attachments[]", "{what}: {refused}");
    }
    // A malformed multipart body is a 422 too.
    let refused = json_of(
        send(&app, reqwest::Method::POST, &messages, "multipart/form-data; boundary=zz", b"garbage".to_vec()).await,
        422,
    )
    .await;
    assert_eq!(violated_field(&refused), "body", "{refused}");
    assert_eq!(json_of(get(&app, &messages).await, 200).await, json!([]));
    let rows = app.sql("SELECT COUNT(*) AS n FROM attachments", vec![]).await.unwrap();
    assert_eq!(rows.try_get::<i64>("", "n").unwrap(), 0);
    let dir = app.dir.path().join("attachments/attachments");
    assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().count() == 0, "no file stored");
    // Within the limits it goes through.
    let (content_type, body) = multipart(&[], &[("attachments[]", "ok.png", "image/png", &small)]);
    json_of(send(&app, reqwest::Method::POST, &messages, &content_type, body).await, 200).await;
}

/// The Python with PyPI's chatwoot-python-client: `OMEGA_TEST_PYTHON`, else the project's
/// `.venv` (scripts/ensure-tools.sh installs the SDK there).
fn sdk_python() -> std::path::PathBuf {
    let python = std::env::var_os("OMEGA_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(common::MANIFEST_DIR).join(".venv/bin/python"));
    let found = std::process::Command::new(&python).args(["-c", "import chatwoot_client"]).output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "{} cannot import chatwoot_client: run scripts/ensure-tools.sh (or set OMEGA_TEST_PYTHON)",
        python.display()
    );
    python
}

async fn the_python_sdk_drives_a_whole_visitor_journey(db: Db) {
    let python = sdk_python();
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let inbox = inbox(&app, &b, false).await;
    let script = std::path::Path::new(common::MANIFEST_DIR).join("tests/e2e/sdk/chatwoot_journey.py");
    // The SDK's own default host shape: a base URL ending in "/".
    let base = format!("http://{}/", app.envoy_addr);
    let identifier = inbox["inbox_identifier"].as_str().unwrap().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg(script).arg(base).arg(identifier).output().unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the SDK journey failed:\n{stderr}\n{stdout}");
    let out: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"));
    assert_eq!(out["inbox_name"], "Website chat");
    assert_eq!(out["custom_attributes"], json!({ "plan": "pro" }));
    assert_eq!(out["updated_name"], "Nora Diaz");
    assert_eq!(out["conversation_custom_attributes"], json!({ "topic": "booking" }));
    assert_eq!(out["listed"], out["sent"]);
    assert_eq!(out["listed_content"], json!(["Hi, is Saturday open?", "Around 10am"]));
    assert_eq!(out["conversations"], json!([out["conversation_id"]]));
    assert_eq!(out["submitted"], json!({ "submitted_values": { "email": "nora@example.com" } }));
    assert_eq!(out["status"], "resolved");
    assert_eq!(out["unknown_contact"], 404);
    assert_eq!(out["schemas_checked"], json!(["PublicContact", "PublicConversation", "PublicInbox", "PublicMessage"]));
    // What the SDK did is what staff see: two CHAT messages from the visitor, a resolved thread,
    // and the typing events (`recording` changes nothing).
    let client_id = out["contact_id"].as_u64().unwrap();
    let conversation_id = out["conversation_id"].as_u64().unwrap();
    let path = format!("/omega/businesses/{}/clients/{client_id}/conversations/{conversation_id}/messages", b.id);
    let listed = json_of(app.get(&path, &b.key).await, 200).await;
    let contents: Vec<&str> =
        listed["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents.len(), 2, "{listed}");
    assert!(listed["messages"].as_array().unwrap().iter().all(|m| m["channel"] == "CHAT"));
    let typing = app
        .sql(
            "SELECT COUNT(*) AS n FROM conversation_events WHERE kind = 'contact.typing' AND conversation_id = $1",
            vec![(conversation_id as i64).into()],
        )
        .await
        .unwrap();
    assert_eq!(typing.try_get::<i64>("", "n").unwrap(), 2);
}

/// moto's S3-compatible server (from the SDK's Python environment) on a free loopback port,
/// with bucket `bucket`; killed on drop.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn s3_server(bucket: &str) -> S3Server {
    let python = sdk_python();
    let server = python.with_file_name("moto_server");
    assert!(server.exists(), "no {}: run scripts/ensure-tools.sh", server.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new(server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start moto_server");
    let s3 = S3Server { child, endpoint: format!("http://127.0.0.1:{port}") };
    let http = common::http_client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while http.put(format!("{}/{bucket}", s3.endpoint)).send().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "moto_server did not start");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    s3
}

async fn attachments_in_a_bucket_are_shared_by_replicas(db: Db) {
    let s3 = s3_server("omega-files").await;
    let env = [
        ("OMEGA_ATTACHMENTS_URL", "s3://omega-files/chat"),
        ("AWS_ENDPOINT", s3.endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let app = spawn_app_with(db, &env).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let inbox = inbox(&app, &b, false).await;
    let (source, id) = contact_with_conversation(&app, &inbox, json!({})).await;
    let messages = public(&inbox, &format!("/contacts/{source}/conversations/{id}/messages"));
    let image = png(32, 16);
    let (content_type, body) = multipart(&[], &[("attachments[]", "a.png", "image/png", &image)]);
    let message = json_of(send(&app, reqwest::Method::POST, &messages, &content_type, body).await, 200).await;
    let attachment_id = message["attachments"][0]["id"].as_u64().unwrap();
    // The bytes are in the bucket, under the configured prefix, and not on local disk.
    let listing = app
        .http
        .get(format!("{}/omega-files?list-type=2&prefix=chat/attachments/{}/", s3.endpoint, b.id))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(listing.matches("<Key>").count(), 1, "{listing}");
    assert!(!app.dir.path().join("attachments/attachments").exists());
    // Another replica (its own local directory, which stays empty) serves it from the bucket.
    let mut replica_env = env.to_vec();
    let elsewhere = app.dir.path().join("replica-files");
    let elsewhere_text = elsewhere.display().to_string();
    replica_env.push(("OMEGA_ATTACHMENTS_DIR", elsewhere_text.as_str()));
    let (_replica, addr) = app.start_replica(&replica_env).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let request = GetAttachmentRequest { business_id: b.id as u32, attachment_id: attachment_id as u32 };
    let file = AttachmentServiceClient::new(channel).get_attachment(with_key(request, &b.key)).await.unwrap();
    let file = file.into_inner();
    assert_eq!(file.content_type, "image/png");
    assert_eq!(file.data, image);
}

async fn attachment_links_carry_the_hash_on_a_strict_inbox(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let inbox = inbox(&app, &b, true).await;
    let hash = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(inbox["hmac_token"].as_str().unwrap().as_bytes()).unwrap();
        mac.update(b"client-9");
        hex::encode(mac.finalize().into_bytes())
    };
    let contact = json_of(
        post_json(&app, &public(&inbox, "/contacts"), json!({ "identifier": "client-9", "identifier_hash": hash }))
            .await,
        200,
    )
    .await;
    let source = contact["source_id"].as_str().unwrap().to_owned();
    let conversations = public(&inbox, &format!("/contacts/{source}/conversations"));
    let conversation =
        json_of(post_json(&app, &format!("{conversations}?identifier_hash={hash}"), json!({})).await, 200).await;
    let id = conversation["id"].as_u64().unwrap();
    let messages = format!("{conversations}/{id}/messages?identifier_hash={hash}");
    let image = png(4, 4);
    let (content_type, body) = multipart(&[], &[("attachments[]", "a.png", "image/png", &image)]);
    let message = json_of(send(&app, reqwest::Method::POST, &messages, &content_type, body).await, 200).await;
    let data_url = message["attachments"][0]["data_url"].as_str().unwrap().to_owned();
    assert!(data_url.ends_with(&format!("?identifier_hash={hash}")), "{data_url}");
    let resp = app.http.get(&data_url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), image.as_slice());
    // Without the hash the file is not served.
    let bare = data_url.split('?').next().unwrap();
    assert_eq!(app.http.get(bare).send().await.unwrap().status(), 401);
}
