//! What an operator relies on: Prometheus metrics on their own port, one log line per call at
//! the right level, and start-up errors that say what is wrong.

use crate::common;

use std::{process::Stdio, time::Duration};

use common::{Db, TestApp, eventually, fakes::FakeTwilio, metric_sample, spawn_app_with, with_key};
use omega::proto::omega::v1::{StreamEventsRequest, event_service_client::EventServiceClient};
use serde_json::json;

both_databases!(metrics_count_calls_sends_refusals_and_the_outbox, every_call_is_one_log_line_at_its_level);

async fn scrape(app: &TestApp) -> String {
    let resp = app.http.get(format!("http://{}/metrics", app.omega.metrics_addr())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    resp.text().await.unwrap()
}

async fn metrics_count_calls_sends_refusals_and_the_outbox(db: Db) {
    let twilio = FakeTwilio::start().await;
    let base = twilio.base_url();
    let app =
        spawn_app_with(db, &[("OMEGA_METRICS_ADDR", "127.0.0.1:0"), ("OMEGA_TWILIO_BASE_URL", base.as_str())]).await;
    let b = app.onboard_simple("metered", "+14155550100").await;
    let resp = app
        .http
        .put(app.rest(&format!("/omega/businesses/{}/providers/twilio", b.id)))
        .header("x-api-key", &b.key)
        .json(&json!({ "account_sid": FakeTwilio::ACCOUNT_SID, "auth_token": FakeTwilio::AUTH_TOKEN }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let client = app.upsert_client(&b, json!({ "name": "Carla", "phone": "+14155550199", "sms_consent": true })).await;

    for _ in 0..3 {
        assert_eq!(app.http.get(app.rest("/omega/health")).send().await.unwrap().status(), 200);
    }
    assert_eq!(app.get("/omega/health/db", "omk_wrong").await.status(), 401);
    // A forged Twilio webhook: refused, and counted.
    let forged = app
        .http
        .post(app.rest("/omega/twilio/sms/incoming"))
        .header("x-twilio-signature", "forged")
        .form(&[
            ("AccountSid", FakeTwilio::ACCOUNT_SID),
            ("To", "+14155550100"),
            ("From", "+14155550199"),
            ("Body", "hi"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let queued = app
        .post("/omega/sms/queue", &b.key, Some(json!({ "business_id": b.id, "client_id": client, "content": "6pm" })))
        .await;
    assert_eq!(queued.status(), 200);

    eventually(Duration::from_secs(15), "the send is counted", || async {
        metric_sample(&scrape(&app).await, r#"omega_delivery_sends_total{provider="twilio",outcome="sent"}"#)
            == Some(1.0)
    })
    .await;
    let text = scrape(&app).await;
    assert!(text.contains("# TYPE omega_requests_total counter"), "{text}");
    assert!(text.contains("# TYPE omega_request_duration_seconds histogram"), "{text}");
    let health = r#"omega_requests_total{method="omega.v1.HealthService/GetHealth",status="OK"}"#;
    assert_eq!(metric_sample(&text, health), Some(3.0), "{text}");
    let refused = r#"omega_requests_total{method="omega.v1.HealthService/CheckDbConnection",status="UNAUTHENTICATED"}"#;
    assert_eq!(metric_sample(&text, refused), Some(1.0), "{text}");
    let bucket =
        r#"omega_request_duration_seconds_bucket{method="omega.v1.HealthService/GetHealth",status="OK",le="+Inf"}"#;
    assert_eq!(metric_sample(&text, bucket), Some(3.0), "{text}");
    assert_eq!(
        metric_sample(&text, r#"omega_webhook_verification_failures_total{provider="twilio"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric_sample(&text, r#"omega_outbox_jobs{state="pending"}"#), Some(0.0), "{text}");
    assert_eq!(metric_sample(&text, "omega_outbox_oldest_age_seconds"), Some(0.0), "{text}");
    let pool = if db == Db::Sqlite { "read" } else { "shared" };
    let max = metric_sample(&text, &format!(r#"omega_db_pool_max_connections{{pool="{pool}"}}"#)).expect(&text);
    // OMEGA_DATABASE_MAX_CONNECTIONS's default, for SQLite's readers too (sea-orm's own is one).
    assert_eq!(max, 10.0, "{text}");
    assert!(metric_sample(&text, &format!(r#"omega_db_pool_connections{{pool="{pool}"}}"#)).is_some(), "{text}");
    if db == Db::Postgres {
        assert_eq!(metric_sample(&text, r#"omega_db_pool_max_connections{pool="keyed"}"#), Some(10.0), "{text}");
    }

    // A live event stream is a subscriber while it is held, and no longer once the client leaves.
    let subscribers = r#"omega_event_subscribers{consumer="stream"}"#;
    let mut events = EventServiceClient::new(app.grpc_channel().await);
    let request = StreamEventsRequest { business_id: b.id as u32, ..Default::default() };
    let stream = events.stream_events(with_key(request, &b.key)).await.unwrap().into_inner();
    eventually(Duration::from_secs(15), "the stream is counted", || async {
        metric_sample(&scrape(&app).await, subscribers) == Some(1.0)
    })
    .await;
    drop(stream);
    eventually(Duration::from_secs(15), "the stream's end is counted", || async {
        metric_sample(&scrape(&app).await, subscribers) == Some(0.0)
    })
    .await;

    // Jobs waiting are counted with the age of the oldest (no workers take them here).
    let mut app = app;
    app.restart(&[("OMEGA_METRICS_ADDR", "127.0.0.1:0"), ("OMEGA_DELIVERY_WORKERS", "0")]).await;
    let queued = app
        .post("/omega/sms/queue", &b.key, Some(json!({ "business_id": b.id, "client_id": client, "content": "7pm" })))
        .await;
    assert_eq!(queued.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let text = scrape(&app).await;
    assert_eq!(metric_sample(&text, r#"omega_outbox_jobs{state="pending"}"#), Some(1.0), "{text}");
    let age = metric_sample(&text, "omega_outbox_oldest_age_seconds").expect(&text);
    assert!((1.0..60.0).contains(&age), "oldest job age {age}");
    // Anything but /metrics is not found there.
    let other = app.http.get(format!("http://{}/", app.omega.metrics_addr())).send().await.unwrap();
    assert_eq!(other.status(), 404);
}

async fn every_call_is_one_log_line_at_its_level(db: Db) {
    let app = spawn_app_with(db, &[]).await;
    let ok = app.http.get(app.rest("/omega/health")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let request_id = ok.headers()["x-request-id"].to_str().unwrap().to_owned();
    let refused = app.get("/omega/health/db", "omk_wrong").await;
    assert_eq!(refused.status(), 401);
    let b = app.onboard_simple("logged", "+14155550100").await;
    let bad = app.post(&format!("/omega/businesses/{}/clients", b.id), &b.key, Some(json!({ "name": "" }))).await;
    assert_eq!(bad.status(), 422);

    let lines = |needle: &str| -> Vec<String> {
        app.omega.log_text().lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
    };
    eventually(Duration::from_secs(5), "the calls are logged", || async {
        !lines("omega.v1.ClientService/UpsertClient").is_empty()
    })
    .await;
    let log = app.omega.log_text();
    assert!(!log.contains('\u{1b}'), "no ANSI colours in a log file:\n{log}");
    assert!(!log.contains("response failed"), "{log}");

    let ok = lines(&format!("request_id={request_id}"));
    assert_eq!(ok.len(), 1, "one line per call: {ok:?}");
    let ok = &ok[0];
    assert!(ok.contains(" INFO ") && ok.contains("omega.v1.HealthService/GetHealth"), "{ok}");
    assert!(ok.contains("status=\"OK\"") && ok.contains("http=200"), "{ok}");
    let at = ok.find("latency_ms=").unwrap() + "latency_ms=".len();
    let latency: f64 = ok[at..].split_whitespace().next().unwrap().parse().expect("latency_ms is a number");
    assert!((0.0..5000.0).contains(&latency), "{ok}");

    let refused = lines("CheckDbConnection");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains(" WARN ") && refused[0].contains("http=401"), "{}", refused[0]);

    let bad = lines("omega.v1.ClientService/UpsertClient");
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains(" INFO ") && bad[0].contains("http=422"), "{}", bad[0]);
    assert!(bad[0].contains(&format!("business_id={}", b.id)), "the business is named once known: {}", bad[0]);
    assert!(!log.lines().any(|l| l.contains(" ERROR ")), "no client error is an ERROR:\n{log}");
}

/// `omega serve` with `env` that must fail at once: answers its stderr.
fn failed_start(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_omega"));
    command
        .arg("serve")
        .env_clear()
        .env("OMEGA_LISTEN_ADDR", "127.0.0.1:0")
        .env("OMEGA_DATABASE_URL", format!("sqlite://{}/omega.db?mode=rwc", dir.path().display()))
        .env("OMEGA_SECRETS_KEY_FILE", dir.path().join("key"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "omega kept running with {env:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "{env:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_bad_log_filter_is_a_startup_error() {
    for filter in ["verbose", "omega=loud"] {
        let stderr = failed_start(&[("OMEGA_LOG", filter)]);
        assert!(stderr.contains("OMEGA_LOG") && stderr.contains(filter), "{filter}: {stderr}");
    }
}

#[test]
fn an_unreachable_postgresql_says_connection_refused() {
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/omega");
    let stderr = failed_start(&[("OMEGA_DATABASE_URL", &url)]);
    assert!(stderr.to_ascii_lowercase().contains("connection refused"), "{stderr}");
}

#[test]
fn out_of_range_settings_stop_the_start() {
    for (name, value, flag) in [
        ("OMEGA_DATABASE_MAX_CONNECTIONS", "0", "--database-max-connections"),
        ("OMEGA_DATABASE_MAX_CONNECTIONS", "1001", "--database-max-connections"),
        ("OMEGA_DELIVERY_BATCH", "0", "--delivery-batch"),
        ("OMEGA_DELIVERY_BATCH", "501", "--delivery-batch"),
        ("OMEGA_DELIVERY_CONCURRENCY", "0", "--delivery-concurrency"),
        ("OMEGA_DELIVERY_LEASE_SECS", "1", "--delivery-lease-secs"),
        ("OMEGA_DELIVERY_POLL_MS", "0", "--delivery-poll-ms"),
        ("OMEGA_DELIVERY_MAX_ATTEMPTS", "0", "--delivery-max-attempts"),
        ("OMEGA_SMS_SENDER_RATE", "-1", "--sms-sender-rate"),
        ("OMEGA_EMAIL_SENDER_RATE", "NaN", "--email-sender-rate"),
        ("OMEGA_REQUEST_TIMEOUT_SECS", "0", "--request-timeout-secs"),
        ("OMEGA_PROVIDER_TIMEOUT_SECS", "0", "--provider-timeout-secs"),
        ("OMEGA_HEALTH_CHECK_INTERVAL_SECS", "0", "--health-check-interval-secs"),
    ] {
        let stderr = failed_start(&[(name, value)]);
        assert!(stderr.contains(flag) && stderr.contains("invalid value"), "{name}={value}: {stderr}");
    }
}
