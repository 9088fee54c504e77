//! The phases (P8, live events, is in `live.rs`). Each measures a figure and, in the same run, the baseline it is judged by.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use omega::proto::omega::v1::{
    ClientRef, GetHealthRequest, ListConversationsRequest, ProcessMessageRequest, QueueSmsRequest,
    SearchBusinessMessagesRequest, SearchConversationMessagesRequest, SetTwilioCredentialsRequest,
    conversation_service_client::ConversationServiceClient, health_service_client::HealthServiceClient,
    message_service_client::MessageServiceClient, provider_service_client::ProviderServiceClient,
    sms_service_client::SmsServiceClient,
};
use prost::Message as _;
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
use tonic::transport::Channel;

use crate::{
    Settings,
    dataset::{self, Business, Dataset, Scale},
    harness::{
        ACCOUNT_SID, Backend, BenchDb, KEY, Omega, grpc_channel, http_client, keyed, rss, start_envoy, start_envoy_for,
        start_fake_twilio, start_omega,
    },
    report::Report,
    stats::{Samples, time_calls},
};

const MB: f64 = 1024.0 * 1024.0;

pub async fn run_all(
    db: &BenchDb,
    dir: &Path,
    scale: Scale,
    settings: &Settings,
    only: &[String],
    reuse: Option<Dataset>,
    report: &mut Report,
) -> anyhow::Result<Dataset> {
    let wants = |p: &str| only.iter().any(|o| o.eq_ignore_ascii_case(p));
    let backend = db.backend;
    let (twilio, sent) = start_fake_twilio().await?;
    let twilio_env = ("OMEGA_TWILIO_BASE_URL", format!("http://{twilio}"));

    let omega = start_omega(dir, &db.url, std::slice::from_ref(&twilio_env)).await?;
    let channel = grpc_channel(omega.addr).await?;
    let (rss_idle_first, _) = rss(omega.process.pid())?;
    let data = match reuse {
        Some(data) => data,
        None => {
            eprintln!("  generating the dataset…");
            dataset::generate(db, channel.clone(), scale).await?
        }
    };
    report.note(format!(
        "{}: dataset generated in {:.0} s; the busiest conversation has {} messages",
        backend.name(),
        data.generated_in.as_secs_f64(),
        data.large.busiest.2
    ));
    // Serve the rest from a process started on the full dataset.
    drop(omega);
    let omega = start_omega(dir, &db.url, std::slice::from_ref(&twilio_env)).await?;
    let channel = grpc_channel(omega.addr).await?;
    let (envoy, envoy_addr) = start_envoy(dir, omega.addr).await?;

    if wants("p1") {
        ingest(db, &channel, envoy_addr, &data, settings, report).await?;
    }
    if wants("p2") {
        inbox(backend, &channel, &data, settings, report).await?;
    }
    if wants("p3") {
        search(backend, &channel, &data, settings, report).await?;
    }
    if wants("p5") {
        transports(backend, &channel, omega.addr, envoy_addr, &data, settings, report).await?;
    }
    let (_, loaded_peak) = rss(omega.process.pid())?;
    if wants("p7") {
        replicas(db, dir, &twilio_env, omega.addr, envoy_addr, &data, settings, report).await?;
    }
    if wants("p8") {
        crate::live::live_events(db, dir, (omega.addr, omega.process.pid()), &data, settings, report).await?;
    }
    drop(envoy);
    drop(omega);
    if wants("p4") {
        dispatch(db, dir, twilio, &sent, &data, settings, report).await?;
    }
    if wants("p6") {
        footprint(db, dir, rss_idle_first, loaded_peak, report).await?;
    }
    if wants("p9") {
        crate::webhooks::delivery_rate(db, dir, &data, settings, report).await?;
    }
    Ok(data)
}

// ---- P1 ingest ----

