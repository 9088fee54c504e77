//! `/cable` through Envoy, driven by the real ActionCable client (npm `@rails/actioncable` on
//! Node with `ws`): welcome, pings, RoomChannel subscriptions by pubsub token, Chatwoot's event
//! names and payloads, and a contact hearing only its own conversation (never notes).

use std::{path::Path, process::Stdio, time::Duration};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

use crate::common::{self, Db, TestApp, TestBusiness, spawn_app_with};

both_databases!(a_widget_hears_its_own_conversation_live_and_nothing_else, a_wrong_token_is_rejected);

/// The ActionCable client on Node, printing what it sees.
struct Widget {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Widget {
    fn start(app: &TestApp, token: &str) -> Self {
        let root = Path::new(common::MANIFEST_DIR);
        let modules = root.join(".tools/node_modules");
        assert!(
            modules.join("@rails/actioncable/package.json").exists() && modules.join("ws/package.json").exists(),
            "the ActionCable client is not installed: run scripts/ensure-tools.sh"
        );
        let mut child = Command::new("node")
            .arg(root.join("tests/e2e/cable/client.js"))
            .arg(format!("ws://{}/cable", app.envoy_addr))
            .arg(token)
            .env("OMEGA_NODE_MODULES", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    /// The next line the client printed, within `within`.
    async fn next(&mut self, within: Duration) -> Value {
        let line = tokio::time::timeout(within, self.lines.next_line())
            .await
            .expect("the widget saw something in time")
            .unwrap()
            .expect("the widget is running");
        serde_json::from_str(&line).unwrap()
    }

    /// Lines until one matches `until` (that one included), skipping pings.
    async fn until(&mut self, within: Duration, until: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let line = self.next(within).await;
            let done = until(&line);
            if line["frame"] != "ping" {
                seen.push(line);
            }
            if done {
                return seen;
            }
        }
    }
}

impl Drop for Widget {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn json_of(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn public_post(app: &TestApp, path: &str, body: Value) -> Value {
    json_of(
        app.http
            .post(app.rest(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// A contact of `inbox` with its conversation: (client id, conversation id, pubsub token, public path).
async fn contact(app: &TestApp, inbox: &str, name: &str) -> (u64, u64, String, String) {
    let contact = public_post(app, &format!("/public/api/v1/inboxes/{inbox}/contacts"), json!({ "name": name })).await;
    let source = contact["source_id"].as_str().unwrap();
    let token = contact["pubsub_token"].as_str().unwrap().to_owned();
    let base = format!("/public/api/v1/inboxes/{inbox}/contacts/{source}/conversations");
    let conversation = public_post(app, &base, json!({})).await;
    let id = conversation["id"].as_u64().unwrap();
    (contact["id"].as_u64().unwrap(), id, token, format!("{base}/{id}"))
}

async fn reply(app: &TestApp, b: &TestBusiness, client: u64, text: &str) {
    let body = json!({ "business_id": b.id, "channel": "CHAT", "direction": "OUTBOUND", "client": { "client_id": client },
                       "content": text, "sent_by": b.staff_ids[0] });
    json_of(app.post("/omega/messages", &b.key, Some(body)).await).await;
}

async fn setup(db: Db) -> (TestApp, TestBusiness, String) {
    let app = spawn_app_with(db, &[("OMEGA_CABLE_PING_SECS", "1")]).await;
    let b = app.onboard_simple("cable", "+14155550123").await;
    let body = json!({ "name": "Website chat", "location_id": b.location_ids[0] });
    let inbox = json_of(app.post(&format!("/omega/businesses/{}/inboxes", b.id), &b.key, Some(body)).await).await;
    let identifier = inbox["inbox"]["inbox_identifier"].as_str().unwrap().to_owned();
    (app, b, identifier)
}

async fn a_widget_hears_its_own_conversation_live_and_nothing_else(db: Db) {
    let (app, b, inbox) = setup(db).await;
    let (client, conversation, token, public) = contact(&app, &inbox, "Carla").await;
    let (other_client, _, _, _) = contact(&app, &inbox, "Dora").await;

    let mut widget = Widget::start(&app, &token);
    let hello = widget.next(Duration::from_secs(10)).await;
    assert_eq!(hello, json!({ "frame": "welcome", "protocol": "actioncable-v1-json" }));
    assert_eq!(widget.next(Duration::from_secs(5)).await, json!({ "callback": "connected" }));

    // Staff reply, a note, another contact's conversation, typing, the contact's own message and
    // a resolution: the widget hears its conversation's, in order, and nothing of the rest.
    reply(&app, &b, client, "Two spots left!").await;
    let note = json!({ "content": "SECRET note", "sent_by": b.staff_ids[0], "sender_type": "staff" });
    let note_path = format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/note", b.id);
    json_of(app.post(&note_path, &b.key, Some(note)).await).await;
    reply(&app, &b, other_client, "For Dora only").await;
    let typing = format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/typing", b.id);
    for on in [true, false] {
        let body = json!({ "typing": on, "staff_id": b.staff_ids[0] });
        json_of(app.post(&typing, &b.key, Some(body)).await).await;
    }
    public_post(&app, &format!("{public}/messages"), json!({ "content": "See you at 6" })).await;
    let resolve =
        format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/status?status=RESOLVED", b.id);
    json_of(app.post(&resolve, &b.key, None).await).await;

    let seen =
        widget.until(Duration::from_secs(5), |line| line["data"]["event"] == "conversation.status_changed").await;
    let events: Vec<&str> = seen.iter().map(|l| l["data"]["event"].as_str().unwrap_or("?")).collect();
    assert_eq!(
        events,
        [
            "message.created",
            "conversation.typing_on",
            "conversation.typing_off",
            "message.created",
            "conversation.status_changed"
        ],
        "{seen:#?}"
    );
    let text = serde_json::to_string(&seen).unwrap();
    assert!(!text.contains("SECRET") && !text.contains("Dora"), "{text}");

    let staff_reply = &seen[0]["data"]["data"];
    assert_eq!(staff_reply["content"], "Two spots left!");
    assert_eq!(staff_reply["message_type"], 1);
    assert_eq!(staff_reply["conversation_id"], conversation);
    assert_eq!(staff_reply["private"], false);
    assert_eq!(staff_reply["sender"]["type"], "user");
    assert_eq!(staff_reply["sender"]["name"], "Ana");
    assert!(staff_reply["id"].is_u64() && staff_reply["created_at"].is_i64(), "{staff_reply}");
    let typing_on = &seen[1]["data"]["data"];
    assert_eq!(typing_on["conversation"]["id"], conversation);
    assert_eq!(typing_on["user"]["name"], "Ana");
    assert_eq!(typing_on["is_private"], false);
    let own = &seen[3]["data"]["data"];
    assert_eq!((own["content"].as_str(), own["message_type"].as_u64()), (Some("See you at 6"), Some(0)));
    let status = &seen[4]["data"]["data"];
    assert_eq!((status["id"].as_u64(), status["status"].as_str()), (Some(conversation), Some("resolved")));

    // Pings keep coming (the client counts a connection stale after two missed).
    let ping = widget.next(Duration::from_secs(3)).await;
    assert_eq!(ping["frame"], "ping", "{ping}");
}

async fn a_wrong_token_is_rejected(db: Db) {
    let (app, _b, inbox) = setup(db).await;
    let (_, _, token, _) = contact(&app, &inbox, "Erin").await;
    let mut widget = Widget::start(&app, &format!("{token}x"));
    assert_eq!(widget.next(Duration::from_secs(10)).await["frame"], "welcome");
    let seen = widget.until(Duration::from_secs(5), |l| l["callback"].is_string()).await;
    assert_eq!(seen.last().unwrap(), &json!({ "callback": "rejected" }));
}
