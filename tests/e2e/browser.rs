//! The example staff inbox page (`examples/browser`) in headless Chromium: its Connect-ES client,
//! generated from the protos when the page is built, calls Omega over gRPC-Web through Envoy
//! from another origin, as browsers will — CORS preflights, gRPC-Web framing over `fetch`, and
//! `StreamEvents` as a server stream read from a `fetch` body.
//!
//! SQLite only, on purpose: what these tests prove is the browser's transport, which the
//! database does not change (every call they make runs on both databases in the other
//! modules), and a Chromium per test is the heaviest thing the suite starts.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::Duration,
};

use axum::{Router, http::header, routing::get};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

use crate::common::{self, Db, TestApp, TestBusiness, spawn_app_with};

/// Generous: CI's machine is busy, and Chromium starts slowly there.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn example_dir() -> PathBuf {
    Path::new(common::MANIFEST_DIR).join("examples/browser")
}

/// The Chromium the tests drive: `OMEGA_TEST_CHROMIUM`, else Debian's (scripts/ensure-tools.sh
/// installs it).
fn chromium() -> PathBuf {
    let path = std::env::var("OMEGA_TEST_CHROMIUM").map_or_else(|_| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.exists(),
        "no Chromium at {}: run scripts/ensure-tools.sh (or set OMEGA_TEST_CHROMIUM)",
        path.display()
    );
    path
}

/// Builds the page once per test run, as a person would (`examples/browser/build.sh`): the
/// client generated from the protos, type-checked against the page's code, then bundled.
async fn build_page() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = tokio::task::spawn_blocking(|| {
        BUILT
            .get_or_init(|| {
                let dir = example_dir();
                if !dir.join("node_modules/playwright-core/package.json").exists() {
                    return Err("the example's npm packages are not installed: run scripts/ensure-tools.sh".into());
                }
                let out = std::process::Command::new(dir.join("build.sh")).output().map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!(
                        "examples/browser/build.sh failed:\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                Ok(())
            })
            .clone()
    })
    .await
    .unwrap();
    if let Err(why) = result {
        panic!("{why}");
    }
}

