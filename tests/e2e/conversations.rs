//! The inbox end to end: the legacy REST API's documented conversation endpoints as its curl examples
//! send them, status rules and history, assignment, notes, lists with filters and counts,
//! read status, concurrency, pagination under inserts, and tenant isolation.

use crate::common;

use std::{collections::HashSet, sync::Arc, time::Duration};

use crate::common::{json_of, violated_field};
use common::{Db, TestApp, TestBusiness, eventually, spawn_app, with_key};
use omega::proto::omega::v1::{
    UpdateConversationStatusRequest, conversation_service_client::ConversationServiceClient,
};
use serde_json::{Value, json};
use tonic_types::StatusExt;

both_databases!(
    documented_examples_work_as_written,
    concurrent_create_or_retrieve_makes_one_conversation,
    status_changes_follow_the_rules_and_are_recorded,
    a_snoozed_conversation_reopens_when_its_time_comes,
    assignment_needs_an_active_staff_member_of_the_business,
    notes_are_validated_and_listed_as_internal_messages,
    lists_filter_count_and_match_text,
    large_inboxes_cap_filtered_totals_and_find_clients_by_index,
    read_status_follows_filters_and_unread_counts_follow,
    pagination_has_no_gaps_or_duplicates_while_conversations_arrive,
    another_business_sees_nothing,
    grpc_reports_field_violations,
);

/// A business with one client whose conversation exists: (business, client id, conversation id).
async fn inbox(app: &TestApp) -> (TestBusiness, u64, u64) {
    let business = app.onboard_simple("lotus", "+14155550100").await;
    let client = app.upsert_client(&business, json!({ "name": "Carla Diaz", "phone": "415-555-0199" })).await;
    let conversation = app.conversation(&business, client).await;
    (business, client, conversation)
}

fn conversation_path(b: &TestBusiness, client: u64, conversation: u64, rest: &str) -> String {
    format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}{rest}", b.id)
}

