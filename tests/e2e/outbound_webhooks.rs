//! Outbound webhooks end to end: endpoints created over REST through Envoy, events made through
//! the API, deliveries received by a real HTTP server on loopback, and every signature checked
//! by an independent implementation (PyPI's `standardwebhooks`, installed into `.venv`).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use serde_json::{Value, json};

use crate::common::{self, Db, TestApp, TestBusiness, eventually, spawn_app_with};

both_databases!(
    endpoints_receive_signed_events_of_their_kinds,
    retries_permanent_failures_and_disabling,
    replays_of_one_delivery_and_of_a_range,
    private_addresses_are_refused_unless_allowed,
    secrets_are_sealed_at_rest_and_survive_a_key_rotation,
    a_timeout_is_retried_with_the_same_id,
    deliveries_past_the_retention_are_pruned,
);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Hooks {
    received: HashMap<String, Vec<Received>>,
    /// Statuses to answer next, per path name (then 200).
    script: HashMap<String, VecDeque<u16>>,
    /// A status answered to every request, per path name (after the script).
    always: HashMap<String, u16>,
    /// How long to wait before answering the next requests, per path name.
    delays: HashMap<String, VecDeque<Duration>>,
}

/// A webhook receiver on 127.0.0.1: `POST /hooks/{name}` records the request and answers what
/// it was told (200 by default).
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    hooks: Arc<Mutex<Hooks>>,
}

impl Receiver {
    async fn start() -> Self {
        async fn hook(
            State(hooks): State<Arc<Mutex<Hooks>>>,
            Path(name): Path<String>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let (status, delay) = {
                let mut hooks = hooks.lock().unwrap();
                hooks.received.entry(name.clone()).or_default().push(Received {
                    id: header("webhook-id"),
                    timestamp: header("webhook-timestamp"),
                    signature: header("webhook-signature"),
                    body: String::from_utf8(body.to_vec()).unwrap(),
                });
                let scripted = hooks.script.get_mut(&name).and_then(VecDeque::pop_front);
                let status = scripted.or_else(|| hooks.always.get(&name).copied()).unwrap_or(200);
                (status, hooks.delays.get_mut(&name).and_then(VecDeque::pop_front))
            };
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            StatusCode::from_u16(status).unwrap()
        }
        let hooks = Arc::new(Mutex::new(Hooks::default()));
        let app = Router::new().route("/hooks/{name}", post(hook)).with_state(hooks.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, hooks }
    }

    fn url(&self, name: &str) -> String {
        format!("http://{}/hooks/{name}", self.addr)
    }

    fn received(&self, name: &str) -> Vec<Received> {
        self.hooks.lock().unwrap().received.get(name).cloned().unwrap_or_default()
    }

    fn script(&self, name: &str, statuses: &[u16]) {
        self.hooks.lock().unwrap().script.insert(name.into(), statuses.iter().copied().collect());
    }

    fn delay(&self, name: &str, delays: &[Duration]) {
        self.hooks.lock().unwrap().delays.insert(name.into(), delays.iter().copied().collect());
    }

    fn always(&self, name: &str, status: u16) {
        self.hooks.lock().unwrap().always.insert(name.into(), status);
    }
}

/// Test settings: http and loopback allowed, a schedule of a few quick retries.
const ALLOW: &[(&str, &str)] = &[
    ("OMEGA_WEBHOOKS_ALLOW_HTTP", "1"),
    ("OMEGA_WEBHOOKS_ALLOW_PRIVATE", "1"),
    ("OMEGA_WEBHOOKS_POLL_MS", "100"),
    ("OMEGA_WEBHOOKS_RETRY_SCHEDULE", "200ms,200ms"),
    ("OMEGA_WEBHOOKS_TIMEOUT_SECS", "5"),
    ("OMEGA_WEBHOOKS_DISABLE_AFTER", "2"),
];

const WAIT: Duration = Duration::from_secs(30);