/// Serves the built page (index.html and dist/main.js) on a loopback port of its own: an
/// origin other than Envoy's. Stops when dropped.
struct PageServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl PageServer {
    async fn start() -> Self {
        let dir = example_dir();
        let index = std::fs::read(dir.join("index.html")).expect("index.html");
        let script = std::fs::read(dir.join("dist/main.js")).expect("the built page script");
        let app = Router::new()
            .route("/", get(move || async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], index) }))
            .route(
                "/dist/main.js",
                get(move || async move { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], script) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, task }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn url(&self) -> String {
        format!("{}/", self.origin())
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// tests/e2e/browser/drive.js: Chromium steered through the page's UI, printing a JSON line per
/// step with what the page shows.
struct Browser {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Everything it printed, shown when a step is not what the test expects.
    transcript: Vec<String>,
}

impl Browser {
    fn start(mut settings: Value) -> Self {
        let modules = example_dir().join("node_modules");
        settings["chromium"] = json!(chromium());
        settings["timeout_ms"] = json!(STEP_TIMEOUT.as_millis() as u64);
        let mut child = Command::new("node")
            .arg(Path::new(common::MANIFEST_DIR).join("tests/e2e/browser/drive.js"))
            .arg(settings.to_string())
            .env("OMEGA_NODE_MODULES", &modules)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines, transcript: Vec::new() }
    }

    /// The next step the driver reports (its log lines kept aside); panics unless it is `name`.
    async fn step(&mut self, name: &str) -> Value {
        loop {
            let line = tokio::time::timeout(STEP_TIMEOUT * 2, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no step {name:?} in time; so far:\n{}", self.transcript.join("\n")))
                .unwrap()
                .unwrap_or_else(|| panic!("the driver ended before step {name:?}:\n{}", self.transcript.join("\n")));
            self.transcript.push(line.clone());
            let value: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            if value.get("log").is_some() {
                continue;
            }
            assert_eq!(value["step"], name, "unexpected step; so far:\n{}", self.transcript.join("\n"));
            return value;
        }
    }

    /// The last step: Chromium closed and the driver exited cleanly.
    async fn done(mut self) {
        self.step("done").await;
        let status = tokio::time::timeout(STEP_TIMEOUT, self.child.wait()).await.expect("the driver exits").unwrap();
        assert!(status.success(), "the driver exited with {status}:\n{}", self.transcript.join("\n"));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn texts(shown: &Value, list: &str) -> Vec<String> {
    shown[list].as_array().unwrap().iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect()
}

fn count(shown: &Value, kind: &str) -> usize {
    shown["events"].as_array().unwrap().iter().filter(|k| *k == kind).count()
}

async fn json_of(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// An inbound SMS from the client, as Twilio's webhook would record it; answers the conversation.
async fn inbound_sms(app: &TestApp, b: &TestBusiness, sid: &str, text: &str) -> u64 {
    let body = json!({ "business_id": b.id, "channel": "sms", "direction": "inbound", "client": { "phone": "415-555-0199" },
                       "content": text, "provider": "twilio", "provider_message_id": sid });
    json_of(app.post("/omega/messages", &b.key, Some(body)).await).await["conversation_id"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_the_inbox_page_lists_reads_notes_and_follows_live_over_grpc_web() {
    build_page().await;
    let site = PageServer::start().await;
    let app = spawn_app_with(Db::Sqlite, &[("OMEGA_CORS_ALLOWED_ORIGINS", &site.origin())]).await;
    let b = app.onboard_simple("browser", "+14155550142").await;
    let client = app
        .upsert_client(
            &b,
            json!({ "name": "Carla Diaz", "phone": "415-555-0199", "external_ref": "client-7", "sms_consent": true }),
        )
        .await;
    let conversation = inbound_sms(&app, &b, "SMbrowser1", "Can I move my 6pm class?").await;
    let staff = b.staff_ids[0];
    let note = "Prefers mornings (from the browser)";
    let live_text = "Running 5 minutes late";

    let mut browser = Browser::start(json!({
        "scenario": "journey", "page": site.url(), "envoy": format!("http://{}", app.envoy_addr), "key": b.key,
        "business_id": b.id, "staff_id": staff, "conversation_id": conversation, "note": note, "live_text": live_text,
    }));

    // ListConversations: the business's one conversation, with its client and last message.
    let inbox = browser.step("inbox").await;
    assert_eq!(inbox["error"], "", "{inbox}");
    let listed = inbox["conversations"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{inbox}");
    assert_eq!(listed[0]["id"], conversation);
    let line = listed[0]["text"].as_str().unwrap();
    assert!(
        line.contains("Carla Diaz") && line.contains("OPEN") && line.contains("Can I move my 6pm class?"),
        "{line}"
    );

    // ListConversationMessages: the client's text.
    let opened = browser.step("conversation").await;
    assert_eq!(opened["error"], "", "{opened}");
    assert!(
        texts(&opened, "messages").iter().any(|m| m.contains("SMS inbound") && m.contains("Can I move")),
        "{opened}"
    );

    // AddNote from the page: shown there, and stored, by this staff member, as the REST API reads it.
    let noted = browser.step("note").await;
    assert_eq!(noted["error"], "", "{noted}");
    assert_eq!(texts(&noted, "notes").len(), 1, "{noted}");
    let path =
        format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/messages?channel=NOTE", b.id);
    let stored = json_of(app.get(&path, &b.key).await).await;
    let notes = stored["messages"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{stored}");
    assert_eq!((notes[0]["content"].as_str(), notes[0]["sender_staff_id"].as_u64()), (Some(note), Some(staff)));

    // StreamEvents: once the page follows the conversation, a message arriving elsewhere shows
    // up in it live, with its event; the log's earlier events are replayed once each.
    browser.step("following").await;
    inbound_sms(&app, &b, "SMbrowser2", live_text).await;
    let live = browser.step("live").await;
    assert_eq!(live["error"], "", "{live}");
    assert_eq!(live["live"], "following", "{live}");
    assert!(texts(&live, "messages").iter().any(|m| m.contains(live_text)), "{live}");
    assert_eq!(count(&live, "conversation.created"), 1, "{live}");
    assert_eq!(count(&live, "message.received"), 2, "{live}");
    assert_eq!(count(&live, "note.added"), 1, "{live}");
    browser.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_the_inbox_page_shows_a_refused_key_and_gets_nothing_from_a_foreign_origin() {
    build_page().await;
    let (site, foreign) = (PageServer::start().await, PageServer::start().await);
    let app = spawn_app_with(Db::Sqlite, &[("OMEGA_CORS_ALLOWED_ORIGINS", &site.origin())]).await;
    let b = app.onboard_simple("refusals", "+14155550143").await;
    let conversation = inbound_sms(&app, &b, "SMrefused1", "Hello?").await;

    let mut browser = Browser::start(json!({
        "scenario": "refusals", "page": site.url(), "foreign_page": foreign.url(), "envoy": format!("http://{}", app.envoy_addr),
        "key": b.key, "business_id": b.id, "staff_id": b.staff_ids[0], "conversation_id": conversation,
    }));

    // Omega's answer reaches the page (CORS lets it read it): the key is refused.
    let wrong = browser.step("wrong-key").await;
    assert!(wrong["error"].as_str().unwrap().starts_with("Unauthenticated: "), "{wrong}");
    assert_eq!(wrong["conversations"], json!([]), "{wrong}");

    // From an origin the setting does not name, the browser withholds the answer: the page only
    // learns that the call failed, and lists nothing although the key is right.
    let foreign = browser.step("foreign-origin").await;
    let error = foreign["error"].as_str().unwrap();
    assert!(!error.is_empty() && !error.starts_with("Unauthenticated"), "{foreign}");
    assert_eq!(foreign["conversations"], json!([]), "{foreign}");
    browser.done().await;
}
