//! P9 outbound webhooks: how fast Omega delivers business webhooks (Standard Webhooks, signed)
//! to a receiver on loopback that checks every signature.

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use omega::{
    delivery::webhooks::sign,
    proto::omega::v1::{
        ClientRef, CreateWebhookEndpointRequest, DeleteWebhookEndpointRequest, ProcessMessageRequest,
        message_service_client::MessageServiceClient, webhook_endpoint_service_client::WebhookEndpointServiceClient,
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::{
    Settings,
    dataset::Dataset,
    harness::{BenchDb, grpc_channel, http_client, keyed, start_omega},
    phases::run_concurrently,
    report::Report,
};

/// Webhook requests sent at a time by Omega's default configuration (2 workers × batches of
/// 16); the baseline client sends as many at a time.
const DEFAULT_CONCURRENCY: usize = 32;

/// What the receiver saw: when each delivery whose signature verified arrived (once per
/// `webhook-id`), and how many requests it refused.
#[derive(Default)]
struct Received {
    times: Mutex<Vec<Instant>>,
    refused: AtomicU64,
    ids: Mutex<HashSet<String>>,
}

impl Received {
    fn verified(&self) -> usize {
        self.times.lock().unwrap().len()
    }

    /// Deliveries per second between the first and the last of those from `from` on: neither a
    /// server's start nor a client's set-up is counted.
    fn rate_since(&self, from: usize) -> f64 {
        let times = self.times.lock().unwrap();
        let arrived = &times[from..];
        match (arrived.first(), arrived.last()) {
            (Some(first), Some(last)) if arrived.len() > 1 => {
                (arrived.len() - 1) as f64 / last.duration_since(*first).as_secs_f64().max(1e-6)
            }
            _ => 0.0,
        }
    }
}

/// A webhook receiver on `listener`: HTTP/1.1 keep-alive, each POST's Standard Webhooks
/// signature checked with `secret` (204 if good, 400 if not), as a business's receiver would.
fn serve_receiver(listener: TcpListener, secret: String, received: Arc<Received>) {
    let secret: Arc<str> = secret.into();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (secret, received) = (secret.clone(), received.clone());
            tokio::spawn(async move {
                let _ = socket.set_nodelay(true);
                let mut buf = Vec::with_capacity(8192);
                loop {
                    let head_end = loop {
                        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break pos + 4;
                        }
                        let mut chunk = [0u8; 8192];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let header = |name: &str| {
                        head.lines().find_map(|line| {
                            let (key, value) = line.split_once(':')?;
                            key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
                        })
                    };
                    let length = header("content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
                    while buf.len() < head_end + length {
                        let mut chunk = [0u8; 8192];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = &buf[head_end..head_end + length];
                    let verified =
                        match (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature")) {
                            (Some(id), Some(timestamp), Some(signatures)) => {
                                let expected = timestamp
                                    .parse::<i64>()
                                    .ok()
                                    .and_then(|t| sign(&[secret.to_string()], &id, t, body).ok());
                                let good = expected.is_some_and(|e| signatures.split(' ').any(|s| s == e));
                                good.then_some(id)
                            }
                            _ => None,
                        };
                    let status = match verified {
                        Some(id) => {
                            // At least once: a repeat of a `webhook-id` is acknowledged, not counted.
                            if received.ids.lock().unwrap().insert(id) {
                                received.times.lock().unwrap().push(Instant::now());
                            }
                            "204 No Content"
                        }
                        None => {
                            received.refused.fetch_add(1, Ordering::Relaxed);
                            "400 Bad Request"
                        }
                    };
                    buf.drain(..head_end + length);
                    let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// A body of the size and shape Omega sends for an inbound SMS's `message.received`.
fn sample_body(i: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": "message.received",
        "timestamp": "2026-12-05T08:00:00.000000Z",
        "data": {
            "id": i, "business_id": 2, "conversation_id": 17, "kind": "message.received", "actor_staff_id": null,
            "data": { "message_id": "0193a7c4-5e1f-7b2a-9c3d-4e5f6a7b8c9d", "channel": "SMS" },
            "created_at": "2026-12-05T08:00:00.000000Z",
        },
    }))
    .expect("json")
}

/// P9: inbound SMS are ingested with the webhook workers off, so that each leaves one pending
/// delivery (`message.received`) to an endpoint on the loopback receiver; Omega then starts
/// with its workers and the figure is deliveries verified per second, from the first to the
/// last. Baseline: the receiver's own rate, taken the same way, for the same number of signed
/// POSTs from a plain HTTP client, 32 at a time (what Omega's default 2 workers × 16 send at once).
pub async fn delivery_rate(
    db: &BenchDb,
    dir: &Path,
    data: &Dataset,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = settings.messages;
    let business = &data.small;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let receiver: SocketAddr = listener.local_addr()?;
    let allow = [("OMEGA_WEBHOOKS_ALLOW_HTTP", "1".to_owned()), ("OMEGA_WEBHOOKS_ALLOW_PRIVATE", "1".to_owned())];
    let quiet = |workers: usize| {
        let mut env = allow.to_vec();
        env.push(("OMEGA_WEBHOOKS_WORKERS", workers.to_string()));
        env
    };

    let omega = start_omega(dir, &db.url, &quiet(0)).await?;
    let created = WebhookEndpointServiceClient::new(grpc_channel(omega.addr).await?)
        .create_webhook_endpoint(keyed(CreateWebhookEndpointRequest {
            business_id: business.id,
            url: format!("http://{receiver}/omega"),
            description: "omega-bench P9".into(),
            event_types: vec!["message.received".into()],
            enabled: Some(true),
        }))
        .await
        .context("creating the benchmark's webhook endpoint")?
        .into_inner();
    let endpoint_id = created.endpoint.context("the created endpoint")?.id;
    let secret = created.secret;
    drop(omega);
    let received = Arc::new(Received::default());
    serve_receiver(listener, secret.clone(), received.clone());

    // Baseline: the same signed POSTs from a plain client.
    let http = http_client();
    let before = received.verified();
    run_concurrently(n, DEFAULT_CONCURRENCY, move |i| {
        let (http, secret) = (http.clone(), secret.clone());
        async move {
            let body = sample_body(i);
            let id = format!("msg_baseline{i:020}");
            let timestamp = chrono::Utc::now().timestamp();
            let signature = sign(&[secret], &id, timestamp, &body)?;
            http.post(format!("http://{receiver}/omega"))
                .header("content-type", "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body)
                .send()
                .await?
                .error_for_status()?;
            Ok(())
        }
    })
    .await?;
    let baseline_rate = received.rate_since(before);

    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    // Omega's default (2 workers), and more; the tiny smoke run proves the phase with one.
    let worker_counts: &[usize] = if settings.tiny { &[2] } else { &[2, 8] };
    for (round, workers) in worker_counts.iter().copied().enumerate() {
        // Fill the outbox with the workers off: one delivery per inbound SMS.
        {
            let omega = start_omega(dir, &db.url, &quiet(0)).await?;
            let messages = MessageServiceClient::new(grpc_channel(omega.addr).await?);
            let (business_id, conversations) = (business.id, business.conversations);
            let run = run.clone();
            run_concurrently(n, 16, move |i| {
                let mut messages = messages.clone();
                let provider_message_id = format!("SMhook{run}{round}{i:020}");
                async move {
                    messages
                        .process_message(keyed(ProcessMessageRequest {
                            business_id,
                            channel: "SMS".into(),
                            direction: "INBOUND".into(),
                            client: Some(ClientRef {
                                phone: format!("+1{}", 2_000_000_000 + (i as u64 * 7919) % conversations),
                                ..Default::default()
                            }),
                            content: format!("Can I move my appointment to Friday? ({i})"),
                            provider: "twilio".into(),
                            provider_message_id,
                            ..Default::default()
                        }))
                        .await?;
                    Ok(())
                }
            })
            .await?;
            omega.stop().await?;
        }
        let before = received.verified();
        let started = Instant::now();
        let omega = start_omega(dir, &db.url, &quiet(workers)).await?;
        while received.verified() < before + n {
            anyhow::ensure!(
                received.refused.load(Ordering::Relaxed) == 0,
                "the receiver refused a webhook: its signature did not verify"
            );
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "webhook delivery stalled at {} of {n}",
                received.verified() - before
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        omega.stop().await?;
        report.add(
            "P9",
            db.backend,
            format!("webhooks delivered to a loopback receiver, {workers} workers × 16 ({n} events)"),
            (received.rate_since(before), "deliveries/s"),
            (
                format!("the receiver's own rate from a plain HTTP client, {DEFAULT_CONCURRENCY} at a time"),
                baseline_rate,
            ),
            "",
            None,
        );
    }

    // A kept dataset must not go on sending to a receiver that is gone.
    let omega = start_omega(dir, &db.url, &quiet(0)).await?;
    WebhookEndpointServiceClient::new(grpc_channel(omega.addr).await?)
        .delete_webhook_endpoint(keyed(DeleteWebhookEndpointRequest { business_id: business.id, endpoint_id }))
        .await?;
    omega.stop().await?;
    Ok(())
}