/// Verifies each request with PyPI's `standardwebhooks` and `secret`; answers how many passed.
fn verify_with_standardwebhooks(secret: &str, requests: &[Received]) -> usize {
    let python = std::env::var_os("OMEGA_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(common::MANIFEST_DIR).join(".venv/bin/python"));
    let script = std::path::Path::new(common::MANIFEST_DIR).join("tests/e2e/outbound_webhooks_verify.py");
    let input = json!({
        "secret": secret,
        "requests": requests.iter().map(|r| json!({
            "body": r.body,
            "headers": {"webhook-id": r.id, "webhook-timestamp": r.timestamp, "webhook-signature": r.signature},
        })).collect::<Vec<_>>(),
    });
    let mut child = std::process::Command::new(&python)
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/ensure-tools.sh)", python.display()));
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the verifier failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

fn endpoints_path(business: &TestBusiness) -> String {
    format!("/omega/businesses/{}/webhook_endpoints", business.id)
}

async fn create_endpoint(app: &TestApp, business: &TestBusiness, body: Value) -> (u64, String) {
    let resp = app.post(&endpoints_path(business), &business.key, Some(body)).await;
    assert_eq!(resp.status(), 200, "create endpoint: {}", resp.text().await.unwrap());
    let json: Value = resp.json().await.unwrap();
    (json["endpoint"]["id"].as_u64().unwrap(), json["secret"].as_str().unwrap().to_owned())
}

async fn patch(app: &TestApp, path: &str, key: &str, body: Value) -> reqwest::Response {
    app.http.patch(app.rest(path)).header("x-api-key", key).json(&body).send().await.unwrap()
}

async fn deliveries(app: &TestApp, business: &TestBusiness, endpoint: u64) -> Vec<Value> {
    let path = format!("{}/{endpoint}/deliveries?page_size=200", endpoints_path(business));
    let resp = app.get(&path, &business.key).await;
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["deliveries"].as_array().cloned().unwrap_or_default()
}

async fn endpoint(app: &TestApp, business: &TestBusiness, endpoint: u64) -> Value {
    let resp = app.get(&format!("{}/{endpoint}", endpoints_path(business)), &business.key).await;
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["endpoint"].clone()
}

async fn add_note(app: &TestApp, business: &TestBusiness, client: u64, conversation: u64, text: &str) {
    let path = format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/note", business.id);
    let body = json!({"content": text, "sent_by": business.staff_ids[0], "sender_type": "staff"});
    let resp = app.post(&path, &business.key, Some(body)).await;
    assert_eq!(resp.status(), 200, "note: {}", resp.text().await.unwrap());
}

fn field_of(body: &Value) -> Vec<String> {
    body["details"][0]["field_violations"]
        .as_array()
        .map(|v| v.iter().map(|f| f["field"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default()
}

async fn endpoints_receive_signed_events_of_their_kinds(db: Db) {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(db, ALLOW).await;
    let a = app.onboard_simple("hooked", "+14155550101").await;
    let b = app.onboard_simple("other", "+14155550102").await;

    // Bad input: 422 naming the field, nothing created.
    for (body, field) in [
        (json!({"url": "ftp://example.com/x"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": ""}), "url"),
        (json!({"url": "https://user:pw@example.com/"}), "url"),
        (json!({"url": receiver.url("a"), "event_types": ["note.added", "note.deleted"]}), "event_types[1]"),
        (json!({"url": receiver.url("a"), "description": "x".repeat(501)}), "description"),
        (json!({"url": format!("https://example.com/{}", "x".repeat(2000))}), "url"),
    ] {
        let resp = app.post(&endpoints_path(&a), &a.key, Some(body.clone())).await;
        assert_eq!(resp.status(), 422, "{body}");
        let answer: Value = resp.json().await.unwrap();
        assert!(field_of(&answer).contains(&field.to_owned()), "{body}: {answer}");
    }

    let (filtered, filtered_secret) = create_endpoint(
        &app,
        &a,
        json!({"url": receiver.url("filtered"), "event_types": ["conversation.created", "note.added"], "description": "crm"}),
    )
    .await;
    let (everything, everything_secret) = create_endpoint(&app, &a, json!({"url": receiver.url("all")})).await;
    assert!(filtered_secret.starts_with("whsec_") && everything_secret.starts_with("whsec_"));
    assert_ne!(filtered_secret, everything_secret);

    // Another business's key sees none of it: 404 for every operation, nothing changes.
    let other_paths = [
        format!("{}/{filtered}", endpoints_path(&a)),
        format!("{}/{filtered}/deliveries", endpoints_path(&a)),
        endpoints_path(&a),
    ];
    for path in &other_paths {
        assert_eq!(app.get(path, &b.key).await.status(), 404, "{path}");
    }
    let as_b = format!("{}/{filtered}", endpoints_path(&b));
    assert_eq!(app.get(&as_b, &b.key).await.status(), 404, "A's endpoint under B's business");
    assert_eq!(patch(&app, &as_b, &b.key, json!({"enabled": false})).await.status(), 404);
    assert_eq!(patch(&app, &other_paths[0], &b.key, json!({"enabled": false})).await.status(), 404);
    let del = app.http.delete(app.rest(&other_paths[0])).header("x-api-key", &b.key).send().await.unwrap();
    assert_eq!(del.status(), 404);
    let rotate = app.post(&format!("{}/rotate_secret", other_paths[0]), &b.key, Some(json!({}))).await;
    assert_eq!(rotate.status(), 404);

    // Events: a conversation starts, a note, an assignment (a kind the filter leaves out).
    let client = app.upsert_client(&a, json!({"name": "Carla", "phone": "+14155550199"})).await;
    let conversation = app.conversation(&a, client).await;
    add_note(&app, &a, client, conversation, "first note").await;
    let assign = format!(
        "/omega/businesses/{}/clients/{client}/conversations/{conversation}/assignment?assigned_to={}",
        a.id, a.staff_ids[0]
    );
    let resp = app.post(&assign, &a.key, None).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    // Business B's events go to none of A's endpoints.
    let b_client = app.upsert_client(&b, json!({"name": "Dan", "phone": "+14155550198"})).await;
    app.conversation(&b, b_client).await;

    eventually(WAIT, "the filtered endpoint gets its two events", || async {
        receiver.received("filtered").len() >= 2
    })
    .await;
    eventually(WAIT, "the catch-all endpoint gets three events", || async { receiver.received("all").len() >= 3 })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let filtered_got = receiver.received("filtered");
    let kinds: Vec<String> = filtered_got.iter().map(|r| r.json()["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert!(kinds.contains(&"conversation.created".into()) && kinds.contains(&"note.added".into()), "{kinds:?}");
    let all_got = receiver.received("all");
    let all_kinds: Vec<String> = all_got.iter().map(|r| r.json()["type"].as_str().unwrap().to_owned()).collect();
    assert!(all_kinds.contains(&"conversation.assigned".into()), "{all_kinds:?}");
    assert_eq!(all_got.len(), 3, "{all_kinds:?}");
    assert_eq!(deliveries(&app, &a, everything).await.len(), 3);
    for r in filtered_got.iter().chain(&all_got) {
        let body = r.json();
        assert_eq!(body["data"]["business_id"], a.id, "only business A's events: {body}");
        assert_eq!(body["data"]["kind"], body["type"]);
        assert!(body["data"]["data"].is_object(), "the event's data as JSON: {body}");
        assert!(r.id.starts_with("msg_"), "{r:?}");
    }
    let note = filtered_got.iter().find(|r| r.json()["type"] == "note.added").unwrap().json();
    assert_eq!(note["data"]["conversation_id"], conversation);

    // Signatures verify with the independent library and the right secret only.
    assert_eq!(verify_with_standardwebhooks(&filtered_secret, &filtered_got), 2);
    assert_eq!(verify_with_standardwebhooks(&everything_secret, &all_got), 3);
    assert_eq!(verify_with_standardwebhooks(&everything_secret, &filtered_got), 0, "another endpoint's secret");

    // The delivery log: one delivered attempt each, the same webhook-id the receiver saw.
    let log = deliveries(&app, &a, filtered).await;
    assert_eq!(log.len(), 2, "{log:?}");
    for d in &log {
        assert_eq!(d["state"], "delivered", "{d}");
        assert_eq!(d["attempt_count"], 1);
        assert_eq!(d["last_status_code"], 200);
        assert!(filtered_got.iter().any(|r| r.id == d["webhook_id"].as_str().unwrap()), "{d}");
    }

    // The secret never comes back, nor reaches the log.
    let listed = app.get(&endpoints_path(&a), &a.key).await.text().await.unwrap();
    let got = app.get(&format!("{}/{filtered}", endpoints_path(&a)), &a.key).await.text().await.unwrap();
    let listed_json: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed_json["endpoints"].as_array().unwrap().len(), 2);
    for text in [&listed, &got, &app.omega.log_text()] {
        for secret in [&filtered_secret, &everything_secret] {
            assert!(!text.contains(secret.as_str()), "a secret leaked");
            assert!(!text.contains(secret.trim_start_matches("whsec_")), "a secret leaked");
        }
    }
    assert!(!listed.contains("whsec_"), "{listed}");

    // Rotation: the next delivery is signed with both secrets.
    let rotated = app.post(&format!("{}/{filtered}/rotate_secret", endpoints_path(&a)), &a.key, Some(json!({}))).await;
    assert_eq!(rotated.status(), 200);
    let new_secret = rotated.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != filtered_secret);
    add_note(&app, &a, client, conversation, "after rotation").await;
    eventually(WAIT, "the note after the rotation", || async { receiver.received("filtered").len() >= 3 }).await;
    let last = receiver.received("filtered")[2..].to_vec();
    assert_eq!(verify_with_standardwebhooks(&new_secret, &last), 1);
    assert_eq!(verify_with_standardwebhooks(&filtered_secret, &last), 1, "the previous secret still signs");

    // Updates: the filter and the URL change; `all_event_types` with kinds is a 422.
    let path = format!("{}/{filtered}", endpoints_path(&a));
    let bad = patch(&app, &path, &a.key, json!({"all_event_types": true, "event_types": ["note.added"]})).await;
    assert_eq!(bad.status(), 422);
    let bad = patch(&app, &path, &a.key, json!({"event_types": ["nope"]})).await;
    assert_eq!(bad.status(), 422);
    assert_eq!(field_of(&bad.json().await.unwrap()), vec!["event_types[0]".to_owned()]);
    let ok = patch(&app, &path, &a.key, json!({"event_types": ["messages.read"], "url": receiver.url("moved")})).await;
    assert_eq!(ok.status(), 200);
    let ok = ok.json::<Value>().await.unwrap()["endpoint"].clone();
    assert_eq!(ok["event_types"], json!(["messages.read"]));
    assert_eq!(ok["url"], receiver.url("moved"));

    // Delete: gone for good, its log with it.
    let del = app.http.delete(app.rest(&path)).header("x-api-key", &a.key).send().await.unwrap();
    assert_eq!(del.status(), 200);
    assert_eq!(app.get(&path, &a.key).await.status(), 404);
}

async fn retries_permanent_failures_and_disabling(db: Db) {
    let receiver = Receiver::start().await;
    let mut env = ALLOW.to_vec();
    env.push(("OMEGA_METRICS_ADDR", "127.0.0.1:0"));
    let app = spawn_app_with(db, &env).await;
    let a = app.onboard_simple("retrying", "+14155550111").await;
    receiver.script("flaky", &[500]);
    receiver.always("rejecting", 400);
    receiver.always("down", 503);
    let notes = json!(["note.added"]);
    let (flaky, _) = create_endpoint(&app, &a, json!({"url": receiver.url("flaky"), "event_types": notes})).await;
    let (rejecting, _) =
        create_endpoint(&app, &a, json!({"url": receiver.url("rejecting"), "event_types": notes})).await;
    let (down, _) = create_endpoint(&app, &a, json!({"url": receiver.url("down"), "event_types": notes})).await;
    let client = app.upsert_client(&a, json!({"name": "Eve", "phone": "+14155550197"})).await;
    let conversation = app.conversation(&a, client).await;
    add_note(&app, &a, client, conversation, "one").await;

    // A 500, then success: the same webhook-id both times.
    eventually(WAIT, "the flaky endpoint's retry", || async { receiver.received("flaky").len() >= 2 }).await;
    let got = receiver.received("flaky");
    assert_eq!(got[0].id, got[1].id, "a retry keeps its webhook-id");
    assert_eq!(got[0].body, got[1].body);
    eventually(WAIT, "the flaky delivery is delivered", || async {
        deliveries(&app, &a, flaky).await.first().is_some_and(|d| d["state"] == "delivered")
    })
    .await;
    let d = &deliveries(&app, &a, flaky).await[0];
    assert_eq!(d["attempt_count"], 2, "{d}");
    assert_eq!(d["last_status_code"], 200);

    // 503 every time: 1 attempt + 2 retries, then failed.
    eventually(WAIT, "the down endpoint's delivery fails", || async {
        deliveries(&app, &a, down).await.first().is_some_and(|d| d["state"] == "failed")
    })
    .await;
    let d = &deliveries(&app, &a, down).await[0];
    assert_eq!(d["attempt_count"], 3, "{d}");
    assert_eq!(d["last_status_code"], 503);
    assert_eq!(receiver.received("down").len(), 3);

    // A 400 is final at once: one attempt, recorded, never retried.
    eventually(WAIT, "the rejected delivery fails", || async {
        deliveries(&app, &a, rejecting).await.first().is_some_and(|d| d["state"] == "failed")
    })
    .await;
    let d = &deliveries(&app, &a, rejecting).await[0];
    assert_eq!(d["attempt_count"], 1, "{d}");
    assert_eq!(d["last_status_code"], 400);
    assert!(d["last_error"].as_str().unwrap().contains("400"), "{d}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received("rejecting").len(), 1, "a 4xx is not retried");
    assert_eq!(endpoint(&app, &a, down).await["consecutive_failures"], 1);
    assert_eq!(endpoint(&app, &a, down).await["enabled"], true);

    // A second delivery failing in a row disables the endpoint (OMEGA_WEBHOOKS_DISABLE_AFTER=2).
    add_note(&app, &a, client, conversation, "two").await;
    eventually(WAIT, "the down endpoint is disabled", || async { endpoint(&app, &a, down).await["enabled"] == false })
        .await;
    let e = endpoint(&app, &a, down).await;
    assert!(e["disabled_reason"].as_str().unwrap().contains("503"), "{e}");
    assert_eq!(e["consecutive_failures"], 2);
    assert_eq!(endpoint(&app, &a, flaky).await["enabled"], true, "a working endpoint stays enabled");
    let sent_while_enabled = receiver.received("down").len();
    assert_eq!(sent_while_enabled, 6);

    // Disabled: nothing more is sent, and replays are refused until it is enabled again.
    add_note(&app, &a, client, conversation, "three").await;
    eventually(WAIT, "the flaky endpoint gets note three", || async { receiver.received("flaky").len() >= 4 }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received("down").len(), sent_while_enabled, "a disabled endpoint gets nothing");
    let path = format!("{}/{down}", endpoints_path(&a));
    let enabled = patch(&app, &path, &a.key, json!({"enabled": true})).await;
    assert_eq!(enabled.status(), 200);
    let enabled = enabled.json::<Value>().await.unwrap()["endpoint"].clone();
    assert_eq!(enabled["enabled"], true);
    assert_eq!(enabled["disabled_reason"], "");
    assert_eq!(enabled["consecutive_failures"], 0);

    // The metrics count attempts by outcome and the endpoints disabled.
    let metrics_addr = app.omega.metrics_addr();
    let text = app.http.get(format!("http://{metrics_addr}/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |series: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("{series} in {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("omega_webhook_attempts_total{outcome=\"retry\"}") >= 5.0, "{text}");
    assert!(value("omega_webhook_attempts_total{outcome=\"failed\"}") >= 4.0, "{text}");
    assert!(value("omega_webhook_attempts_total{outcome=\"delivered\"}") >= 3.0, "{text}");
    assert_eq!(value("omega_webhook_endpoints_disabled_total"), 2.0, "{text}");
    assert!(text.contains("omega_webhook_deliveries{state=\"pending\"}"), "{text}");
}

async fn replays_of_one_delivery_and_of_a_range(db: Db) {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(db, ALLOW).await;
    let a = app.onboard_simple("replaying", "+14155550121").await;
    let started = chrono::Utc::now() - chrono::Duration::seconds(5);
    let (first, secret) =
        create_endpoint(&app, &a, json!({"url": receiver.url("first"), "event_types": ["note.added"]})).await;
    let client = app.upsert_client(&a, json!({"name": "Fay", "phone": "+14155550196"})).await;
    let conversation = app.conversation(&a, client).await;
    for n in 0..3 {
        add_note(&app, &a, client, conversation, &format!("note {n}")).await;
    }
    eventually(WAIT, "three notes delivered", || async { receiver.received("first").len() >= 3 }).await;
    let log = deliveries(&app, &a, first).await;
    assert_eq!(log.len(), 3);

    // One delivery again: the same webhook-id and body, a second attempt.
    let target = &log[1];
    let replay_path = format!("{}/{first}/deliveries/{}/replay", endpoints_path(&a), target["id"]);
    let resp = app.post(&replay_path, &a.key, Some(json!({}))).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    eventually(WAIT, "the replayed delivery", || async { receiver.received("first").len() >= 4 }).await;
    let got = receiver.received("first");
    assert_eq!(got[3].id, target["webhook_id"].as_str().unwrap());
    assert_eq!(got.iter().filter(|r| r.id == got[3].id).count(), 2);
    assert_eq!(verify_with_standardwebhooks(&secret, &got), 4);
    eventually(WAIT, "the replay is recorded", || async {
        deliveries(&app, &a, first).await.iter().any(|d| d["id"] == target["id"] && d["attempt_count"] == 2)
    })
    .await;
    let missing = format!("{}/{first}/deliveries/999999/replay", endpoints_path(&a));
    assert_eq!(app.post(&missing, &a.key, Some(json!({}))).await.status(), 404);

    // A range, to an endpoint created after the events: each event once, oldest first.
    let (late, late_secret) =
        create_endpoint(&app, &a, json!({"url": receiver.url("late"), "event_types": ["note.added"]})).await;
    assert!(deliveries(&app, &a, late).await.is_empty());
    let range = format!("{}/{late}/replay", endpoints_path(&a));
    let until = chrono::Utc::now() + chrono::Duration::seconds(5);
    let body = json!({"since": started.to_rfc3339(), "until": until.to_rfc3339()});
    let resp = app.post(&range, &a.key, Some(body.clone())).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["queued"], 3, "{answer}");
    assert_eq!(answer["more"], false);
    eventually(WAIT, "the range is delivered", || async { receiver.received("late").len() >= 3 }).await;
    let late_got = receiver.received("late");
    assert_eq!(verify_with_standardwebhooks(&late_secret, &late_got), 3);
    let mut texts: Vec<String> = late_got.iter().map(|r| r.json()["data"]["id"].to_string()).collect();
    texts.dedup();
    assert_eq!(texts.len(), 3, "three different events");
    // The same range again: the same deliveries (same ids), no new rows.
    let resp = app.post(&range, &a.key, Some(body)).await;
    assert_eq!(resp.status(), 200);
    eventually(WAIT, "the range again", || async { receiver.received("late").len() >= 6 }).await;
    let again = receiver.received("late");
    let mut first_ids: Vec<&str> = again[..3].iter().map(|r| r.id.as_str()).collect();
    let mut second_ids: Vec<&str> = again[3..6].iter().map(|r| r.id.as_str()).collect();
    first_ids.sort_unstable();
    second_ids.sort_unstable();
    assert_eq!(first_ids, second_ids, "a replay keeps the webhook-ids");
    assert_eq!(deliveries(&app, &a, late).await.len(), 3);
    // A range after its end, or before any event, queues nothing.
    let empty = json!({"since": "2020-01-01T00:00:00Z", "until": "2020-01-02T00:00:00Z"});
    let resp = app.post(&range, &a.key, Some(empty)).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["queued"], 0);

    // Bad ranges: 422 naming the field.
    for (body, field) in [
        (json!({"since": "yesterday", "until": until.to_rfc3339()}), "since"),
        (json!({"until": until.to_rfc3339()}), "since"),
        (json!({"since": until.to_rfc3339(), "until": started.to_rfc3339()}), "until"),
    ] {
        let resp = app.post(&range, &a.key, Some(body.clone())).await;
        assert_eq!(resp.status(), 422, "{body}");
        assert!(field_of(&resp.json().await.unwrap()).contains(&field.to_owned()), "{body}");
    }
    // The delivery log pages, newest first, and filters by state.
    let page = app.get(&format!("{}/{first}/deliveries?page_size=2", endpoints_path(&a)), &a.key).await;
    let page: Value = page.json().await.unwrap();
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 2);
    let token = page["next_page_token"].as_str().unwrap();
    assert!(!token.is_empty());
    let rest =
        app.get(&format!("{}/{first}/deliveries?page_size=2&page_token={token}", endpoints_path(&a)), &a.key).await;
    let rest: Value = rest.json().await.unwrap();
    assert_eq!(rest["deliveries"].as_array().unwrap().len(), 1);
    assert!(page["deliveries"][1]["id"].as_u64() > rest["deliveries"][0]["id"].as_u64());
    let failed = app.get(&format!("{}/{first}/deliveries?state=failed", endpoints_path(&a)), &a.key).await;
    assert!(failed.json::<Value>().await.unwrap()["deliveries"].as_array().is_none_or(|d| d.is_empty()));
    let bad = app.get(&format!("{}/{first}/deliveries?state=lost", endpoints_path(&a)), &a.key).await;
    assert_eq!(bad.status(), 422);
}

async fn private_addresses_are_refused_unless_allowed(db: Db) {
    let receiver = Receiver::start().await;
    // Quick polls and no retries, but addresses as in production: https only, public only.
    let app = spawn_app_with(db, &[("OMEGA_WEBHOOKS_POLL_MS", "100"), ("OMEGA_WEBHOOKS_RETRY_SCHEDULE", "0ms")]).await;
    let a = app.onboard_simple("guarded", "+14155550131").await;
    let port = receiver.addr.port();
    for url in [
        format!("http://example.com:{port}/hooks/x"),
        format!("https://127.0.0.1:{port}/hooks/x"),
        "https://10.0.0.1/hooks/x".into(),
        "https://169.254.169.254/latest/meta-data".into(),
        "https://[::1]/hooks/x".into(),
        "https://[::ffff:127.0.0.1]/hooks/x".into(),
        "https://[fd00::1]/hooks/x".into(),
        "https://0x7f.1/hooks/x".into(),
    ] {
        let resp = app.post(&endpoints_path(&a), &a.key, Some(json!({"url": url}))).await;
        assert_eq!(resp.status(), 422, "{url}");
        assert_eq!(field_of(&resp.json().await.unwrap()), vec!["url".to_owned()], "{url}");
    }
    // A name is resolved when sending: localhost is loopback, so nothing is sent.
    let (guarded, _) = create_endpoint(
        &app,
        &a,
        json!({"url": format!("https://localhost:{port}/hooks/x"), "event_types": ["conversation.created"]}),
    )
    .await;
    let client = app.upsert_client(&a, json!({"name": "Gil", "phone": "+14155550195"})).await;
    app.conversation(&a, client).await;
    eventually(WAIT, "the delivery is refused", || async {
        deliveries(&app, &a, guarded).await.first().is_some_and(|d| d["state"] == "failed")
    })
    .await;
    let d = &deliveries(&app, &a, guarded).await[0];
    assert!(d["last_error"].as_str().unwrap().contains("non-public"), "{d}");
    assert_eq!(d["last_status_code"], 0);
    assert!(receiver.received("x").is_empty(), "no request reached the loopback receiver");
}

/// The `secret` column of an endpoint, as stored.
async fn stored_secret(app: &TestApp, endpoint: u64) -> String {
    let row = app
        .sql("SELECT secret FROM webhook_endpoints WHERE id = $1", vec![(endpoint as i64).into()])
        .await
        .expect("an endpoint row");
    row.try_get::<String>("", "secret").unwrap()
}

async fn secrets_are_sealed_at_rest_and_survive_a_key_rotation(db: Db) {
    use base64::Engine as _;
    let receiver = Receiver::start().await;
    let mut app = spawn_app_with(db, ALLOW).await;
    let a = app.onboard_simple("sealed", "+14155550141").await;
    let (id, secret) =
        create_endpoint(&app, &a, json!({"url": receiver.url("sealed"), "event_types": ["note.added"]})).await;
    let stored = stored_secret(&app, id).await;
    assert!(stored.starts_with("omega:v1:"), "sealed: {stored}");
    assert!(!stored.contains(secret.trim_start_matches("whsec_")), "no secret at rest");

    // `omega keys rotate-secrets` seals it again with the new key.
    let old_key = std::fs::read_to_string(app.dir.path().join("omega-secrets.key")).unwrap().trim().to_owned();
    let new_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let done = std::process::Command::new(env!("CARGO_BIN_EXE_omega"))
        .args(["keys", "rotate-secrets"])
        .env_clear()
        .env("OMEGA_DATABASE_URL", &app.db.url)
        .env("OMEGA_SECRETS_KEY", &new_key)
        .env("OMEGA_SECRETS_KEY_ID", "k2")
        .env("OMEGA_SECRETS_PREVIOUS_KEYS", &old_key)
        .output()
        .unwrap();
    let output = String::from_utf8_lossy(&done.stderr).into_owned();
    assert!(done.status.success(), "{output}");
    assert!(output.contains("1 of 1 webhook endpoint secrets"), "{output}");
    assert!(stored_secret(&app, id).await.starts_with("omega:v1:k2:"));

    // On the new key alone, deliveries are still signed with the endpoint's secret.
    let mut env: Vec<(String, String)> = app.env.clone();
    env.push(("OMEGA_SECRETS_KEY".into(), new_key));
    env.push(("OMEGA_SECRETS_KEY_ID".into(), "k2".into()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    app.restart(&env_refs).await;
    std::fs::remove_file(app.dir.path().join("omega-secrets.key")).unwrap();
    let client = app.upsert_client(&a, json!({"name": "Hal", "phone": "+14155550194"})).await;
    let conversation = app.conversation(&a, client).await;
    add_note(&app, &a, client, conversation, "after the key rotation").await;
    eventually(WAIT, "the note is delivered", || async { !receiver.received("sealed").is_empty() }).await;
    assert_eq!(verify_with_standardwebhooks(&secret, &receiver.received("sealed")), 1);
}

async fn a_timeout_is_retried_with_the_same_id(db: Db) {
    let receiver = Receiver::start().await;
    let mut env = ALLOW.to_vec();
    env.retain(|(name, _)| *name != "OMEGA_WEBHOOKS_TIMEOUT_SECS");
    env.push(("OMEGA_WEBHOOKS_TIMEOUT_SECS", "1"));
    let app = spawn_app_with(db, &env).await;
    let a = app.onboard_simple("slow", "+14155550161").await;
    // The first answer comes after the timeout; the retry's at once.
    receiver.delay("slow", &[Duration::from_secs(4)]);
    let (slow, _) =
        create_endpoint(&app, &a, json!({"url": receiver.url("slow"), "event_types": ["note.added"]})).await;
    let client = app.upsert_client(&a, json!({"name": "Ivy", "phone": "+14155550193"})).await;
    let conversation = app.conversation(&a, client).await;
    add_note(&app, &a, client, conversation, "slowly").await;
    eventually(WAIT, "the retry after the timeout is delivered", || async {
        deliveries(&app, &a, slow).await.first().is_some_and(|d| d["state"] == "delivered")
    })
    .await;
    let got = receiver.received("slow");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].id, got[1].id, "the retry keeps its webhook-id");
    let d = &deliveries(&app, &a, slow).await[0];
    assert_eq!(d["attempt_count"], 2, "{d}");
    assert_eq!(d["last_status_code"], 200);
}

async fn deliveries_past_the_retention_are_pruned(db: Db) {
    let receiver = Receiver::start().await;
    let mut app = spawn_app_with(db, ALLOW).await;
    let a = app.onboard_simple("pruned", "+14155550171").await;
    let (id, _) =
        create_endpoint(&app, &a, json!({"url": receiver.url("pruned"), "event_types": ["note.added"]})).await;
    let client = app.upsert_client(&a, json!({"name": "Jo", "phone": "+14155550192"})).await;
    let conversation = app.conversation(&a, client).await;
    add_note(&app, &a, client, conversation, "old").await;
    add_note(&app, &a, client, conversation, "recent").await;
    eventually(WAIT, "both delivered", || async {
        let log = deliveries(&app, &a, id).await;
        log.len() == 2 && log.iter().all(|d| d["state"] == "delivered")
    })
    .await;
    let log = deliveries(&app, &a, id).await;
    let (old, recent) = (log[1]["id"].as_u64().unwrap(), log[0]["id"].as_u64().unwrap());
    let long_ago = chrono::Utc::now() - chrono::Duration::days(31);
    app.sql("UPDATE webhook_deliveries SET updated_at = $1 WHERE id = $2", vec![long_ago.into(), (old as i64).into()])
        .await;
    // The log is pruned when a process starts, then hourly (OMEGA_WEBHOOKS_RETENTION_DAYS: 30).
    app.restart(ALLOW).await;
    eventually(WAIT, "the old delivery is pruned", || async { deliveries(&app, &a, id).await.len() == 1 }).await;
    assert_eq!(deliveries(&app, &a, id).await[0]["id"], recent);
}