/// Inbound SMS stored per second through gRPC and REST, against inserting the same rows (the
/// message, its conversation's update, its event) straight into the database, one transaction
/// per message, at the same concurrency.
async fn ingest(
    db: &BenchDb,
    channel: &Channel,
    envoy: SocketAddr,
    data: &Dataset,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = settings.messages;
    let concurrency = 16;
    let business = &data.small;
    // Provider ids unique to this run: a rerun on a kept dataset must store, not deduplicate.
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let clients = business.conversations;
    let phone = move |i: usize| format!("+1{}", 2_000_000_000 + (i as u64 * 7919) % clients);
    let raw = raw_ingest(db, business, n, concurrency, &run).await?;
    let grpc = run_concurrently(n, concurrency, {
        let channel = channel.clone();
        let business_id = business.id;
        let run = run.clone();
        move |i| {
            let mut client = MessageServiceClient::new(channel.clone());
            let run = run.clone();
            let phone = phone(i);
            async move {
                client
                    .process_message(keyed(ProcessMessageRequest {
                        business_id,
                        channel: "SMS".into(),
                        direction: "INBOUND".into(),
                        client: Some(ClientRef { phone, ..Default::default() }),
                        content: format!("Can I move my massage to {} pm tomorrow?", 1 + i % 9),
                        provider: "twilio".into(),
                        provider_message_id: format!("SMgrpc{run}{i:020}"),
                        ..Default::default()
                    }))
                    .await?;
                Ok(())
            }
        }
    })
    .await?;
    let rest = rest_ingest(envoy, business, n, concurrency, &format!("rest{run}")).await?;
    let backend = db.backend;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let baseline = ("raw insert: message + conversation update + event", rate(raw));
    for (figure, elapsed) in [("ingest inbound SMS via gRPC", grpc), ("ingest inbound SMS via REST (Envoy)", rest)] {
        let value = rate(elapsed);
        let met = value / baseline.1 >= 0.5;
        report.add("P1", backend, figure, (value, "msg/s"), baseline, "≥ 0.5 × raw", Some(met));
    }
    Ok(())
}

/// `n` inbound SMS through Envoy's REST edge, `concurrency` at a time; answers the elapsed time.
/// `run` makes the provider ids unique to the run.
async fn rest_ingest(
    envoy: SocketAddr,
    business: &Business,
    n: usize,
    concurrency: usize,
    run: &str,
) -> anyhow::Result<Duration> {
    let http = http_client();
    let clients = business.conversations;
    let phone = move |i: usize| format!("+1{}", 2_000_000_000 + (i as u64 * 7919) % clients);
    let (business_id, run) = (business.id, run.to_owned());
    run_concurrently(n, concurrency, move |i| {
        let http = http.clone();
        let run = run.clone();
        let phone = phone(i);
        async move {
            let resp = http
                .post(format!("http://{envoy}/omega/messages"))
                .header("x-api-key", KEY)
                .json(&serde_json::json!({
                    "business_id": business_id,
                    "channel": "SMS",
                    "direction": "INBOUND",
                    "client": { "phone": phone },
                    "content": format!("Is there parking near the studio at {} pm?", 1 + i % 9),
                    "provider": "twilio",
                    "provider_message_id": format!("SM{run}{i:020}"),
                }))
                .send()
                .await?;
            anyhow::ensure!(resp.status().is_success(), "REST ingest answered {}", resp.status());
            Ok(())
        }
    })
    .await
}

/// Runs `call(i)` for i in 0..n, `concurrency` at a time; answers the elapsed time.
async fn run_concurrently<F, Fut>(n: usize, concurrency: usize, call: F) -> anyhow::Result<Duration>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (call, next) = (call.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return anyhow::Ok(());
                }
                call(i).await?;
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(started.elapsed())
}

