//! Search across a business (`GET /omega/businesses/{b}/messages/search`): every conversation of
//! the business and never another's, its filters, both orders with keyset pages, highlights,
//! and hostile queries.

use crate::common;

use std::collections::HashSet;

use crate::common::{json_of, violated_field};
use common::{Db, TestApp, TestBusiness, spawn_app, with_key};
use omega::proto::omega::v1::{SearchBusinessMessagesRequest, message_service_client::MessageServiceClient};
use serde_json::{Value, json};

both_databases!(
    business_search_spans_its_conversations_and_no_other_business,
    business_search_filters_each_narrow,
    business_search_pages_newest_first_without_gaps_or_repeats,
    business_search_ranks_best_first_and_pages_the_same_set,
    business_search_ranks_the_newest_messages_when_they_hold_enough,
    business_search_refuses_bad_filters_and_survives_hostile_queries,
    highlights_escape_the_message_text_around_their_marks,
);

/// Records a message (nothing is sent) of the client with this phone; answers (message id,
/// conversation id, client id).
async fn record(
    app: &TestApp,
    b: &TestBusiness,
    phone: &str,
    (channel, direction): (&str, &str),
    content: &str,
    occurred_at: &str,
) -> (String, u64, u64) {
    let mut body = json!({ "business_id": b.id, "channel": channel, "direction": direction,
                           "client": { "phone": phone, "email": format!("{}@clients.example", &phone[1..]), "name": "Client" },
                           "content": content, "occurred_at": occurred_at });
    if channel == "EMAIL" {
        body["subject"] = "Your visit".into();
    }
    let stored = json_of(app.post("/omega/messages", &b.key, Some(body)).await, 200).await;
    (
        stored["message_id"].as_str().unwrap().to_owned(),
        stored["conversation_id"].as_u64().unwrap(),
        stored["client_id"].as_u64().unwrap(),
    )
}

async fn search(app: &TestApp, b: &TestBusiness, query: &str) -> reqwest::Response {
    app.get(&format!("/omega/businesses/{}/messages/search?{query}", b.id), &b.key).await
}

fn hit_ids(page: &Value) -> Vec<String> {
    page["hits"].as_array().unwrap().iter().map(|h| h["message_id"].as_str().unwrap().to_owned()).collect()
}

/// Every page of a search, following `next_page_token`; `between` runs after the first page.
async fn all_pages<F, Fut>(app: &TestApp, b: &TestBusiness, query: &str, mut between: F) -> Vec<Vec<String>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = json_of(search(app, b, &format!("{query}&page_token={token}")).await, 200).await;
        pages.push(hit_ids(&page));
        token = page["next_page_token"].as_str().unwrap().to_owned();
        if pages.len() == 1 {
            between().await;
        }
        if token.is_empty() {
            return pages;
        }
        assert!(pages.len() < 100, "pages never end");
    }
}

const T0: &str = "2026-03-01T10:00:00Z";

