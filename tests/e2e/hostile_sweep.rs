//! Hostile input over EVERY REST operation of the OpenAPI document Omega serves (iterated, not
//! listed here), through the real Envoy on both databases: hostile path ids, query parameters
//! and JSON bodies (NUL, bytes that are not UTF-8, oversize text, wrong JSON types, SQL and FTS
//! syntax, huge and negative ids, page sizes). Every answer is JSON and never a 5xx; every value
//! that cannot be valid is a 4xx; and no main table gains or loses a row.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common::{self, Db};

both_databases!(every_operation_refuses_hostile_input);

/// How long one hostile call may take to be answered, eight at a time on a busy machine.
const PROBE_BOUND: std::time::Duration = std::time::Duration::from_secs(15);

/// The tables a refused call must leave as they were.
const TABLES: [&str; 21] = [
    "businesses",
    "locations",
    "location_phone_numbers",
    "staff",
    "clients",
    "conversations",
    "conversation_events",
    "conversation_counts",
    "messages",
    "message_attempts",
    "delivery_jobs",
    "api_keys",
    "sessions",
    "inboxes",
    "contact_inboxes",
    "provider_credentials",
    "webhook_events",
    "attachments",
    "email_inbound_tokens",
    "webhook_endpoints",
    "webhook_deliveries",
];

/// Hostile values of a path id: none names anything, so every one is a 4xx.
const PATH_VALUES: [&[u8]; 8] =
    [b"-1", b"0", b"4294967296", b"99999999999999999999", b"a\0b", b"\xff\xfe", b"1 OR 1=1", b"';--"];

/// Text that is valid input yet hostile to SQL or full-text search: any non-5xx JSON answer.
const SYNTAX: [&str; 7] =
    ["a\" OR \"1\"=\"1", "'; DROP TABLE clients; --", "*", "NEAR(a b)", "\"unterminated", "a AND OR -b", "%_\\"];