async fn raw_ingest(
    db: &BenchDb,
    business: &Business,
    n: usize,
    concurrency: usize,
    run: &str,
) -> anyhow::Result<Duration> {
    let run = run.to_owned();
    let conn = db.connect().await?;
    let backend = conn.get_database_backend();
    let p = |i: usize| if backend == DbBackend::Postgres { format!("${i}") } else { format!("?{i}") };
    let message_sql = format!(
        "INSERT INTO messages (public_id, business_id, conversation_id, client_id, channel, direction, sender_type, \
         content, status, attempt_count, created_at, request_id, provider, provider_message_id, from_address) \
         VALUES ({}, {}, {}, {}, 'SMS', 'INBOUND', 'client', {}, 'RECEIVED', 0, {}, {}, 'twilio', {}, '+12000000000')",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6),
        p(7),
        p(8)
    );
    let conversation_sql = format!(
        "UPDATE conversations SET last_message_at = {}, last_message_preview = {}, last_message_channel = 'SMS', \
         last_message_direction = 'INBOUND', last_activity_at = {}, unread_count = unread_count + 1, \
         channel_mask = channel_mask | 1, updated_at = {} WHERE id = {}",
        p(1),
        p(2),
        p(1),
        p(1),
        p(3)
    );
    let event_sql = format!(
        "INSERT INTO conversation_events (business_id, conversation_id, kind, data, created_at) VALUES ({}, {}, 'message.received', {}, {})",
        p(1),
        p(2),
        p(3),
        p(4)
    );
    let sample = business.sample.clone();
    let business_id = i64::from(business.id);
    let conn = Arc::new(conn);
    let elapsed = run_concurrently(n, concurrency, move |i| {
        let conn = conn.clone();
        let (message_sql, conversation_sql, event_sql) =
            (message_sql.clone(), conversation_sql.clone(), event_sql.clone());
        let (conversation, client) = sample[i % sample.len()];
        let run = run.clone();
        async move {
            let now = chrono::Utc::now();
            let content = format!("Can I move my massage to {} pm tomorrow?", 1 + i % 9);
            let public_id = uuid::Uuid::now_v7().to_string();
            let txn = conn.begin().await?;
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                &message_sql,
                [
                    public_id.clone().into(),
                    business_id.into(),
                    i64::from(conversation).into(),
                    i64::from(client).into(),
                    content.clone().into(),
                    now.into(),
                    uuid::Uuid::new_v4().to_string().into(),
                    format!("SMraw{run}{i:020}").into(),
                ],
            ))
            .await?;
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                &conversation_sql,
                [now.into(), content.into(), i64::from(conversation).into()],
            ))
            .await?;
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                &event_sql,
                [
                    business_id.into(),
                    i64::from(conversation).into(),
                    serde_json::json!({ "message_id": public_id, "channel": "SMS" }).to_string().into(),
                    now.into(),
                ],
            ))
            .await?;
            txn.commit().await?;
            Ok(())
        }
    })
    .await?;
    Ok(elapsed)
}

// ---- P7 two replicas ----

/// A second replica on the same database and an Envoy in front of both: REST ingest and the
/// inbox's first page through it, beside the same through the one-replica Envoy, same run.
#[allow(clippy::too_many_arguments)]
async fn replicas(
    db: &BenchDb,
    dir: &Path,
    twilio_env: &(&str, String),
    first: SocketAddr,
    one_envoy: SocketAddr,
    data: &Dataset,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<()> {
    let second = start_omega(dir, &db.url, std::slice::from_ref(twilio_env)).await?;
    let (envoy, two_envoy) = start_envoy_for(dir, &[first, second.addr]).await?;
    let backend = db.backend;
    let (n, concurrency) = (settings.messages, 16);
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let one = rest_ingest(one_envoy, &data.small, n, concurrency, &format!("one{run}")).await?;
    let two = rest_ingest(two_envoy, &data.small, n, concurrency, &format!("two{run}")).await?;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    report.add(
        "P7",
        backend,
        "ingest inbound SMS via REST, two replicas behind Envoy",
        (rate(two), "msg/s"),
        ("one replica behind Envoy", rate(one)),
        "",
        None,
    );
    // The inbox's first page of the large business, through each Envoy alternately.
    let request = ListConversationsRequest { business_id: data.large.id, page_size: 25, ..Default::default() };
    let mut via_one = ConversationServiceClient::new(grpc_channel(one_envoy).await?);
    let mut via_two = ConversationServiceClient::new(grpc_channel(two_envoy).await?);
    let (mut one, mut two) = (Samples::default(), Samples::default());
    for i in 0..settings.samples + 3 {
        for (client, samples) in [(&mut via_one, &mut one), (&mut via_two, &mut two)] {
            let started = Instant::now();
            client.list_conversations(keyed(request.clone())).await?;
            if i >= 3 {
                samples.push(started.elapsed());
            }
        }
    }
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        report.add(
            "P7",
            backend,
            format!("inbox first page at {} conversations, two replicas: {name}", data.large.conversations),
            (two.quantile(q), "ms"),
            (format!("one replica {name}"), one.quantile(q)),
            "",
            None,
        );
    }
    drop(envoy);
    second.stop().await
}