async fn business_search_spans_its_conversations_and_no_other_business(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let other = app.onboard_simple("other", "+14155550101").await;
    let (first, c1, client1) =
        record(&app, &b, "+14155550111", ("SMS", "INBOUND"), "Is my invoice for March ready?", T0).await;
    let (second, c2, _) =
        record(&app, &b, "+14155550112", ("EMAIL", "OUTBOUND"), "Your invoice is attached.", T0).await;
    let (third, c3, _) = record(&app, &b, "+14155550113", ("CHAT", "INBOUND"), "invoice, please!", T0).await;
    record(&app, &b, "+14155550113", ("SMS", "INBOUND"), "See you tomorrow", T0).await;
    // Another business's matching message, and an internal note of this one: neither is found.
    let (foreign, _, _) =
        record(&app, &other, "+14155550111", ("SMS", "INBOUND"), "My invoice from the other studio", T0).await;
    let note = json!({ "content": "invoice sent by post", "sent_by": b.staff_ids[0], "sender_type": "staff" });
    let path = format!("/omega/businesses/{}/clients/{client1}/conversations/{c1}/note", b.id);
    json_of(app.post(&path, &b.key, Some(note)).await, 200).await;

    let found = json_of(search(&app, &b, "q=invoice").await, 200).await;
    assert_eq!(hit_ids(&found), [third.clone(), second.clone(), first.clone()], "newest first, no note: {found}");
    let conversations: HashSet<u64> =
        found["hits"].as_array().unwrap().iter().map(|h| h["conversation_id"].as_u64().unwrap()).collect();
    assert_eq!(conversations, HashSet::from([c1, c2, c3]));
    let last = &found["hits"][2];
    assert_eq!(last["client_id"], client1);
    assert_eq!(last["channel"], "SMS");
    assert_eq!(last["direction"], "INBOUND");
    assert_eq!(last["created_at"], "2026-03-01T10:00:00Z");
    assert!(last["highlight"].as_str().unwrap().contains("<mark>invoice</mark> for March"), "{found}");
    assert!(found["hits"][1]["highlight"].as_str().unwrap().contains("<mark>invoice</mark>"), "{found}");
    assert_eq!(found["next_page_token"], "");
    assert!(!found.to_string().contains(&foreign));
    // Whole words: a prefix is not a match; every word is required.
    assert!(hit_ids(&json_of(search(&app, &b, "q=invoic").await, 200).await).is_empty());
    assert_eq!(hit_ids(&json_of(search(&app, &b, "q=invoice%20march").await, 200).await), std::slice::from_ref(&first));
    // The index's scope tokens are not words of the text.
    for scope in [format!("b{}", other.id), format!("c{c1}"), format!("b{}", b.id)] {
        assert!(hit_ids(&json_of(search(&app, &b, &format!("q={scope}")).await, 200).await).is_empty(), "{scope}");
    }
    // The other business finds only its own message.
    assert_eq!(hit_ids(&json_of(search(&app, &other, "q=invoice").await, 200).await), [foreign]);
    // Another business's key: 404, as for its other data; no key: 401.
    let path = format!("/omega/businesses/{}/messages/search?q=invoice", b.id);
    json_of(app.get(&path, &other.key).await, 404).await;
    json_of(app.get(&path, "omk_nope").await, 401).await;
    // The same over gRPC.
    let mut grpc = MessageServiceClient::new(app.grpc_channel().await);
    let request = SearchBusinessMessagesRequest { business_id: b.id as u32, q: "invoice".into(), ..Default::default() };
    let answer = grpc.search_business_messages(with_key(request.clone(), &b.key)).await.unwrap().into_inner();
    assert_eq!(answer.hits.iter().map(|h| h.message_id.clone()).collect::<Vec<_>>(), [third, second, first]);
    let refused = grpc.search_business_messages(with_key(request, &other.key)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
}

async fn business_search_filters_each_narrow(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let (sms_in, c1, client1) =
        record(&app, &b, "+14155550111", ("SMS", "INBOUND"), "massage on friday", "2026-03-01T10:00:00Z").await;
    let (email_out, _, _) =
        record(&app, &b, "+14155550112", ("EMAIL", "OUTBOUND"), "massage booked", "2026-03-02T10:00:00Z").await;
    let (chat_in, _, _) =
        record(&app, &b, "+14155550113", ("CHAT", "INBOUND"), "a massage please", "2026-03-03T10:00:00Z").await;
    let (voice_out, _, _) =
        record(&app, &b, "+14155550114", ("VOICE", "OUTBOUND"), "called about the massage", "2026-03-04T10:00:00Z")
            .await;
    let all = hit_ids(&json_of(search(&app, &b, "q=massage").await, 200).await);
    assert_eq!(all, [voice_out.clone(), chat_in.clone(), email_out.clone(), sms_in.clone()]);
    let ids = |query: &'static str| {
        let (app, b) = (&app, &b);
        async move { hit_ids(&json_of(search(app, b, &format!("q=massage&{query}")).await, 200).await) }
    };
    assert_eq!(ids("channel=EMAIL").await, std::slice::from_ref(&email_out));
    assert_eq!(ids("channel=voice").await, std::slice::from_ref(&voice_out));
    assert_eq!(ids("direction=INBOUND").await, [chat_in.clone(), sms_in.clone()]);
    assert_eq!(ids("direction=OUTBOUND&channel=SMS").await, Vec::<String>::new());
    assert_eq!(ids("since=2026-03-02T10:00:00Z").await, [voice_out.clone(), chat_in.clone(), email_out.clone()]);
    assert_eq!(ids("until=2026-03-02T10:00:00Z").await, std::slice::from_ref(&sms_in));
    assert_eq!(ids("since=2026-03-02T00:00:00Z&until=2026-03-04T00:00:00Z").await, [chat_in.clone(), email_out]);
    // The conversation's assignee, and unassigned ones.
    let staff = b.staff_ids[0];
    let path =
        format!("/omega/businesses/{}/clients/{client1}/conversations/{c1}/assignment?assigned_to={staff}", b.id);
    json_of(app.post(&path, &b.key, None).await, 200).await;
    let assigned =
        hit_ids(&json_of(search(&app, &b, &format!("q=massage&assignee_staff_id={staff}")).await, 200).await);
    assert_eq!(assigned, [sms_in]);
    let other_staff = b.staff_ids[1];
    let none = search(&app, &b, &format!("q=massage&assignee_staff_id={other_staff}")).await;
    assert!(hit_ids(&json_of(none, 200).await).is_empty());
    assert_eq!(ids("unassigned=true").await, [voice_out, chat_in.clone(), all[2].clone()]);
    assert_eq!(ids("unassigned=true&channel=CHAT&direction=INBOUND").await, [chat_in]);
}

