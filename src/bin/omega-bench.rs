//! Omega's benchmark: figures measured in one run on this machine, each beside what it is
//! compared with. Not a test: it asserts nothing, it reports.
//!
//! ```sh
//! cargo run --release --bin omega-bench -- --database sqlite --messages 2000 --workers 4,32
//! ```
//!
//! Delivery: messages queued through gRPC per second (against inserting the same rows straight
//! into the same database), then dispatched to a fake Twilio on loopback per second with each
//! worker count. The fake answers like Twilio (201 + JSON) as fast as it can.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use omega::{
    config::ServeArgs,
    proto::omega::v1::{
        ClientInput, CreateOrRetrieveConversationRequest, LocationInput, OnboardBusinessRequest, QueueSmsRequest,
        SetTwilioCredentialsRequest, UpsertClientRequest, client_service_client::ClientServiceClient,
        conversation_service_client::ConversationServiceClient, onboarding_service_client::OnboardingServiceClient,
        provider_service_client::ProviderServiceClient, sms_service_client::SmsServiceClient,
    },
};
use sea_orm::{ConnectionTrait, Database};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(about = "Omega benchmarks: figures beside a baseline measured in the same run")]
struct Cli {
    /// sqlite or postgres.
    #[arg(long, default_value = "sqlite")]
    database: String,
    /// Server for the PostgreSQL runs (a fresh database is created on it).
    #[arg(long, env = "OMEGA_TEST_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    /// Messages per delivery run.
    #[arg(long, default_value_t = 2_000)]
    messages: usize,
    /// Worker counts to dispatch with, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4,32")]
    workers: Vec<usize>,
    /// Concurrent gRPC calls while queueing.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Where to write the JSON report (the markdown goes to stdout).
    #[arg(long, default_value = "target/bench/delivery.json")]
    out: PathBuf,
}

const KEY: &str = "omk_benchbenchbenchbenchbenchbench0001";
const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";

/// A Twilio stand-in that accepts every message at once (201 + a message JSON).
async fn start_fake_twilio() -> anyhow::Result<(SocketAddr, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(4096);
                loop {
                    // Read one request: headers, then Content-Length bytes.
                    let head_end = loop {
                        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break pos + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + length);
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let body =
                        format!(r#"{{"sid":"SM{n:032x}","status":"queued","error_code":null,"error_message":null}}"#);
                    let response = format!(
                        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, count))
}

/// An Omega server in this process; stops when the returned sender is dropped or fired.
async fn start_omega(
    dir: &Path,
    database_url: &str,
    twilio: SocketAddr,
    workers: usize,
) -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let address_file = dir.join(format!("omega-{}.addr", uuid::Uuid::new_v4().simple()));
    let args = Wrapper::try_parse_from([
        "omega-bench".to_owned(),
        format!("--database-url={database_url}"),
        "--listen=127.0.0.1:0".into(),
        format!("--address-file={}", address_file.display()),
        format!("--bootstrap-api-key={KEY}"),
        format!("--delivery-workers={workers}"),
        "--delivery-poll-ms=20".into(),
        "--sms-sender-rate=0".into(),
        format!("--twilio-base-url=http://{twilio}"),
    ])?
    .serve;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(omega::server::run(args, async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&address_file)
            && let Ok(addr) = text.trim().parse()
        {
            return Ok((addr, stop, server));
        }
        anyhow::ensure!(Instant::now() < deadline && !server.is_finished(), "omega did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn keyed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-api-key", KEY.parse().expect("ascii"));
    request
}

/// A business with a sender number, Twilio credentials and `clients` consenting clients.
async fn set_up_business(channel: Channel, clients: usize) -> anyhow::Result<(u32, Vec<u32>)> {
    let onboarded = OnboardingServiceClient::new(channel.clone())
        .onboard_business(keyed(OnboardBusinessRequest {
            external_ref: "bench".into(),
            name: "Bench Studio".into(),
            time_zone: "UTC".into(),
            locations: vec![LocationInput {
                name: "Main".into(),
                phone_numbers: vec!["+14155550100".into()],
                ..Default::default()
            }],
            ..Default::default()
        }))
        .await?
        .into_inner();
    let business_id = onboarded.business_id;
    ProviderServiceClient::new(channel.clone())
        .set_twilio_credentials(keyed(SetTwilioCredentialsRequest {
            business_id,
            account_sid: ACCOUNT_SID.into(),
            auth_token: "bench-auth-token-0000000000000000".into(),
        }))
        .await?;
    let channel_for_conversations = channel.clone();
    let mut client_service = ClientServiceClient::new(channel);
    let mut ids = Vec::with_capacity(clients);
    for i in 0..clients {
        let client = ClientInput {
            name: format!("Client {i}"),
            phone: format!("+1415600{i:04}"),
            sms_consent: Some(true),
            ..Default::default()
        };
        let answer = client_service
            .upsert_client(keyed(UpsertClientRequest { business_id, client: Some(client) }))
            .await?
            .into_inner();
        ids.push(answer.client.context("client")?.id);
    }
    // The raw-insert baseline writes into an existing conversation.
    ConversationServiceClient::new(channel_for_conversations)
        .create_or_retrieve_conversation(keyed(CreateOrRetrieveConversationRequest {
            business_id,
            client_id: ids[0],
            location_id: None,
        }))
        .await?;
    Ok((business_id, ids))
}

/// Queues `n` messages through gRPC, `concurrency` calls at a time; answers the elapsed time.
async fn queue(
    channel: Channel,
    business_id: u32,
    clients: &[u32],
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicU64::new(0));
    let clients = Arc::new(clients.to_vec());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (mut sms, next, clients) = (SmsServiceClient::new(channel.clone()), next.clone(), clients.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return anyhow::Ok(());
                }
                let request = QueueSmsRequest {
                    business_id,
                    client_id: Some(clients[i % clients.len()]),
                    content: format!("Your class starts at {}:00. Reply STOP to opt out.", 6 + i % 12),
                    ..Default::default()
                };
                sms.queue_sms(keyed(request)).await?;
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(started.elapsed())
}