// ---- P2 inbox ----

/// One list-conversations case: its name and the request (page token filled in for deep pages).
fn inbox_cases(b: &Business) -> Vec<(&'static str, ListConversationsRequest)> {
    let base = ListConversationsRequest { business_id: b.id, page_size: 25, ..Default::default() };
    vec![
        ("first page, no filter", base.clone()),
        ("status OPEN", ListConversationsRequest { status: "OPEN".into(), ..base.clone() }),
        (
            "assignee = one staff member",
            ListConversationsRequest { assignee: b.staff_ids[1].to_string(), ..base.clone() },
        ),
        ("unread only", ListConversationsRequest { unread_only: true, ..base.clone() }),
        ("channel EMAIL", ListConversationsRequest { channel: "EMAIL".into(), ..base.clone() }),
        (
            "status RESOLVED + channel CHAT",
            ListConversationsRequest { status: "RESOLVED".into(), channel: "CHAT".into(), ..base.clone() },
        ),
        ("deep page, no filter", base.clone()),
        ("deep page, status RESOLVED", ListConversationsRequest { status: "RESOLVED".into(), ..base }),
    ]
}

/// The request for the page `depth` pages in (following next_page_token).
async fn page_request(
    client: &mut ConversationServiceClient<Channel>,
    mut request: ListConversationsRequest,
    depth: usize,
) -> anyhow::Result<ListConversationsRequest> {
    for _ in 0..depth {
        let page = client.list_conversations(keyed(request.clone())).await?.into_inner();
        anyhow::ensure!(
            !page.next_page_token.is_empty(),
            "fewer pages than {depth} for {request:?} ({} rows, total {})",
            page.conversations.len(),
            page.total_size
        );
        request.page_token = page.next_page_token;
    }
    Ok(request)
}

/// Times two requests alternately, so that whatever else the machine does falls on both alike.
async fn paired_latency(
    channel: &Channel,
    (a, b): (ListConversationsRequest, ListConversationsRequest),
    samples: usize,
) -> anyhow::Result<(Samples, Samples)> {
    let mut client = ConversationServiceClient::new(channel.clone());
    let (mut sa, mut sb) = (Samples::default(), Samples::default());
    for i in 0..samples + 3 {
        for (request, samples) in [(&a, &mut sa), (&b, &mut sb)] {
            let started = Instant::now();
            client.list_conversations(keyed(request.clone())).await?;
            if i >= 3 {
                samples.push(started.elapsed());
            }
        }
    }
    Ok((sa, sb))
}

async fn inbox(
    backend: Backend,
    channel: &Channel,
    data: &Dataset,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (small_cases, large_cases) = (inbox_cases(&data.small), inbox_cases(&data.large));
    // Deep pages: 40 pages in, or as deep as the smaller business's resolved conversations go.
    let resolved = ConversationServiceClient::new(channel.clone())
        .list_conversations(keyed(ListConversationsRequest {
            business_id: data.small.id,
            status: "RESOLVED".into(),
            page_size: 1,
            ..Default::default()
        }))
        .await?
        .into_inner()
        .total_size;
    let deepest = ((resolved / 25) as usize).saturating_sub(1).min(40);
    for ((name, small), (_, large)) in small_cases.into_iter().zip(large_cases) {
        let depth = if name.starts_with("deep") { deepest } else { 0 };
        let name = if depth > 0 { format!("{name} (page {})", depth + 1) } else { name.to_owned() };
        let mut client = ConversationServiceClient::new(channel.clone());
        let small = page_request(&mut client, small, depth).await?;
        let large = page_request(&mut client, large, depth).await?;
        let (small, large) = paired_latency(channel, (small, large), settings.samples).await?;
        let small_label = format!("p99 at {} conversations", data.small.conversations);
        report.add(
            "P2",
            backend,
            format!("{name}: p50 at {}", data.large.conversations),
            (large.p50(), "ms"),
            (format!("p50 at {}", data.small.conversations), small.p50()),
            "",
            None,
        );
        report.add(
            "P2",
            backend,
            format!("{name}: p99 at {}", data.large.conversations),
            (large.p99(), "ms"),
            (small_label, small.p99()),
            "≤ 1.5 × baseline",
            Some(large.p99() <= 1.5 * small.p99()),
        );
    }
    Ok(())
}