/// NEWEST pages: every match once, newest first, whatever is stored between pages. One message
/// sits far above the rest in id order, so SQLite's windows must widen to reach the others.
async fn business_search_pages_newest_first_without_gaps_or_repeats(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let mut stored = Vec::new();
    for i in 0..23 {
        let phone = format!("+141555502{:02}", i % 5);
        let (id, _, _) = record(&app, &b, &phone, ("SMS", "INBOUND"), &format!("yoga class {i}"), T0).await;
        stored.push(id);
        record(&app, &b, &phone, ("SMS", "OUTBOUND"), "see you then", T0).await;
    }
    // A message with a much higher id than the others (as after years of traffic).
    let (_, conversation, client) = record(&app, &b, "+14155550200", ("SMS", "INBOUND"), "hello", T0).await;
    let far = uuid::Uuid::now_v7().to_string();
    app.sql(
        "INSERT INTO messages (id, public_id, business_id, conversation_id, client_id, channel, direction, sender_type, \
         content, status, attempt_count, created_at) VALUES (90000, $1, $2, $3, $4, 'SMS', 'INBOUND', 'client', \
         'yoga class far', 'RECEIVED', 0, $5)",
        vec![
            far.clone().into(),
            (b.id as i64).into(),
            (conversation as i64).into(),
            (client as i64).into(),
            chrono::Utc::now().into(),
        ],
    )
    .await;
    stored.push(far);
    let expected: Vec<String> = stored.iter().rev().cloned().collect();
    let pages = all_pages(&app, &b, "q=yoga&page_size=7", || async {}).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [7, 7, 7, 3]);
    assert_eq!(pages.concat(), expected, "every match once, newest first");
    // A match stored after the first page is not in the later ones, and nothing moves.
    let pages = all_pages(&app, &b, "q=yoga&page_size=5", || async {
        record(&app, &b, "+14155550299", ("SMS", "INBOUND"), "yoga class new", T0).await;
    })
    .await;
    assert_eq!(pages.concat(), expected);
    let now = hit_ids(&json_of(search(&app, &b, "q=yoga&page_size=50").await, 200).await);
    assert_eq!(now.len(), expected.len() + 1, "the new match is found by a new search");
    assert!(expected.iter().all(|id| now.contains(id)));
    let first = json_of(search(&app, &b, "q=yoga&page_size=5").await, 200).await;
    // The default page is 20.
    let default = json_of(search(&app, &b, "q=yoga").await, 200).await;
    assert_eq!(default["hits"].as_array().unwrap().len(), 20);
    // A token is tied to its order.
    let token = first["next_page_token"].as_str().unwrap();
    let body = json_of(search(&app, &b, &format!("q=yoga&order=RELEVANCE&page_token={token}")).await, 422).await;
    assert_eq!(violated_field(&body), "page_token");
}

