//! P8 live events: how long a change takes to reach the staff apps that follow the event log.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use omega::proto::omega::v1::{
    ClientRef, ProcessMessageRequest, StreamEventsRequest, event_service_client::EventServiceClient,
    message_service_client::MessageServiceClient, stream_events_response::Item,
};
use tokio::sync::Notify;

use crate::{
    Settings,
    dataset::Dataset,
    harness::{Backend, BenchDb, grpc_channel, keyed, rss, start_omega},
    report::Report,
    stats::Samples,
};

/// Streams share connections as staff apps behind one office NAT or a gateway would: this many
/// HTTP/2 connections, the streams spread over them.
const CONNECTIONS: usize = 20;

/// Receipts of the write in flight: every stream stamps the moment its event arrived.
#[derive(Default)]
struct Receipts {
    times: Mutex<Vec<Instant>>,
    count: AtomicUsize,
    all_in: Notify,
}

/// Holds `streams` live `StreamEvents` calls on `holder` (message.received of the business), then
/// writes inbound SMS one at a time through `writer`; each write's latency is taken from the
/// start of its call to its event's arrival on each stream. Baseline: the write's own round trip,
/// timed alternately in the same loop — a receipt can never come sooner than the write commits.
#[allow(clippy::too_many_arguments)]
async fn write_to_receipt(
    backend: Backend,
    writer: SocketAddr,
    holder: SocketAddr,
    holder_pid: u32,
    data: &Dataset,
    settings: &Settings,
    across: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    let streams = if settings.tiny { 50 } else { 1_000 };
    let business = &data.small;
    let (rss_before, _) = rss(holder_pid)?;
    let receipts = Arc::new(Receipts::default());
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(grpc_channel(holder).await?);
    }
    let mut tasks = Vec::new();
    for i in 0..streams {
        let mut events = EventServiceClient::new(channels[i % CONNECTIONS].clone());
        let request = StreamEventsRequest {
            business_id: business.id,
            kinds: vec!["message.received".into()],
            ..Default::default()
        };
        let mut stream = events.stream_events(keyed(request)).await?.into_inner();
        let receipts = receipts.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(item)) = stream.message().await {
                if let Some(Item::Event(_)) = item.item {
                    receipts.times.lock().unwrap().push(Instant::now());
                    if receipts.count.fetch_add(1, Ordering::AcqRel) + 1 == streams {
                        receipts.all_in.notify_one();
                    }
                }
            }
        }));
    }
    let (rss_held, _) = rss(holder_pid)?;

    let mut messages = MessageServiceClient::new(grpc_channel(writer).await?);
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let (mut receipt, mut write) = (Samples::default(), Samples::default());
    let warmup = 3;
    for i in 0..settings.samples + warmup {
        receipts.count.store(0, Ordering::Release);
        receipts.times.lock().unwrap().clear();
        let waiting = receipts.all_in.notified();
        let started = Instant::now();
        messages
            .process_message(keyed(ProcessMessageRequest {
                business_id: business.id,
                channel: "SMS".into(),
                direction: "INBOUND".into(),
                client: Some(ClientRef {
                    phone: format!("+1{}", 2_000_000_000 + (i as u64 * 7919) % business.conversations),
                    ..Default::default()
                }),
                content: format!("Running ten minutes late, sorry! ({i})"),
                provider: "twilio".into(),
                provider_message_id: format!("SMlive{run}{across}{i:020}"),
                ..Default::default()
            }))
            .await?;
        let answered = started.elapsed();
        tokio::time::timeout(Duration::from_secs(30), waiting).await.map_err(|_| {
            anyhow::anyhow!("only {} of {streams} streams received write {i}", receipts.count.load(Ordering::Acquire))
        })?;
        if i >= warmup {
            write.push(answered);
            for at in receipts.times.lock().unwrap().iter() {
                receipt.push(at.duration_since(started));
            }
        }
    }
    for task in tasks {
        task.abort();
    }

    let (place, target_p99) = if across { ("written on another replica", 1_000.0) } else { ("one replica", 50.0) };
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        let value = receipt.quantile(q);
        let judged = name == "p99";
        report.add(
            "P8",
            backend,
            format!("write → receipt on each of {streams} live streams, {place}: {name}"),
            (value, "ms"),
            (format!("the write's own round trip {name}"), write.quantile(q)),
            if judged { format!("≤ {target_p99} ms") } else { String::new() },
            judged.then_some(value <= target_p99),
        );
    }
    if !across {
        const MB: f64 = 1024.0 * 1024.0;
        report.add(
            "P8",
            backend,
            format!("RSS holding {streams} live streams"),
            (rss_held as f64 / MB, "MB"),
            ("RSS before the streams opened", rss_before as f64 / MB),
            "≤ 256 MB",
            Some(rss_held as f64 / MB <= 256.0),
        );
    }
    Ok(())
}

/// P8 on one replica (both databases), and across two replicas on PostgreSQL, where a write on
/// one reaches streams on the other through LISTEN/NOTIFY (SQLite serves from one process).
pub async fn live_events(
    db: &BenchDb,
    dir: &Path,
    omega: (SocketAddr, u32),
    data: &Dataset,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (addr, pid) = omega;
    write_to_receipt(db.backend, addr, addr, pid, data, settings, false, report).await?;
    if db.backend == Backend::Postgres {
        let other = start_omega(dir, &db.url, &[]).await?;
        let result =
            write_to_receipt(db.backend, addr, other.addr, other.process.pid(), data, settings, true, report).await;
        other.stop().await?;
        result?;
    }
    Ok(())
}