// ---- P3 search ----

const SEARCHES: [&str; 6] =
    ["appointment", "massage tomorrow", "refund", "reflexology", "late parking", "cancel class"];

async fn search(
    backend: Backend,
    channel: &Channel,
    data: &Dataset,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<()> {
    let b = &data.large;
    let client = MessageServiceClient::new(channel.clone());
    let search_in = |conversations: Vec<(u32, u32)>| {
        let client = client.clone();
        let business_id = b.id;
        move |i: usize| {
            let mut client = client.clone();
            let (conversation_id, client_id) = conversations[i % conversations.len()];
            async move {
                client
                    .search_conversation_messages(keyed(SearchConversationMessagesRequest {
                        business_id,
                        client_id,
                        conversation_id,
                        q: SEARCHES[i % SEARCHES.len()].into(),
                        page_size: 20,
                        ..Default::default()
                    }))
                    .await?;
                Ok(())
            }
        }
    };
    // The sample starts with the busiest conversation, measured on its own below.
    let typical = time_calls(3, settings.samples, search_in(b.sample[1..].to_vec())).await?;
    let busiest = time_calls(3, settings.samples, search_in(vec![(b.busiest.0, b.busiest.1)])).await?;
    // Baseline: the cheapest authenticated read of the same conversation (first page of messages).
    let conversations = ConversationServiceClient::new(channel.clone());
    let list_messages = time_calls(3, settings.samples, |i| {
        let mut conversations = conversations.clone();
        let (conversation_id, client_id) = b.sample[i % b.sample.len()];
        async move {
            conversations
                .list_conversation_messages(keyed(omega::proto::omega::v1::ListConversationMessagesRequest {
                    business_id: b.id,
                    client_id,
                    conversation_id,
                    page_size: 20,
                    ..Default::default()
                }))
                .await?;
            Ok(())
        }
    })
    .await?;
    let base = ("p99 of listing the same conversations' messages", list_messages.p99());
    report.add(
        "P3",
        backend,
        format!(
            "search within a conversation: p99 (p50 {:.2} ms; {} messages in the business)",
            typical.p50(),
            b.messages
        ),
        (typical.p99(), "ms"),
        base,
        "p99 ≤ 20 ms",
        Some(typical.p99() <= 20.0),
    );
    report.add(
        "P3",
        backend,
        format!("search within the busiest conversation ({} messages): p99 (p50 {:.2} ms)", b.busiest.2, busiest.p50()),
        (busiest.p99(), "ms"),
        base,
        "p99 ≤ 20 ms",
        Some(busiest.p99() <= 20.0),
    );
    // The conversation-list text filter across the business: one rare, one common match.
    let conversations = ConversationServiceClient::new(channel.clone());
    for (what, text) in [("a phone number (1 match)", &b.rare_text), ("a surname (many matches)", &b.common_text)] {
        let samples = time_calls(3, settings.samples, |_| {
            let mut conversations = conversations.clone();
            let query = text.clone();
            async move {
                let page = conversations
                    .list_conversations(keyed(ListConversationsRequest {
                        business_id: b.id,
                        query,
                        page_size: 25,
                        ..Default::default()
                    }))
                    .await?
                    .into_inner();
                anyhow::ensure!(!page.conversations.is_empty(), "the text filter found nothing");
                Ok(())
            }
        })
        .await?;
        report.add(
            "P3",
            backend,
            format!(
                "conversation list filtered by {what}: p99 (p50 {:.2} ms; {} conversations)",
                samples.p50(),
                b.conversations
            ),
            (samples.p99(), "ms"),
            base,
            "p99 ≤ 100 ms",
            Some(samples.p99() <= 100.0),
        );
    }
    business_search(backend, channel, data, settings, report).await
}

/// A word no generated message has: recorded into a few conversations of the large business
/// before the business-wide search is timed, so that it matches a handful of 10M messages.
const RARE_WORD: &str = "zanzibar";

/// The business-wide search (`SearchBusinessMessages`) on the large business: a common word, a
/// rare one, a common word behind filters, and ranked — each timed alternately with the same
/// business's first inbox page, the cheapest authenticated read of the same data.
async fn business_search(
    backend: Backend,
    channel: &Channel,
    data: &Dataset,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<()> {
    let b = &data.large;
    let mut messages = MessageServiceClient::new(channel.clone());
    for (i, (_, client_id)) in b.sample.iter().take(5).enumerate() {
        messages
            .process_message(keyed(ProcessMessageRequest {
                business_id: b.id,
                channel: "SMS".into(),
                direction: "INBOUND".into(),
                client: Some(ClientRef { client_id: Some(*client_id), ..Default::default() }),
                content: format!("postcard {i} from {RARE_WORD}"),
                ..Default::default()
            }))
            .await?;
    }
    let inbox = ListConversationsRequest { business_id: b.id, page_size: 25, ..Default::default() };
    let search = |q: &str| SearchBusinessMessagesRequest { business_id: b.id, q: q.into(), ..Default::default() };
    let cases = [
        ("a common word (one message in 8)", search("appointment")),
        ("a rare word (5 messages)", search(RARE_WORD)),
        (
            "a common word, EMAIL + INBOUND only",
            SearchBusinessMessagesRequest {
                channel: "EMAIL".into(),
                direction: "INBOUND".into(),
                ..search("appointment")
            },
        ),
        (
            "two common words, RELEVANCE",
            SearchBusinessMessagesRequest { order: "RELEVANCE".into(), ..search("massage tomorrow") },
        ),
    ];
    for (what, request) in cases {
        let (mut searches, mut conversations) = (messages.clone(), ConversationServiceClient::new(channel.clone()));
        let (mut found, mut listed) = (Samples::default(), Samples::default());
        for i in 0..settings.samples + 3 {
            let started = Instant::now();
            let page = searches.search_business_messages(keyed(request.clone())).await?.into_inner();
            anyhow::ensure!(!page.hits.is_empty(), "the business search for {:?} found nothing", request.q);
            if i >= 3 {
                found.push(started.elapsed());
            }
            let started = Instant::now();
            conversations.list_conversations(keyed(inbox.clone())).await?;
            if i >= 3 {
                listed.push(started.elapsed());
            }
        }
        report.add(
            "P3",
            backend,
            format!(
                "search across the business, {what}: p99 (p50 {:.2} ms; {} messages in the business)",
                found.p50(),
                b.messages
            ),
            (found.p99(), "ms"),
            ("p99 of the business's first inbox page", listed.p99()),
            "p99 ≤ 100 ms",
            Some(found.p99() <= 100.0),
        );
    }
    Ok(())
}

// ---- P4 dispatch ----

async fn dispatch(
    db: &BenchDb,
    dir: &Path,
    twilio: SocketAddr,
    sent: &AtomicU64,
    data: &Dataset,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = settings.messages;
    let business = &data.small;
    let twilio_env = ("OMEGA_TWILIO_BASE_URL", format!("http://{twilio}"));
    // Baseline: what the fake provider absorbs from a plain HTTP client, 32 requests at a time.
    let http = http_client();
    let raw = run_concurrently(n, 32, move |i| {
        let http = http.clone();
        async move {
            http.post(format!("http://{twilio}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"))
                .form(&[("To", "+12000000001"), ("From", "+16285550001"), ("Body", &format!("baseline {i}"))])
                .send()
                .await?
                .error_for_status()?;
            Ok(())
        }
    })
    .await?;
    let raw_rate = n as f64 / raw.as_secs_f64();
    {
        let omega = start_omega(dir, &db.url, std::slice::from_ref(&twilio_env)).await?;
        ProviderServiceClient::new(grpc_channel(omega.addr).await?)
            .set_twilio_credentials(keyed(SetTwilioCredentialsRequest {
                business_id: business.id,
                account_sid: ACCOUNT_SID.into(),
                auth_token: "bench-auth-token-0000000000000000".into(),
            }))
            .await?;
    }
    let mut runs: Vec<(String, Vec<(&'static str, String)>)> = settings
        .workers
        .iter()
        .map(|w| {
            let env = vec![("OMEGA_DELIVERY_WORKERS", w.to_string()), ("OMEGA_SMS_SENDER_RATE", "0".into())];
            (format!("{w} workers, no sender limit"), env)
        })
        .collect();
    let most = settings.workers.iter().copied().max().unwrap_or(4);
    runs.push((
        format!("{most} workers, 3 senders limited to 500/s each"),
        vec![("OMEGA_DELIVERY_WORKERS", most.to_string()), ("OMEGA_SMS_SENDER_RATE", "500".into())],
    ));
    for (name, env) in runs {
        // Fill the outbox with no workers running: bulk calls of 100 clients, over the 3 locations.
        {
            let omega = start_omega(dir, &db.url, std::slice::from_ref(&twilio_env)).await?;
            let sms = SmsServiceClient::new(grpc_channel(omega.addr).await?);
            let locations = location_ids(db, business.id).await?;
            let calls = n.div_ceil(100);
            run_concurrently(calls, 4, {
                // Every tenth generated client has not agreed to SMS; campaigns skip them.
                let sample_clients: Vec<u32> = (0..business.conversations as u32).filter(|i| i % 10 != 0).collect();
                let first_client = business.sample[0].1;
                let business_id = business.id;
                move |call| {
                    let mut sms = sms.clone();
                    let clients: Vec<u32> = (0..100)
                        .map(|k| first_client + sample_clients[(call * 100 + k) % sample_clients.len()])
                        .collect();
                    let location_id = locations[call % locations.len()];
                    async move {
                        sms.queue_sms(keyed(QueueSmsRequest {
                            business_id,
                            client_ids: clients,
                            content: format!(
                                "Spring offer #{call}: 20% off a massage this week. Reply STOP to opt out."
                            ),
                            location_id: Some(location_id),
                            ..Default::default()
                        }))
                        .await?;
                        Ok(())
                    }
                }
            })
            .await?;
            drop(omega);
        }
        let queued = queued_jobs(db).await?;
        let before = sent.load(Ordering::Relaxed);
        let mut env: Vec<(&str, String)> = env;
        env.push(twilio_env.clone());
        env.push(("OMEGA_DELIVERY_POLL_MS", "20".into()));
        let started = Instant::now();
        let omega = start_omega(dir, &db.url, &env).await?;
        while sent.load(Ordering::Relaxed) < before + queued {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(900), "dispatch stalled");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let elapsed = started.elapsed() - omega.started_in;
        omega.stop().await?;
        let rate = queued as f64 / elapsed.as_secs_f64();
        let limited = name.contains("limited");
        report.add(
            "P4",
            db.backend,
            format!("dispatch to a fake Twilio, {name} ({queued} messages)"),
            (rate, "msg/s"),
            ("the fake's own rate from a plain HTTP client", raw_rate),
            if limited { "≈ 1,500/s (3 × 500)" } else { "≥ 2,000/s" },
            Some(if limited { (1_200.0..=1_650.0).contains(&rate) } else { rate >= 2_000.0 }),
        );
    }
    Ok(())
}

async fn location_ids(db: &BenchDb, business_id: u32) -> anyhow::Result<Vec<u32>> {
    let conn = db.connect().await?;
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            format!("SELECT id FROM locations WHERE business_id = {business_id} ORDER BY id"),
        ))
        .await?;
    rows.iter().map(|r| Ok(r.try_get::<i64>("", "id")? as u32)).collect()
}

async fn queued_jobs(db: &BenchDb) -> anyhow::Result<u64> {
    let conn = db.connect().await?;
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT COUNT(*) AS n FROM delivery_jobs WHERE state = 'pending'".to_owned(),
        ))
        .await?
        .context("count")?;
    Ok(row.try_get::<i64>("", "n")? as u64)
}