async fn history_kinds(
    app: &TestApp,
    b: &TestBusiness,
    client: u64,
    conversation: u64,
) -> Vec<(String, String, String)> {
    let body =
        json_of(app.get(&conversation_path(b, client, conversation, "/history?page_size=200"), &b.key).await, 200)
            .await;
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["from"].as_str().unwrap().to_owned(),
                e["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn documented_examples_work_as_written(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("lotus", "+14155550100").await;
    let client = app.upsert_client(&business, json!({ "name": "Carla", "phone": "+14155550199" })).await;
    app.insert_staff_with_id(&business, 12345, "Dana", true).await;
    let base = app.rest("/omega");
    let (b, key) = (business.id, business.key.as_str());

    // curl --location --request POST '…/omega/businesses/{b}/clients/{c}/conversation' --header 'X-API-KEY: …'
    let send = |method: &str, url: String| app.http.request(method.parse().unwrap(), url).header("X-API-KEY", key);
    let created = json_of(
        send("POST", format!("{base}/businesses/{b}/clients/{client}/conversation")).send().await.unwrap(),
        200,
    )
    .await;
    let conversation = created["conversation_id"].as_u64().expect("conversation_id is a number");
    assert_eq!(created["message"], "Conversation created");
    let again = json_of(
        send("POST", format!("{base}/businesses/{b}/clients/{client}/conversation")).send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(again["conversation_id"], conversation);
    assert_eq!(again["message"], "Existing conversation retrieved");

    // …/status?status=RESOLVED, and the legacy ACTIVE.
    let url = format!("{base}/businesses/{b}/clients/{client}/conversations/{conversation}/status?status=RESOLVED");
    let body = json_of(send("POST", url).send().await.unwrap(), 200).await;
    assert_eq!(body["conversation_id"], conversation);
    assert!(body["message"].as_str().unwrap().contains("RESOLVED"), "{body}");
    let url = format!("{base}/businesses/{b}/clients/{client}/conversations/{conversation}/status?status=ACTIVE");
    let body = json_of(send("POST", url).send().await.unwrap(), 200).await;
    assert_eq!(body["status"], "OPEN");

    // …/assignment?assigned_to=12345
    let url =
        format!("{base}/businesses/{b}/clients/{client}/conversations/{conversation}/assignment?assigned_to=12345");
    let body = json_of(send("POST", url).send().await.unwrap(), 200).await;
    assert_eq!(body["conversation_id"], conversation);
    assert_eq!(body["message"], "Client successfully assigned to staff member Dana");

    // …/note with the documented body, byte for byte.
    let url = format!("{base}/businesses/{b}/clients/{client}/conversations/{conversation}/note");
    let resp = send("POST", url)
        .header("Content-Type", "application/json")
        .body(
            r#"{
    "content": "Client requested additional information about therapy options. Need to prepare detailed response.",
    "sent_by": 12345,
    "sender_type": "staff"
}"#,
        )
        .send()
        .await
        .unwrap();
    let body = json_of(resp, 200).await;
    assert_eq!(body["conversation_id"], conversation);
    assert!(body["message"].as_str().unwrap().contains("note"), "{body}");
    assert_eq!(body["category"], "general");

    // The documented literal URLs leave the ids empty and the key blank: a 422 naming a field.
    for literal in [
        "/businesses//clients//conversation",
        "/businesses//clients//conversations//status?status",
        "/businesses//clients//conversations//assignment?assigned_to",
        "/businesses//clients//conversations//note",
    ] {
        let resp = app.http.post(format!("{base}{literal}")).header("X-API-KEY", "").send().await.unwrap();
        let body = json_of(resp, 422).await;
        assert!(body["message"].as_str().unwrap().contains("_id"), "{literal}: {body}");
    }
}

async fn concurrent_create_or_retrieve_makes_one_conversation(db: Db) {
    let app = Arc::new(spawn_app(db).await);
    let business = Arc::new(app.onboard_simple("lotus", "+14155550100").await);
    let client = app.upsert_client(&business, json!({ "name": "Carla", "phone": "+14155550199" })).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (app, business) = (app.clone(), business.clone());
        tasks.spawn(async move {
            let path = format!("/omega/businesses/{}/clients/{client}/conversation", business.id);
            json_of(app.post(&path, &business.key, None).await, 200).await
        });
    }
    let answers = tasks.join_all().await;
    let ids: HashSet<u64> = answers.iter().map(|a| a["conversation_id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|a| a["created"] == true).count(), 1, "{answers:?}");
    let list =
        json_of(app.get(&format!("/omega/businesses/{}/conversations", business.id), &business.key).await, 200).await;
    assert_eq!(list["total_size"], 1);
    let history = history_kinds(&app, &business, client, *ids.iter().next().unwrap()).await;
    assert_eq!(history.iter().filter(|(k, _, _)| k == "conversation.created").count(), 1);
}

async fn status_changes_follow_the_rules_and_are_recorded(db: Db) {
    let app = spawn_app(db).await;
    let (b, client, conversation) = inbox(&app).await;
    let status = |query: String| {
        let path = conversation_path(&b, client, conversation, &format!("/status?{query}"));
        let key = b.key.clone();
        let app = &app;
        async move { app.post(&path, &key, None).await }
    };
    let ana = b.staff_ids[0];

    assert_eq!(json_of(status("status=pending".into()).await, 200).await["previous_status"], "OPEN");
    let resolved =
        json_of(status(format!("status=RESOLVED&resolved_by={ana}&note=Booked%20a%20class")).await, 200).await;
    assert_eq!(resolved["status"], "RESOLVED");
    // Setting the same status again changes nothing.
    let same = json_of(status("status=RESOLVED".into()).await, 200).await;
    assert!(same["message"].as_str().unwrap().contains("already"), "{same}");

    // A resolved conversation must be reopened before it is snoozed or put on hold: 409.
    let conflict = json_of(status("status=SNOOZED&snoozed_until=2099-01-01T00:00:00Z".into()).await, 409).await;
    assert_eq!(conflict["code"], 9);

    // Resolution details are shown with the conversation.
    let profile = json_of(app.get(&format!("/omega/businesses/{}/clients/{client}", b.id), &b.key).await, 200).await;
    assert_eq!(profile["conversation"]["status"], "RESOLVED");
    assert_eq!(profile["conversation"]["resolution"]["resolved_by"], ana);
    assert_eq!(profile["conversation"]["resolution"]["note"], "Booked a class");

    // Bad parameters: 422 naming the field; nothing changes.
    for (query, field) in [
        ("status=DONE", "status"),
        ("status=", "status"),
        ("status=OPEN&snoozed_until=2099-01-01T00:00:00Z", "snoozed_until"),
        ("status=OPEN&note=why", "note"),
        ("status=RESOLVED&resolved_by=999999", "resolved_by"),
    ] {
        let body = json_of(status(query.into()).await, 422).await;
        assert_eq!(violated_field(&body), field, "{query}: {body}");
    }
    json_of(status("status=OPEN".into()).await, 200).await;
    for (query, field) in [
        ("status=SNOOZED", "snoozed_until"),
        ("status=SNOOZED&snoozed_until=2001-01-01T00:00:00Z", "snoozed_until"),
        ("status=SNOOZED&snoozed_until=tomorrow", "snoozed_until"),
    ] {
        let body = json_of(status(query.into()).await, 422).await;
        assert_eq!(violated_field(&body), field, "{query}: {body}");
    }
    let snoozed = json_of(status("status=SNOOZED&snoozed_until=2099-01-01T09:00:00Z".into()).await, 200).await;
    assert_eq!(snoozed["status"], "SNOOZED");

    let history = history_kinds(&app, &b, client, conversation).await;
    let changes: Vec<(&str, &str)> = history
        .iter()
        .filter(|(k, _, _)| k == "conversation.status_changed")
        .map(|(_, f, t)| (f.as_str(), t.as_str()))
        .collect();
    assert_eq!(changes, [("OPEN", "PENDING"), ("PENDING", "RESOLVED"), ("RESOLVED", "OPEN"), ("OPEN", "SNOOZED")]);

    // The conversation must belong to the client in the path.
    let other = app.upsert_client(&b, json!({ "name": "Dan", "phone": "+14155550198" })).await;
    let path = conversation_path(&b, other, conversation, "/status?status=OPEN");
    json_of(app.post(&path, &b.key, None).await, 404).await;
}

async fn a_snoozed_conversation_reopens_when_its_time_comes(db: Db) {
    let app = spawn_app(db).await;
    let (b, client, conversation) = inbox(&app).await;
    let until =
        (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let path = conversation_path(&b, client, conversation, &format!("/status?status=SNOOZED&snoozed_until={until}"));
    json_of(app.post(&path, &b.key, None).await, 200).await;
    let profile = format!("/omega/businesses/{}/clients/{client}", b.id);
    let body = json_of(app.get(&profile, &b.key).await, 200).await;
    assert_eq!(body["conversation"]["status"], "SNOOZED");
    assert!(body["conversation"]["snoozed_until"].is_string());
    eventually(Duration::from_secs(15), "the snooze to expire", || async {
        json_of(app.get(&profile, &b.key).await, 200).await["conversation"]["status"] == "OPEN"
    })
    .await;
    let history = history_kinds(&app, &b, client, conversation).await;
    assert_eq!(history.last().unwrap(), &("conversation.status_changed".into(), "SNOOZED".into(), "OPEN".into()));
    // The counters moved with it.
    let list =
        json_of(app.get(&format!("/omega/businesses/{}/conversations?status=OPEN", b.id), &b.key).await, 200).await;
    assert_eq!(list["total_size"], 1);
}

async fn assignment_needs_an_active_staff_member_of_the_business(db: Db) {
    let app = spawn_app(db).await;
    let (b, client, conversation) = inbox(&app).await;
    let other = app.onboard_simple("other", "+14155550101").await;
    app.insert_staff_with_id(&b, 777, "Former", false).await;
    let assign = |to: String| {
        let path = conversation_path(&b, client, conversation, &format!("/assignment?assigned_to={to}"));
        let key = b.key.clone();
        let app = &app;
        async move { app.post(&path, &key, None).await }
    };
    for to in ["777".to_owned(), other.staff_ids[0].to_string(), "999999".into(), "abc".into(), "".into(), "0".into()] {
        let body = json_of(assign(to.clone()).await, 422).await;
        assert_eq!(violated_field(&body), "assigned_to", "{to}: {body}");
    }
    let ana = b.staff_ids[0];
    let body = json_of(assign(ana.to_string()).await, 200).await;
    assert_eq!(body["assigned_to"], ana);
    let again = json_of(assign(ana.to_string()).await, 200).await;
    assert!(again["message"].as_str().unwrap().contains("already"), "{again}");

    let list_path = format!("/omega/businesses/{}/conversations?assignee={ana}", b.id);
    let list = json_of(app.get(&list_path, &b.key).await, 200).await;
    assert_eq!(list["total_size"], 1);
    assert_eq!(list["conversations"][0]["assignee_name"], "Ana");
    let staff = json_of(app.get(&format!("/omega/businesses/{}/staffs/{ana}", b.id), &b.key).await, 200).await;
    assert_eq!(staff["assigned_counts"][0], json!({ "value": "OPEN", "label": "OPEN", "count": 1 }));

    let body = json_of(assign("none".into()).await, 200).await;
    assert!(body.get("assigned_to").is_none(), "{body}");
    let list =
        json_of(app.get(&format!("/omega/businesses/{}/conversations?assignee=unassigned", b.id), &b.key).await, 200)
            .await;
    assert_eq!(list["total_size"], 1);
    let kinds: Vec<String> =
        history_kinds(&app, &b, client, conversation).await.into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(kinds, ["conversation.created", "conversation.assigned", "conversation.unassigned"]);
}

async fn notes_are_validated_and_listed_as_internal_messages(db: Db) {
    let app = spawn_app(db).await;
    let (b, client, conversation) = inbox(&app).await;
    let note_path = conversation_path(&b, client, conversation, "/note");
    let ana = b.staff_ids[0];
    for (body, field) in [
        (json!({ "content": " ", "sent_by": ana, "sender_type": "staff" }), "content"),
        (json!({ "content": "x", "sent_by": ana, "sender_type": "client" }), "sender_type"),
        (json!({ "content": "x", "sent_by": 999999, "sender_type": "staff" }), "sent_by"),
        (json!({ "content": "x", "sender_type": "staff" }), "sent_by"),
        (json!({ "content": "x", "sent_by": ana, "sender_type": "staff", "category": "Not OK!" }), "category"),
    ] {
        let resp = json_of(app.post(&note_path, &b.key, Some(body.clone())).await, 422).await;
        assert_eq!(violated_field(&resp), field, "{body}: {resp}");
    }
    let inbound = app.insert_inbound_message(&b, client, conversation, "SMS", "Hi, can I book?").await;
    let note =
        json!({ "content": "Prefers mornings", "sent_by": ana, "sender_type": "staff", "category": "follow_up" });
    let created = json_of(app.post(&note_path, &b.key, Some(note)).await, 200).await;
    let messages_path = conversation_path(&b, client, conversation, "/messages");
    let all = json_of(app.get(&messages_path, &b.key).await, 200).await;
    assert_eq!(all["total_size"], 2, "the rejected notes wrote nothing");
    let newest = &all["messages"][0];
    assert_eq!(newest["id"], created["note_id"]);
    assert_eq!(newest["channel"], "NOTE");
    assert_eq!(newest["direction"], "INTERNAL");
    assert_eq!(newest["sender_staff_id"], ana);
    assert_eq!(newest["note_category"], "follow_up");
    assert_eq!(all["messages"][1]["id"], inbound.as_str());

    let without_notes = json_of(app.get(&format!("{messages_path}?include_notes=false"), &b.key).await, 200).await;
    assert_eq!(without_notes["total_size"], 1);
    assert_eq!(without_notes["messages"][0]["channel"], "SMS");
    let only_notes = json_of(app.get(&format!("{messages_path}?channel=note"), &b.key).await, 200).await;
    assert_eq!(only_notes["total_size"], 1);
    let oldest_first = json_of(app.get(&format!("{messages_path}?order=asc&page_size=1"), &b.key).await, 200).await;
    assert_eq!(oldest_first["messages"][0]["id"], inbound.as_str());
    for query in ["channel=FAX", "direction=SIDEWAYS", "read=maybe", "since=yesterday", "order=up"] {
        let body = json_of(app.get(&format!("{messages_path}?{query}"), &b.key).await, 422).await;
        assert_eq!(violated_field(&body), query.split('=').next().unwrap(), "{query}");
    }
}

async fn lists_filter_count_and_match_text(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let ana = b.staff_ids[0];
    let mut conversations = Vec::new();
    for (name, phone) in [("Carla Diaz", "+14155550111"), ("Dan Wu", "+14155550112"), ("Eve Stone", "+14155550113")] {
        let client = app.upsert_client(&b, json!({ "name": name, "phone": phone })).await;
        conversations.push((client, app.conversation(&b, client).await));
    }
    let (carla, dan, eve) = (conversations[0], conversations[1], conversations[2]);
    json_of(app.post(&conversation_path(&b, dan.0, dan.1, "/status?status=RESOLVED"), &b.key, None).await, 200).await;
    json_of(
        app.post(&conversation_path(&b, eve.0, eve.1, &format!("/assignment?assigned_to={ana}")), &b.key, None).await,
        200,
    )
    .await;
    app.insert_inbound_message(&b, carla.0, carla.1, "EMAIL", "Question about my invoice").await;

    let list = |query: &str| {
        let path = format!("/omega/businesses/{}/conversations{query}", b.id);
        let key = b.key.clone();
        let app = &app;
        async move { json_of(app.get(&path, &key).await, 200).await }
    };
    let ids = |body: &Value| -> Vec<u64> {
        body["conversations"].as_array().unwrap().iter().map(|c| c["conversation_id"].as_u64().unwrap()).collect()
    };
    let all = list("").await;
    // Newest activity first: Carla wrote last.
    assert_eq!(ids(&all)[0], carla.1);
    assert_eq!(all["total_size"], 3);
    let status_counts = &all["status_counts"];
    assert_eq!(status_counts[0], json!({ "value": "OPEN", "label": "OPEN", "count": 2 }));
    assert_eq!(status_counts[3], json!({ "value": "RESOLVED", "label": "RESOLVED", "count": 1 }));
    let assignees = all["assignee_counts"].as_array().unwrap();
    assert!(assignees.contains(&json!({ "value": "unassigned", "label": "Unassigned", "count": 2 })), "{assignees:?}");
    assert!(assignees.contains(&json!({ "value": ana.to_string(), "label": "Ana", "count": 1 })), "{assignees:?}");
    let summary = &all["conversations"][0];
    assert_eq!(summary["unread_count"], 1);
    assert_eq!(summary["channels"], json!(["EMAIL"]));
    assert_eq!(summary["last_message"]["preview"], "Question about my invoice");
    assert_eq!(summary["client_name"], "Carla Diaz");

    for (query, want) in [
        ("?status=OPEN", vec![carla.1, eve.1]),
        ("?status=resolved,pending", vec![dan.1]),
        ("?status=ACTIVE&assignee=unassigned", vec![carla.1]),
        ("?assignee=assigned", vec![eve.1]),
        (&format!("?assignee={ana}") as &str, vec![eve.1]),
        ("?unread_only=true", vec![carla.1]),
        ("?channel=email", vec![carla.1]),
        ("?channel=SMS", vec![]),
        ("?query=DIAZ", vec![carla.1]),
        ("?query=555-0112", vec![]),
        ("?query=0112", vec![dan.1]),
        // LIKE wildcards in the text are literal.
        ("?query=%25", vec![]),
        ("?query=_", vec![]),
        (&format!("?location_id={}", b.location_ids[0]) as &str, vec![]),
    ] {
        let body = list(query).await;
        let mut got = ids(&body);
        got.sort_unstable();
        let mut want = want.clone();
        want.sort_unstable();
        assert_eq!(got, want, "{query}");
        assert_eq!(body["total_size"], want.len() as u64, "{query}");
    }
    for (query, field) in [
        ("?status=CLOSED", "status"),
        ("?assignee=someone", "assignee"),
        ("?channel=NOTE", "channel"),
        ("?page_size=201", "page_size"),
    ] {
        let body =
            json_of(app.get(&format!("/omega/businesses/{}/conversations{query}", b.id), &b.key).await, 422).await;
        assert_eq!(violated_field(&body), field, "{query}");
    }

    let filters =
        json_of(app.get(&format!("/omega/businesses/{}/conversations/filters", b.id), &b.key).await, 200).await;
    assert_eq!(filters["total"], 3);
    assert_eq!(filters["unread"], 1);
    assert_eq!(filters["channels"], json!([{ "value": "EMAIL", "label": "EMAIL", "count": 1 }]));
    assert_eq!(filters["statuses"][0]["count"], 2);
    assert!(
        filters["assignees"]
            .as_array()
            .unwrap()
            .contains(&json!({ "value": ana.to_string(), "label": "Ana", "count": 1 }))
    );
}

async fn read_status_follows_filters_and_unread_counts_follow(db: Db) {
    let app = spawn_app(db).await;
    let (b, client, conversation) = inbox(&app).await;
    let mut ids = Vec::new();
    for (i, channel) in ["SMS", "SMS", "EMAIL"].into_iter().enumerate() {
        ids.push(app.insert_inbound_message(&b, client, conversation, channel, &format!("message {i}")).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let path = format!("/omega/businesses/{}/messages/read-status", b.id);
    let unread = || async {
        let profile =
            json_of(app.get(&format!("/omega/businesses/{}/clients/{client}", b.id), &b.key).await, 200).await;
        profile["conversation"]["unread_count"].as_u64().unwrap()
    };
    assert_eq!(unread().await, 3);

    let body = json_of(
        app.post(&path, &b.key, Some(json!({ "conversation_id": conversation, "up_to_message_id": ids[0] }))).await,
        200,
    )
    .await;
    assert_eq!(body["updated_count"], 1);
    assert_eq!(body["conversations"], json!([{ "conversation_id": conversation, "unread_count": 2 }]));
    let body =
        json_of(app.post(&path, &b.key, Some(json!({ "client_id": client, "channel": "EMAIL" }))).await, 200).await;
    assert_eq!(body["updated_count"], 1);
    assert_eq!(unread().await, 1);
    let messages = conversation_path(&b, client, conversation, "/messages?read=unread");
    let still_unread = json_of(app.get(&messages, &b.key).await, 200).await;
    assert_eq!(still_unread["messages"][0]["id"], ids[1].as_str());

    let body =
        json_of(app.post(&path, &b.key, Some(json!({ "conversation_id": conversation, "read": false }))).await, 200)
            .await;
    assert_eq!(body["updated_count"], 2);
    assert_eq!(unread().await, 3);
    let body = json_of(app.post(&path, &b.key, Some(json!({ "conversation_id": conversation }))).await, 200).await;
    assert_eq!(body["updated_count"], 3);
    assert_eq!(unread().await, 0);
    let read =
        json_of(app.get(&conversation_path(&b, client, conversation, "/messages?read=read"), &b.key).await, 200).await;
    assert!(read["messages"][0]["read_at"].is_string());

    for (body, field) in [
        (json!({}), "conversation_id"),
        (json!({ "conversation_id": conversation, "channel": "PIGEON" }), "channel"),
        (json!({ "conversation_id": conversation, "up_to_time": "soon" }), "up_to_time"),
        (
            json!({ "conversation_id": conversation, "up_to_message_id": "00000000-0000-0000-0000-000000000000" }),
            "up_to_message_id",
        ),
    ] {
        let resp = json_of(app.post(&path, &b.key, Some(body.clone())).await, 422).await;
        assert_eq!(violated_field(&resp), field, "{body}");
    }
    json_of(app.post(&path, &b.key, Some(json!({ "conversation_id": 999999 }))).await, 404).await;
    let kinds: Vec<String> =
        history_kinds(&app, &b, client, conversation).await.into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(kinds, ["conversation.created", "messages.read", "messages.read", "messages.unread", "messages.read"]);
}

async fn pagination_has_no_gaps_or_duplicates_while_conversations_arrive(db: Db) {
    const EXISTING: usize = 2_000;
    let app = Arc::new(spawn_app(db).await);
    let b = Arc::new(app.onboard_simple("lotus", "+14155550100").await);
    let create = |range: std::ops::Range<usize>| {
        let (app, b) = (app.clone(), b.clone());
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            let chunks: Vec<Vec<usize>> = range.collect::<Vec<_>>().chunks(250).map(<[usize]>::to_vec).collect();
            for chunk in chunks {
                let (app, b) = (app.clone(), b.clone());
                tasks.spawn(async move {
                    let mut ids = Vec::new();
                    for i in chunk {
                        let client = app
                            .upsert_client(
                                &b,
                                json!({ "name": format!("Client {i}"), "external_ref": format!("c{i}") }),
                            )
                            .await;
                        ids.push(app.conversation(&b, client).await);
                    }
                    ids
                });
            }
            tasks.join_all().await.into_iter().flatten().collect::<Vec<u64>>()
        }
    };
    let existing: HashSet<u64> = create(0..EXISTING).await.into_iter().collect();
    assert_eq!(existing.len(), EXISTING);

    // Walk the inbox while new conversations keep arriving at its head.
    let arriving = tokio::spawn(create(EXISTING..EXISTING + 200));
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let path = format!("/omega/businesses/{}/conversations?page_size=97&page_token={token}", b.id);
        let page = json_of(app.get(&path, &b.key).await, 200).await;
        assert!(page["total_size"].as_u64().unwrap() >= EXISTING as u64);
        seen.extend(page["conversations"].as_array().unwrap().iter().map(|c| c["conversation_id"].as_u64().unwrap()));
        pages += 1;
        token = page["next_page_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    let arrived = arriving.await.unwrap();
    let unique: HashSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no conversation twice");
    assert!(existing.is_subset(&unique), "{} existing conversations missing", existing.difference(&unique).count());
    assert!(unique.iter().all(|id| existing.contains(id) || arrived.contains(id)));
    assert!(pages >= EXISTING / 97);
}

async fn another_business_sees_nothing(db: Db) {
    let app = spawn_app(db).await;
    let (a, client, conversation) = inbox(&app).await;
    app.insert_inbound_message(&a, client, conversation, "SMS", "secret").await;
    let b = app.onboard_simple("other", "+14155550101").await;
    let b_client = app.upsert_client(&b, json!({ "name": "Bo", "phone": "+14155550188" })).await;
    let b_conversation = app.conversation(&b, b_client).await;
    let a_conv = |rest: &str| conversation_path(&a, client, conversation, rest);
    // B's key on A's paths, and A's ids under B's own business path.
    let cross_b = |rest: &str| conversation_path(&b, client, conversation, rest);
    let gets = [
        format!("/omega/businesses/{}/conversations", a.id),
        format!("/omega/businesses/{}/conversations/filters", a.id),
        a_conv("/messages"),
        a_conv("/history"),
        cross_b("/messages"),
        cross_b("/history"),
    ];
    for path in gets {
        let body = json_of(app.get(&path, &b.key).await, 404).await;
        assert_eq!(body["code"], 5, "{path}");
        assert!(!body.to_string().contains("secret") && !body.to_string().contains("Carla"), "{path}: {body}");
    }
    let posts = [
        (format!("/omega/businesses/{}/clients/{client}/conversation", a.id), None),
        (format!("/omega/businesses/{}/clients/{client}/conversation", b.id), None),
        (a_conv("/status?status=RESOLVED"), None),
        (cross_b("/status?status=RESOLVED"), None),
        (a_conv(&format!("/assignment?assigned_to={}", b.staff_ids[0])), None),
        (a_conv("/note"), Some(json!({ "content": "x", "sent_by": b.staff_ids[0], "sender_type": "staff" }))),
        (format!("/omega/businesses/{}/messages/read-status", a.id), Some(json!({ "conversation_id": conversation }))),
        (format!("/omega/businesses/{}/messages/read-status", b.id), Some(json!({ "conversation_id": conversation }))),
    ];
    for (path, body) in posts {
        let resp = json_of(app.post(&path, &b.key, body).await, 404).await;
        assert_eq!(resp["code"], 5, "{path}");
    }
    // A's data is untouched, and B's own inbox has only its conversation.
    let profile = json_of(app.get(&format!("/omega/businesses/{}/clients/{client}", a.id), &a.key).await, 200).await;
    assert_eq!(profile["conversation"]["status"], "OPEN");
    assert_eq!(profile["conversation"]["unread_count"], 1);
    let own = json_of(app.get(&format!("/omega/businesses/{}/conversations", b.id), &b.key).await, 200).await;
    assert_eq!(own["total_size"], 1);
    assert_eq!(own["conversations"][0]["conversation_id"], b_conversation);
}

async fn grpc_reports_field_violations(db: Db) {
    let app = spawn_app(db).await;
    let (b, client, conversation) = inbox(&app).await;
    let mut grpc = ConversationServiceClient::new(app.grpc_channel().await);
    let request = UpdateConversationStatusRequest {
        business_id: b.id as u32,
        client_id: client as u32,
        conversation_id: conversation as u32,
        status: "CLOSED".into(),
        ..Default::default()
    };
    let status = grpc.update_conversation_status(with_key(request.clone(), &b.key)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "status");
    let ok = grpc
        .update_conversation_status(with_key(
            UpdateConversationStatusRequest { status: "RESOLVED".into(), ..request },
            &b.key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.status, "RESOLVED");
}

/// 3,050 conversations (written straight into the database): totals of filters the counters
/// cannot answer stop at 1,000 and say so; the client text filter finds one client among them
/// through the trigram index, and many (more than the 2,000 looked up first) through the walk
/// in activity order.
async fn large_inboxes_cap_filtered_totals_and_find_clients_by_index(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let now = chrono::Utc::now();
    let clients = match db {
        Db::Sqlite => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3050) \
             INSERT INTO clients (business_id, name, phone_e164, sms_consent, search_text, created_at, updated_at) \
             SELECT $1, 'Bulk ' || i, '+1999' || printf('%07d', i), 1, 'bulk ' || i || ' +1999' || printf('%07d', i), $2, $2 FROM n"
        }
        Db::Postgres => {
            "INSERT INTO clients (business_id, name, phone_e164, sms_consent, search_text, created_at, updated_at) \
             SELECT $1, 'Bulk ' || i, '+1999' || lpad(i::text, 7, '0'), true, 'bulk ' || i || ' +1999' || lpad(i::text, 7, '0'), $2, $2 \
             FROM generate_series(1, 3050) AS i"
        }
    };
    app.sql(clients, vec![(b.id as i64).into(), now.into()]).await;
    app.sql(
        "INSERT INTO conversations (business_id, client_id, status, unread_count, channel_mask, last_activity_at, created_at, updated_at) \
         SELECT business_id, id, 'OPEN', 1, 1, created_at, created_at, created_at FROM clients WHERE business_id = $1",
        vec![(b.id as i64).into()],
    )
    .await;
    let list = |query: &str| {
        let path = format!("/omega/businesses/{}/conversations{query}", b.id);
        let key = b.key.clone();
        let app = &app;
        async move { json_of(app.get(&path, &key).await, 200).await }
    };

    let unread = list("?unread_only=true&page_size=50").await;
    assert_eq!(unread["total_size"], 1_000);
    assert_eq!(unread["total_size_capped"], true);
    assert_eq!(unread["conversations"].as_array().unwrap().len(), 50);
    assert!(!unread["next_page_token"].as_str().unwrap().is_empty());

    // One client among 3,050, by a fragment of its phone number.
    let one = list("?query=9990002321").await;
    assert_eq!(one["total_size"], 1);
    assert_eq!(one["total_size_capped"], false);
    assert_eq!(one["conversations"][0]["client_name"], "Bulk 2321");
    // Many: a full page, the total capped.
    let many = list("?query=BULK&page_size=20").await;
    assert_eq!(many["conversations"].as_array().unwrap().len(), 20);
    assert_eq!(many["total_size"], 1_000);
    assert_eq!(many["total_size_capped"], true);
    // None, and a fragment shorter than a trigram.
    let none = list("?query=nobody-here").await;
    assert_eq!(none["total_size"], 0);
    assert!(none["conversations"].as_array().is_none_or(|c| c.is_empty()));
    let short = list("?query=43").await;
    assert!(short["total_size"].as_u64().unwrap() > 0);
    // Status totals still come from the counters, exact and never capped.
    let open = list("?status=OPEN").await;
    assert_eq!(open["total_size_capped"], false);
}