async fn business_search_ranks_best_first_and_pages_the_same_set(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let mut stored = Vec::new();
    let (best, _, _) = record(&app, &b, "+14155550111", ("SMS", "INBOUND"), "refund refund refund", T0).await;
    for i in 0..12 {
        let text = format!("I would like to ask whether a refund is possible for the class on day {i} of the month");
        stored.push(record(&app, &b, &format!("+141555502{:02}", i % 4), ("SMS", "INBOUND"), &text, T0).await.0);
    }
    stored.push(best.clone());
    let first = json_of(search(&app, &b, "q=refund&order=relevance&page_size=5").await, 200).await;
    assert_eq!(hit_ids(&first)[0], best, "most occurrences in the shortest text first: {first}");
    let ranks: Vec<f64> = first["hits"].as_array().unwrap().iter().map(|h| h["rank"].as_f64().unwrap()).collect();
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]) && ranks[0] > ranks[1], "{ranks:?}");
    assert_eq!(first["hits"][0]["highlight"].as_str().unwrap().matches("<mark>refund</mark>").count(), 3, "{first}");
    let pages = all_pages(&app, &b, "q=refund&order=RELEVANCE&page_size=5", || async {
        record(&app, &b, "+14155550299", ("SMS", "INBOUND"), "refund refund refund refund", T0).await;
    })
    .await;
    let seen = pages.concat();
    assert_eq!(seen.len(), 13, "{pages:?}");
    assert_eq!(seen.iter().collect::<HashSet<_>>(), stored.iter().collect::<HashSet<_>>(), "the same set, once each");
    // Ties (the same text length and count) come newest first.
    assert_eq!(seen[1..], stored[..12].iter().rev().cloned().collect::<Vec<_>>());
}

/// Ranked, a business of more than 20,000 messages: the candidates are the matches among its
/// newest 20,000 when those hold 20 or more, so better matches further back are not ranked;
/// NEWEST still lists every match.
async fn business_search_ranks_the_newest_messages_when_they_hold_enough(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let mut old = Vec::new();
    for i in 0..5 {
        old.push(record(&app, &b, &format!("+1415555021{i}"), ("SMS", "INBOUND"), "refund refund refund", T0).await);
    }
    let (_, conversation, client) = old[0].clone();
    let insert_filler = |batch: u32, count: u32| {
        let (app, b) = (&app, &b);
        let sql = match db {
            Db::Postgres => format!(
                "INSERT INTO messages (public_id, business_id, conversation_id, client_id, channel, direction, \
                 sender_type, content, status, attempt_count, created_at) SELECT 'filler-{batch}-' || i, $1, $2, $3, 'SMS', \
                 'INBOUND', 'client', 'nothing to see here', 'RECEIVED', 0, $4 FROM generate_series(1, {count}) AS i"
            ),
            Db::Sqlite => format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
                 INSERT INTO messages (public_id, business_id, conversation_id, client_id, channel, direction, \
                 sender_type, content, status, attempt_count, created_at) SELECT 'filler-{batch}-' || i, $1, $2, $3, 'SMS', \
                 'INBOUND', 'client', 'nothing to see here', 'RECEIVED', 0, $4 FROM n"
            ),
        };
        async move {
            let values = vec![
                (b.id as i64).into(),
                (conversation as i64).into(),
                (client as i64).into(),
                chrono::Utc::now().into(),
            ];
            app.sql(&sql, values).await;
        }
    };
    insert_filler(1, 20_000).await;
    let long = "could I please ask whether a refund is possible for the class I missed last week";
    let mut recent = Vec::new();
    for i in 0..20 {
        recent.push(record(&app, &b, &format!("+141555022{:02}", i % 7), ("SMS", "INBOUND"), long, T0).await.0);
    }
    let pages = all_pages(&app, &b, "q=refund&order=RELEVANCE&page_size=8", || async {}).await;
    let ranked = pages.concat();
    assert_eq!(ranked.iter().collect::<HashSet<_>>(), recent.iter().collect::<HashSet<_>>(), "the newest 20,000 only");
    let newest = all_pages(&app, &b, "q=refund&page_size=50", || async {}).await.concat();
    assert_eq!(newest.len(), 25, "NEWEST lists every match");
    // Fewer than 20 matches among the newest 20,000: every match is ranked, the best first.
    insert_filler(2, 20_000).await;
    let first = json_of(search(&app, &b, "q=refund&order=RELEVANCE&page_size=50").await, 200).await;
    assert_eq!(first["hits"].as_array().unwrap().len(), 25, "{first}");
    let best: HashSet<String> = old.iter().map(|(id, _, _)| id.clone()).collect();
    assert!(best.contains(first["hits"][0]["message_id"].as_str().unwrap()), "{first}");
}