// ---- P5 transports ----

async fn transports(
    backend: Backend,
    channel: &Channel,
    direct: SocketAddr,
    envoy: SocketAddr,
    data: &Dataset,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<()> {
    let http = http_client();
    let samples = settings.samples.max(50) * 2;
    let business_id = data.small.id;
    let list = ListConversationsRequest { business_id, page_size: 10, ..Default::default() };
    // (call name, gRPC, gRPC-Web body + path, REST path)
    let calls: [(&str, bool); 2] = [("GetHealth (no database)", false), ("ListConversations, 10 rows", true)];
    for (name, is_list) in calls {
        let grpc = time_calls(20, samples, |_| {
            let channel = channel.clone();
            let list = list.clone();
            async move {
                if is_list {
                    ConversationServiceClient::new(channel).list_conversations(keyed(list)).await?;
                } else {
                    HealthServiceClient::new(channel).get_health(GetHealthRequest {}).await?;
                }
                Ok(())
            }
        })
        .await?;
        let (path, body) = if is_list {
            ("/omega.v1.ConversationService/ListConversations", list.encode_to_vec())
        } else {
            ("/omega.v1.HealthService/GetHealth", GetHealthRequest {}.encode_to_vec())
        };
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        let grpc_web = |base: SocketAddr| {
            let http = http.clone();
            let framed = framed.clone();
            move |_| {
                let http = http.clone();
                let framed = framed.clone();
                async move {
                    let resp = http
                        .post(format!("http://{base}{path}"))
                        .header("content-type", "application/grpc-web+proto")
                        .header("x-grpc-web", "1")
                        .header("x-api-key", KEY)
                        .body(framed)
                        .send()
                        .await?;
                    anyhow::ensure!(resp.status().is_success(), "gRPC-Web answered {}", resp.status());
                    resp.bytes().await?;
                    Ok(())
                }
            }
        };
        let web_direct = time_calls(20, samples, grpc_web(direct)).await?;
        let web_envoy = time_calls(20, samples, grpc_web(envoy)).await?;
        let rest_path = if is_list {
            format!("/omega/businesses/{business_id}/conversations?page_size=10")
        } else {
            "/omega/health".into()
        };
        let rest = time_calls(20, samples, |_| {
            let http = http.clone();
            let url = format!("http://{envoy}{rest_path}");
            async move {
                let resp = http.get(url).header("x-api-key", KEY).send().await?;
                anyhow::ensure!(resp.status().is_success(), "REST answered {}", resp.status());
                resp.bytes().await?;
                Ok(())
            }
        })
        .await?;
        let base = ("gRPC direct p50", grpc.p50());
        for (figure, s, target, limit) in [
            ("gRPC-Web direct (tonic-web)", &web_direct, "≤ 1.2 × gRPC", 1.2),
            ("gRPC-Web through Envoy", &web_envoy, "≤ 1.2 × gRPC", 1.2),
            ("REST through Envoy", &rest, "≤ 1.3 × gRPC", 1.3),
        ] {
            report.add(
                "P5",
                backend,
                format!("{name}: {figure} p50"),
                (s.p50(), "ms"),
                base,
                target,
                Some(s.p50() <= limit * grpc.p50()),
            );
        }
    }
    Ok(())
}

// ---- P6 footprint ----

async fn footprint(
    db: &BenchDb,
    dir: &Path,
    idle_empty: u64,
    loaded_peak: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Cold start on the full dataset: spawn → serving, five times; the median.
    let mut starts = Vec::new();
    let mut idle = 0;
    for _ in 0..5 {
        let omega: Omega = start_omega(dir, &db.url, &[]).await?;
        starts.push(omega.started_in.as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        idle = rss(omega.process.pid())?.0;
    }
    starts.sort_by(f64::total_cmp);
    let start = starts[starts.len() / 2];
    // Baseline for start: the same binary answering `--version` (process start and exit).
    let mut versions = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        std::process::Command::new(crate::harness::omega_binary()?).arg("--version").output()?;
        versions.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    versions.sort_by(f64::total_cmp);
    let backend = db.backend;
    report.add(
        "P6",
        backend,
        "cold start to serving (median of 5, full dataset)",
        (start, "ms"),
        ("`omega --version` (exec and exit)", versions[2]),
        "≤ 200 ms",
        Some(start <= 200.0),
    );
    report.add(
        "P6",
        backend,
        "RSS idle (started on the full dataset)",
        (idle as f64 / MB, "MB"),
        ("RSS of the first server right after start", idle_empty as f64 / MB),
        "≤ 64 MB",
        Some(idle as f64 / MB <= 64.0),
    );
    report.add(
        "P6",
        backend,
        "peak RSS under the P1–P5 load",
        (loaded_peak as f64 / MB, "MB"),
        ("RSS of the first server right after start", idle_empty as f64 / MB),
        "≤ 256 MB",
        Some(loaded_peak as f64 / MB <= 256.0),
    );
    Ok(())
}
