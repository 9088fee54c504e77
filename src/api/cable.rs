//! `/cable`: an ActionCable-compatible websocket for chat widgets (Chatwoot's client libraries).
//!
//! A port of its own (`OMEGA_CABLE_LISTEN_ADDR`), served by axum: tonic's server cannot upgrade
//! a connection to a websocket. Envoy routes `/cable` to it. The protocol is ActionCable's JSON
//! (`actioncable-v1-json`): a `welcome` on connect, a `ping` every few seconds, `subscribe` to
//! `RoomChannel` with the contact's `pubsub_token` (confirmed or rejected), then broadcasts in
//! Chatwoot's names and payloads. Each subscription follows the business's event log (like an
//! event stream) and passes on only what the contact may see of its own conversation: its
//! messages (never internal notes), status changes and staff typing.

use std::{collections::HashMap, future::Future, time::Duration};

use axum::{
    Router,
    extract::{
        State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    response::Response,
    routing::get,
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};

use super::chat::{Links, contact_json, conversation_uuid, message_json, staff_json};
use crate::{
    api::convert::wire_id,
    domain::{
        Omega, Result,
        auth::{Caller, Scope},
        chat::ChatContact,
        events::{EventQuery, Followed},
        views::{ConversationView, EventView},
    },
};

/// The subprotocol ActionCable clients offer first.
const PROTOCOL: &str = "actioncable-v1-json";
/// The log's kinds a widget may hear of (each filtered further to the contact's conversation).
const WIDGET_KINDS: &[&str] = &[
    "conversation.created",
    "conversation.status_changed",
    "message.received",
    "message.recorded",
    "message.queued",
    "message.status_changed",
    "message.retried",
    "staff.typing",
    "client.merged",
];

#[derive(Clone)]
struct Cable {
    omega: Omega,
    ping: Duration,
}

/// Serves `/cable` on `listener` until `stop` resolves (connections get ActionCable's
/// `disconnect` with `reconnect: true` when the server stops).
pub async fn serve(
    omega: Omega,
    listener: TcpListener,
    ping: Duration,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route("/cable", get(upgrade)).with_state(Cable { omega, ping });
    axum::serve(listener, app).with_graceful_shutdown(stop).await
}

async fn upgrade(State(cable): State<Cable>, ws: WebSocketUpgrade) -> Response {
    ws.protocols([PROTOCOL]).on_upgrade(move |socket| connection(cable, socket))
}

async fn connection(cable: Cable, mut socket: WebSocket) {
    let (out, mut outgoing) = mpsc::channel::<Value>(64);
    let mut subscriptions: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut stopping = cable.omega.stopping();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + cable.ping, cable.ping);
    if send(&mut socket, &json!({ "type": "welcome" })).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            received = socket.recv() => match received {
                Some(Ok(Message::Text(text))) => {
                    if let Some(answer) = command(&cable, &text, &mut subscriptions, &out).await
                        && send(&mut socket, &answer).await.is_err()
                    {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            Some(message) = outgoing.recv() => {
                if send(&mut socket, &message).await.is_err() {
                    break;
                }
            }
            _ = ping.tick() => {
                if send(&mut socket, &json!({ "type": "ping", "message": chrono::Utc::now().timestamp() })).await.is_err() {
                    break;
                }
            }
            _ = async { stopping.wait_for(|s| *s).await.map(|_| ()) } => {
                let _ = send(&mut socket, &json!({ "type": "disconnect", "reason": "server_restart", "reconnect": true })).await;
                break;
            }
        }
    }
    for (_, task) in subscriptions {
        task.abort();
    }
}

async fn send(socket: &mut WebSocket, message: &Value) -> std::result::Result<(), axum::Error> {
    socket.send(Message::Text(message.to_string().into())).await
}

/// Acts on one client command; answers what to send back, if anything.
async fn command(
    cable: &Cable,
    text: &str,
    subscriptions: &mut HashMap<String, JoinHandle<()>>,
    out: &mpsc::Sender<Value>,
) -> Option<Value> {
    let command: Value = serde_json::from_str(text).ok()?;
    let identifier = command["identifier"].as_str()?.to_owned();
    match command["command"].as_str()? {
        "subscribe" => {
            if subscriptions.contains_key(&identifier) {
                return None;
            }
            let reject = Some(json!({ "identifier": identifier, "type": "reject_subscription" }));
            let Ok(channel) = serde_json::from_str::<Value>(&identifier) else {
                return reject;
            };
            let (Some("RoomChannel"), Some(token)) = (channel["channel"].as_str(), channel["pubsub_token"].as_str())
            else {
                return reject;
            };
            let Ok(chat) = cable.omega.chat_contact_by_pubsub_token(token).await else {
                return reject;
            };
            let caller = Caller::without_key(Scope::Business(chat.business_id()));
            let query = EventQuery {
                business_id: chat.business_id(),
                conversation_id: None,
                kinds: WIDGET_KINDS.iter().map(|k| (*k).to_owned()).collect(),
            };
            // From now on: a widget loads what it missed over the public API.
            let Ok(follower) = cable.omega.events.follow_events(&caller, query, None, Duration::from_secs(60)).await
            else {
                return reject;
            };
            let task = tokio::spawn(follow(cable.omega.clone(), chat, follower, identifier.clone(), out.clone()));
            subscriptions.insert(identifier.clone(), task);
            Some(json!({ "identifier": identifier, "type": "confirm_subscription" }))
        }
        "unsubscribe" => {
            if let Some(task) = subscriptions.remove(&identifier) {
                task.abort();
            }
            None
        }
        // `message` (Chatwoot's widget performs `update_presence`): nothing to do.
        _ => None,
    }
}

/// Passes the contact's events to its connection until either ends.
async fn follow(
    omega: Omega,
    mut chat: ChatContact,
    mut follower: crate::domain::events::EventFollower,
    identifier: String,
    out: mpsc::Sender<Value>,
) {
    let _subscriber = crate::metrics::SubscriberGuard::new("cable");
    loop {
        let rows = match follower.next().await {
            Ok(Followed::Events(rows)) => rows,
            Ok(Followed::Heartbeat { .. }) => continue,
            Ok(Followed::Stopped) => return,
            Err(err) => {
                tracing::warn!(error = %err, "a /cable subscription could not read the event log");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for row in rows {
            if row.kind == "client.merged" {
                // A visitor merged into a client: the contact may now see another record.
                if let Some(token) = chat.pubsub_token().map(str::to_owned)
                    && let Ok(fresh) = omega.chat_contact_by_pubsub_token(&token).await
                {
                    chat = fresh;
                }
                continue;
            }
            match widget_event(&omega, &chat, &row).await {
                Ok(Some((event, data))) => {
                    let message = json!({ "identifier": identifier, "message": { "event": event, "data": data } });
                    if out.send(message).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, event_id = row.id, "a /cable event could not be encoded"),
            }
        }
    }
}

/// Chatwoot's event name and payload for a log row, if the contact may see it: only rows of its
/// own conversation, and never an internal note.
async fn widget_event(omega: &Omega, chat: &ChatContact, row: &EventView) -> Result<Option<(&'static str, Value)>> {
    let Some(conversation_id) = row.conversation_id else {
        return Ok(None);
    };
    let Some(conversation) = omega.chat_conversation_if_theirs(chat, conversation_id).await? else {
        return Ok(None);
    };
    let data: Value = serde_json::from_str(&row.data).unwrap_or_default();
    let event = match row.kind.as_str() {
        "message.received" | "message.recorded" | "message.queued" => "message.created",
        "message.status_changed" | "message.retried" => "message.updated",
        "conversation.created" => "conversation.created",
        "conversation.status_changed" => "conversation.status_changed",
        "staff.typing" => {
            let on = data["typing"].as_bool().unwrap_or(false);
            let user = match row.actor_staff_id {
                Some(id) => {
                    let names = omega.chat_staff_names(chat, &[id]).await?;
                    staff_json(Some(id), names.get(&id).cloned())?
                }
                None => staff_json(None, None)?,
            };
            let payload = json!({
                "conversation": conversation_json(chat, &conversation)?,
                "user": user,
                "is_private": false,
            });
            return Ok(Some((if on { "conversation.typing_on" } else { "conversation.typing_off" }, payload)));
        }
        _ => return Ok(None),
    };
    if event.starts_with("message.") {
        let Some(message) = data["message_id"].as_str() else {
            return Ok(None);
        };
        let Some(message) = omega.chat_visible_message(&conversation, message).await? else {
            return Ok(None);
        };
        let ids: Vec<i64> = message.sender_staff_id.into_iter().collect();
        let staff = omega.chat_staff_names(chat, &ids).await?;
        let links = Links::on_public_url(omega.webhooks.public_url.as_deref(), chat);
        let mut payload = message_json(chat, &staff, &links, &message)?;
        payload["account_id"] = json!(wire_id(chat.business_id())?);
        payload["inbox_id"] = json!(wire_id(chat.inbox_id())?);
        payload["private"] = json!(false);
        payload["conversation"] = json!({
            "assignee_id": conversation.assigned_staff_id.map(wire_id).transpose()?,
            "unread_count": conversation.unread_count,
            "contact_inbox": { "source_id": chat.source_id() },
        });
        return Ok(Some((event, payload)));
    }
    Ok(Some((event, conversation_json(chat, &conversation)?)))
}

/// Chatwoot's conversation push payload, as far as Omega has it.
fn conversation_json(chat: &ChatContact, c: &ConversationView) -> Result<Value> {
    Ok(json!({
        "id": wire_id(c.id)?,
        "uuid": conversation_uuid(c),
        "account_id": wire_id(chat.business_id())?,
        "inbox_id": wire_id(chat.inbox_id())?,
        "status": c.status.as_str().to_ascii_lowercase(),
        "contact_last_seen_at": c.contact_last_seen_at.map_or(0, |t| t.timestamp()),
        "agent_last_seen_at": c.agent_last_seen_at.map_or(0, |t| t.timestamp()),
        "snoozed_until": c.snoozed_until.map(|t| t.timestamp()),
        "created_at": c.created_at.timestamp(),
        "contact_inbox": { "source_id": chat.source_id() },
        "meta": { "sender": contact_json(chat)? },
    }))
}