/// Percent-encodes every byte but letters and digits (the values are hostile on purpose, so
/// nothing may be left to a URL library's judgement).
fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| if b.is_ascii_alphanumeric() { (*b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// One request of the sweep.
struct Probe {
    what: String,
    method: reqwest::Method,
    /// The public path and query, encoded.
    url: String,
    body: Option<Vec<u8>>,
    content_type: &'static str,
    /// Whether the value cannot be valid (a 4xx is required), else any non-5xx answer will do.
    invalid: bool,
}

/// The schema `$ref` points at, or the schema itself.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Values that no field of `schema` accepts: a wrong JSON type, then out-of-range numbers, NUL
/// and oversize text. Raw JSON text, so that bytes that are not UTF-8 can be sent too.
fn invalid_values(doc: &Value, schema: &Value) -> Vec<String> {
    let schema = resolve(doc, schema);
    let string = |s: &str| serde_json::to_string(s).unwrap();
    match (schema["type"].as_str(), schema["format"].as_str()) {
        (Some("array"), _) => {
            let mut values = vec![string("1")];
            values.extend(invalid_values(doc, &schema["items"]).into_iter().map(|v| format!("[{v}]")));
            values
        }
        (Some("integer"), _) | (Some("string"), Some("int64")) => {
            vec![string("abc"), "-1".into(), "99999999999999999999".into(), "1.5".into(), "{}".into()]
        }
        (Some("boolean"), _) => vec![string("maybe"), "[]".into()],
        (Some("number"), _) => vec![string("abc"), "{}".into()],
        (Some("string"), Some("date-time")) => vec!["17".into(), string("yesterday\u{0}")],
        (Some("string"), _) if schema.get("enum").is_some() => vec![string("NO_SUCH\u{0}VALUE"), "{}".into()],
        (Some("string"), _) => {
            vec!["{}".into(), string("a\u{0}b"), "\"\u{1}\u{0}\"".to_owned(), string(&"x".repeat(1_000_001))]
        }
        (Some("object"), _) if schema.get("properties").is_some() => vec!["5".into(), string("{}"), "[]".into()],
        _ => vec![],
    }
}

/// The base value of a path parameter: the fixture it names, so that one hostile value at a
/// time reaches the handler.
fn base_path_value(name: &str, path: &str, fixture: &BTreeMap<&str, String>) -> String {
    let key = if name == "conversation_id" && path.starts_with("/public/") { "chat_conversation_id" } else { name };
    fixture.get(key).cloned().unwrap_or_else(|| "999999".into())
}

fn fill_path(path: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = path.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// Every probe of one operation.
fn probes(doc: &Value, path: &str, method: &str, op: &Value, fixture: &BTreeMap<&str, String>) -> Vec<Probe> {
    let verb = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    let in_path: BTreeMap<String, String> = params
        .iter()
        .filter(|p| p["in"] == "path")
        .map(|p| {
            let name = p["name"].as_str().unwrap().to_owned();
            let value = base_path_value(&name, path, fixture);
            (name, value)
        })
        .collect();
    let base = fill_path(path, &in_path);
    let json_body = op["requestBody"]["content"].get("application/json").map(|c| c["schema"].clone());
    let raw_body = op["requestBody"]["content"].get("*/*").is_some();
    let mut out = Vec::new();
    let probe = |what: String, url: String, body: Option<Vec<u8>>, invalid: bool| Probe {
        what: format!("{method} {path}: {what}"),
        method: verb.clone(),
        url,
        // A body the operation does not take still goes as JSON; a raw webhook gets a form.
        content_type: if raw_body { "application/x-www-form-urlencoded" } else { "application/json" },
        body: body.or_else(|| (json_body.is_some() || raw_body).then(|| b"{}".to_vec())),
        invalid,
    };
    for name in in_path.keys() {
        for value in PATH_VALUES {
            let mut values = in_path.clone();
            values.insert(name.clone(), encode(value));
            out.push(probe(
                format!("path {name}={}", String::from_utf8_lossy(value)),
                fill_path(path, &values),
                None,
                true,
            ));
        }
    }
    let reads = method == "get";
    for param in params.iter().filter(|p| p["in"] == "query") {
        let name = param["name"].as_str().unwrap();
        let schema = &param["schema"];
        let scalar = if schema["type"] == "array" { &schema["items"] } else { schema };
        let mut invalid: Vec<Vec<u8>> = match (scalar["type"].as_str(), scalar["format"].as_str()) {
            (Some("integer"), _) | (Some("string"), Some("int64")) => {
                vec![b"-1".to_vec(), b"abc".to_vec(), b"99999999999999999999".to_vec()]
            }
            (Some("boolean"), _) => vec![b"maybe".to_vec()],
            _ => vec![b"a\0b".to_vec(), b"\xff\xfe".to_vec(), b"\xc0\xaf".to_vec()],
        };
        if name == "page_size" {
            invalid = vec![b"-1".to_vec(), b"201".to_vec(), b"99999999999".to_vec()];
        }
        if name == "page_token" {
            invalid.push(b"not-a-token!".to_vec());
        }
        for value in invalid {
            let url = format!("{base}?{name}={}", encode(&value));
            out.push(probe(format!("query {name}={}", String::from_utf8_lossy(&value)), url, None, true));
        }
        if reads && scalar["type"] == "string" && scalar.get("enum").is_none() && scalar["format"].is_null() {
            for text in SYNTAX.iter().map(|s| s.to_string()).chain([("x".repeat(20_000))]) {
                let url = format!("{base}?{name}={}", encode(text.as_bytes()));
                let shown: String = text.chars().take(30).collect();
                out.push(probe(format!("query {name}={shown}"), url, None, false));
            }
        }
    }
    if let Some(schema) = &json_body {
        let properties = resolve(doc, schema)["properties"].as_object().cloned().unwrap_or_default();
        for (field, field_schema) in &properties {
            if in_path.contains_key(field) {
                continue; // Bound from the path; the body's copy is a collision.
            }
            for value in invalid_values(doc, field_schema) {
                let shown: String = value.chars().take(30).collect();
                let body = format!("{{\"{field}\": {value}}}").into_bytes();
                out.push(probe(format!("body {field}={shown}"), base.clone(), Some(body), true));
            }
            // Bytes that are not UTF-8 inside a JSON string.
            if field_schema["type"] == "string" {
                let mut body = format!("{{\"{field}\": \"a").into_bytes();
                body.extend_from_slice(b"\xff\xfe\"}");
                out.push(probe(format!("body {field}=<not UTF-8>"), base.clone(), Some(body), true));
            }
        }
        out.push(probe("body not JSON".into(), base.clone(), Some(b"{\"a\": ".to_vec()), true));
        out.push(probe("body a list".into(), base.clone(), Some(b"[1, 2]".to_vec()), true));
    }
    if raw_body {
        out.push(probe("raw body with NUL".into(), base.clone(), Some(b"Body=a%00b&From=%FF\0\xff".to_vec()), true));
    }
    out
}

async fn counts(app: &common::TestApp) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for table in TABLES {
        let row = app.sql(&format!("SELECT COUNT(*) AS n FROM {table}"), vec![]).await.unwrap();
        out.push((table.to_owned(), row.try_get::<i64>("", "n").unwrap()));
    }
    out
}

async fn every_operation_refuses_hostile_input(db: Db) {
    let started = std::time::Instant::now();
    // Refused signatures count as failed authentications; no limit may hide an answer.
    let app = common::spawn_app_with(db, &[("OMEGA_AUTH_FAILURES_PER_MINUTE", "0")]).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let client = app.upsert_client(&b, json!({ "name": "Carla", "phone": "+14155550199" })).await;
    let conversation = app.conversation(&b, client).await;
    let inbox: Value = app
        .post(&format!("/omega/businesses/{}/inboxes", b.id), &b.key, Some(json!({ "name": "Chat" })))
        .await
        .json()
        .await
        .unwrap();
    let inbox = inbox["inbox"]["inbox_identifier"].as_str().unwrap().to_owned();
    let post = |url: String, body: Value| {
        app.http.post(url).header("content-type", "application/json").body(body.to_string()).send()
    };
    let public = |rest: &str| app.rest(&format!("/public/api/v1/inboxes/{inbox}{rest}"));
    let contact: Value = post(public("/contacts"), json!({ "name": "Guest" })).await.unwrap().json().await.unwrap();
    let source = contact["source_id"].as_str().unwrap().to_owned();
    let chat: Value =
        post(public(&format!("/contacts/{source}/conversations")), json!({})).await.unwrap().json().await.unwrap();
    let fixture: BTreeMap<&str, String> = [
        ("business_id", b.id.to_string()),
        ("client_id", client.to_string()),
        ("conversation_id", conversation.to_string()),
        ("chat_conversation_id", chat["id"].to_string()),
        ("inbox_identifier", inbox.clone()),
        ("contact_identifier", source.clone()),
        ("staff_id", b.staff_ids[0].to_string()),
        ("provider", "sendgrid".into()),
        ("request_id", uuid::Uuid::new_v4().to_string()),
        ("message_id", uuid::Uuid::new_v4().to_string()),
    ]
    .into_iter()
    .collect();

    let doc: Value = app.http.get(app.rest("/omega/openapi.json")).send().await.unwrap().json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut all = Vec::new();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            all.extend(probes(&doc, path, method, op, &fixture));
        }
    }
    assert!(operations > 50, "the document lists every operation: {operations}");
    let before = counts(&app).await;

    let platform_only = |url: &str| url.starts_with("/omega/api-keys") || url.starts_with("/omega/business/onboard");
    let results: Vec<Option<String>> = futures_util::stream::iter(all.iter())
        .map(|probe| {
            let key = if platform_only(&probe.url) { &app.platform_key } else { &b.key };
            // Each probe is answered within its own bound (a hang, or input that makes one call
            // crawl, fails it); the sweep's total time depends on how busy the machine is.
            let mut request = app
                .http
                .request(probe.method.clone(), app.rest(&probe.url))
                .header("x-api-key", key)
                .timeout(PROBE_BOUND);
            if let Some(body) = &probe.body {
                request = request.header("content-type", probe.content_type).body(body.clone());
            }
            async move {
                let resp = match request.send().await {
                    Ok(resp) => resp,
                    Err(err) => return Some(format!("{}: no answer within {PROBE_BOUND:?} ({err})", probe.what)),
                };
                let status = resp.status().as_u16();
                let content_type =
                    resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let body = resp.bytes().await.unwrap_or_default();
                let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
                let json =
                    serde_json::from_slice::<Value>(&body).is_ok() && content_type.starts_with("application/json");
                if status >= 500 || !json || (probe.invalid && !(400..500).contains(&status)) {
                    Some(format!("{}: {status} {content_type} {text}", probe.what))
                } else {
                    None
                }
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let failures: Vec<String> = results.into_iter().flatten().collect();
    assert!(failures.is_empty(), "{} of {} probes failed:\n{}", failures.len(), all.len(), failures.join("\n"));
    assert_eq!(counts(&app).await, before, "a refused call wrote nothing");
    eprintln!("{db:?}: {} probes over {operations} operations in {:?}", all.len(), started.elapsed());
}