/// The baseline for queueing: the same rows (message + outbox job) inserted straight into the
/// database, one transaction per message, `concurrency` at a time.
async fn raw_inserts(database_url: &str, business_id: u32, n: usize, concurrency: usize) -> anyhow::Result<Duration> {
    let db = Database::connect(database_url).await?;
    let backend = db.get_database_backend();
    let conversation: i64 = db
        .query_one_raw(sea_orm::Statement::from_string(
            backend,
            format!("SELECT id FROM conversations WHERE business_id = {business_id} LIMIT 1"),
        ))
        .await?
        .context("a conversation")?
        .try_get("", "id")?;
    let client: i64 = db
        .query_one_raw(sea_orm::Statement::from_string(
            backend,
            format!("SELECT client_id FROM conversations WHERE id = {conversation}"),
        ))
        .await?
        .context("a client")?
        .try_get("", "client_id")?;
    let (message_sql, job_sql) = match backend {
        sea_orm::DbBackend::Postgres => (
            "INSERT INTO messages (public_id, business_id, conversation_id, client_id, channel, direction, sender_type, content, status, attempt_count, created_at, request_id, from_address, to_address) VALUES ($1, $2, $3, $4, 'SMS', 'OUTBOUND', 'system', $5, 'QUEUED', 0, $6, $7, '+14155550100', '+14156000000') RETURNING id",
            "INSERT INTO delivery_jobs (message_id, business_id, channel, sender_key, state, attempts, next_attempt_at, created_at, updated_at) VALUES ($1, $2, 'SMS', 'raw', 'done', 0, $3, $3, $3)",
        ),
        _ => (
            "INSERT INTO messages (public_id, business_id, conversation_id, client_id, channel, direction, sender_type, content, status, attempt_count, created_at, request_id, from_address, to_address) VALUES (?1, ?2, ?3, ?4, 'SMS', 'OUTBOUND', 'system', ?5, 'QUEUED', 0, ?6, ?7, '+14155550100', '+14156000000') RETURNING id",
            "INSERT INTO delivery_jobs (message_id, business_id, channel, sender_key, state, attempts, next_attempt_at, created_at, updated_at) VALUES (?1, ?2, 'SMS', 'raw', 'done', 0, ?3, ?3, ?3)",
        ),
    };
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (db, next) = (db.clone(), next.clone());
        tasks.spawn(async move {
            use sea_orm::TransactionTrait;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return anyhow::Ok(());
                }
                let now = chrono::Utc::now();
                let txn = db.begin().await?;
                let row = txn
                    .query_one_raw(sea_orm::Statement::from_sql_and_values(
                        backend,
                        message_sql,
                        [
                            uuid::Uuid::now_v7().to_string().into(),
                            i64::from(business_id).into(),
                            conversation.into(),
                            client.into(),
                            format!("raw {i}").into(),
                            now.into(),
                            uuid::Uuid::new_v4().to_string().into(),
                        ],
                    ))
                    .await?
                    .context("inserted message")?;
                let id: i64 = row.try_get("", "id")?;
                txn.execute_raw(sea_orm::Statement::from_sql_and_values(
                    backend,
                    job_sql,
                    [id.into(), i64::from(business_id).into(), now.into()],
                ))
                .await?;
                txn.commit().await?;
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let elapsed = started.elapsed();
    db.close().await?;
    Ok(elapsed)
}

async fn fresh_database(cli: &Cli, dir: &Path) -> anyhow::Result<String> {
    if cli.database == "postgres" {
        let name = format!("omega_bench_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&cli.postgres_url).await?;
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await?;
        admin.close().await?;
        let base = cli.postgres_url.rsplit_once('/').map_or(cli.postgres_url.as_str(), |(b, _)| b);
        Ok(format!("{base}/{name}"))
    } else {
        Ok(format!("sqlite://{}/bench.db?mode=rwc", dir.display()))
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?.connect().await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let database_url = fresh_database(&cli, dir.path()).await?;
    let (twilio, sent) = start_fake_twilio().await?;

    // Set up with no workers, so queued messages wait in the outbox.
    let (addr, stop, server) = start_omega(dir.path(), &database_url, twilio, 0).await?;
    let channel = connect(addr).await?;
    let (business_id, clients) = set_up_business(channel.clone(), 100).await?;

    let mut rows = Vec::new();
    let raw = raw_inserts(&database_url, business_id, cli.messages, cli.concurrency).await?;
    let raw_rate = cli.messages as f64 / raw.as_secs_f64();
    let queued = queue(channel.clone(), business_id, &clients, cli.messages, cli.concurrency).await?;
    let queue_rate = cli.messages as f64 / queued.as_secs_f64();
    rows.push((
        "queue SMS via gRPC (msg/s)".to_owned(),
        queue_rate,
        "raw insert of message + job".to_owned(),
        raw_rate,
    ));
    let _ = stop.send(());
    server.await??;

    let mut dispatch = Vec::new();
    for (round, workers) in cli.workers.iter().copied().enumerate() {
        if round > 0 {
            // Refill the outbox with no workers running.
            let (addr, stop, server) = start_omega(dir.path(), &database_url, twilio, 0).await?;
            queue(connect(addr).await?, business_id, &clients, cli.messages, cli.concurrency).await?;
            let _ = stop.send(());
            server.await??;
        }
        let before = sent.load(Ordering::Relaxed);
        let started = Instant::now();
        let (_addr, stop, server) = start_omega(dir.path(), &database_url, twilio, workers).await?;
        while sent.load(Ordering::Relaxed) < before + cli.messages as u64 {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "dispatch stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed();
        let _ = stop.send(());
        server.await??;
        dispatch.push((workers, cli.messages as f64 / elapsed.as_secs_f64()));
    }
    let baseline_workers = dispatch.first().map(|d| d.1).unwrap_or(1.0);
    for (workers, rate) in &dispatch {
        rows.push((
            format!("dispatch to fake Twilio, {workers} workers (msg/s)"),
            *rate,
            format!("{} workers", cli.workers[0]),
            baseline_workers,
        ));
    }

    println!("## Delivery — {} ({} messages per run)\n", cli.database, cli.messages);
    println!("| figure | value | baseline (same run) | baseline value | ratio |");
    println!("|---|---:|---|---:|---:|");
    for (figure, value, baseline, base) in &rows {
        println!("| {figure} | {value:.0} | {baseline} | {base:.0} | {:.2} |", value / base);
    }
    let report = serde_json::json!({
        "database": cli.database,
        "messages": cli.messages,
        "rows": rows.iter().map(|(f, v, b, bv)| serde_json::json!({ "figure": f, "value": v, "baseline": b, "baseline_value": bv, "ratio": v / bv })).collect::<Vec<_>>(),
    });
    if let Some(parent) = cli.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&cli.out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("report written to {}", cli.out.display());
    Ok(())
}