async fn business_search_refuses_bad_filters_and_survives_hostile_queries(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let (id, _, _) =
        record(&app, &b, "+14155550111", ("SMS", "INBOUND"), "Don't \"quote\" me: it's 50% off*", T0).await;
    for (query, field) in [
        ("q=", "q"),
        ("q=%20%22*%22", "q"),
        ("channel=SMS", "q"),
        ("q=off&channel=FAX", "channel"),
        ("q=off&channel=NOTE", "channel"),
        ("q=off&direction=SIDEWAYS", "direction"),
        ("q=off&direction=INTERNAL", "direction"),
        ("q=off&since=yesterday", "since"),
        ("q=off&until=2026-13-01T00:00:00Z", "until"),
        ("q=off&since=2026-03-02T00:00:00Z&until=2026-03-01T00:00:00Z", "until"),
        ("q=off&order=BEST", "order"),
        ("q=off&page_size=201", "page_size"),
        ("q=off&page_token=garbage", "page_token"),
        ("q=off&assignee_staff_id=0", "assignee_staff_id"),
        ("q=off&assignee_staff_id=1&unassigned=true", "unassigned"),
    ] {
        let body = json_of(search(&app, &b, query).await, 422).await;
        assert_eq!(violated_field(&body), field, "{query}: {body}");
    }
    let long = "off ".repeat(2_500);
    let body = json_of(search(&app, &b, &format!("q={long}")).await, 422).await;
    assert_eq!(violated_field(&body), "q");
    // Query syntax of FTS5 and tsquery is only text; NUL is refused at the edge.
    for q in [
        "%22off%22%20OR%20*",
        "NEAR(off%20me)",
        "conversation%3Ab1",
        "off%20%26%20!me%20%7C%20x%3A*",
        "%27",
        "%5C",
        "%22",
        "off%00",
        "%F0%9F%98%80%20off",
        "off%20AND%20NOT%20me",
        "-off",
        "%5E%24%25",
    ] {
        for order in ["NEWEST", "RELEVANCE"] {
            let resp = search(&app, &b, &format!("q={q}&order={order}")).await;
            let status = resp.status().as_u16();
            assert!(status == 200 || status == 422, "q={q}: {status} {}", resp.text().await.unwrap());
        }
    }
    let found = json_of(search(&app, &b, "q=%22quote%22%20*%20(").await, 200).await;
    assert_eq!(hit_ids(&found), std::slice::from_ref(&id));
    assert_eq!(hit_ids(&json_of(search(&app, &b, "q=it%27s%2050%25").await, 200).await), [id]);
}

/// A highlight is HTML: markup in a message is escaped, in both searches (business and
/// conversation), in both orders, and only the match is wrapped in `<mark>`.
async fn highlights_escape_the_message_text_around_their_marks(db: Db) {
    let app = spawn_app(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let text = r#"<img src=x onerror="alert('invoice')"> Invoice & <b>refund</b>"#;
    let (id, conversation, client) = record(&app, &b, "+14155550111", ("SMS", "INBOUND"), text, T0).await;
    let escaped = "&lt;img src=x onerror=&quot;alert(&#x27;<mark>invoice</mark>&#x27;)&quot;&gt; \
                   <mark>Invoice</mark> &amp; &lt;b&gt;refund&lt;&#x2F;b&gt;";
    for order in ["", "&order=RELEVANCE"] {
        let found = json_of(search(&app, &b, &format!("q=invoice{order}")).await, 200).await;
        assert_eq!(hit_ids(&found), std::slice::from_ref(&id));
        assert_eq!(found["hits"][0]["highlight"], escaped, "{found}");
    }
    let path =
        format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/messages/search?q=invoice", b.id);
    let found = json_of(app.get(&path, &b.key).await, 200).await;
    assert_eq!(found["hits"][0]["highlight"], escaped, "{found}");
    assert_eq!(found["hits"][0]["message"]["content"], text, "the message itself is returned as written");
}
