//! API keys end to end: lifecycle, scopes, the error model (422 naming the field over REST,
//! INVALID_ARGUMENT with field violations over gRPC), and nothing written on a rejected call.

use crate::common;

use std::{
    collections::HashSet,
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{Db, Process, TestApp, eventually, metric_sample, spawn_app, spawn_app_with, with_key};
use omega::proto::omega::v1::{
    CheckDbConnectionRequest, CreateApiKeyRequest, api_key_service_client::ApiKeyServiceClient,
    health_service_client::HealthServiceClient,
};
use serde_json::{Value, json};
use tonic_types::StatusExt;

both_databases!(
    a_created_key_works_until_it_is_revoked,
    business_keys_cannot_manage_keys,
    rest_parameter_errors_are_422_naming_the_field,
    grpc_parameter_errors_carry_field_violations,
    key_lists_paginate_without_gaps_or_duplicates,
    a_key_revoked_by_the_cli_beside_the_server_is_refused,
);

async fn list_keys(app: &TestApp, query: &str) -> Value {
    let resp = app.get(&format!("/omega/api-keys{query}"), &app.platform_key).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn db_check_status(app: &TestApp, key: &str) -> u16 {
    let resp = app.get("/omega/health/db", key).await;
    resp.status().as_u16()
}

async fn a_created_key_works_until_it_is_revoked(db: Db) {
    let app = spawn_app(db).await;
    let (id, secret) = app.create_key("reporting service", None).await;
    assert!(secret.starts_with("omk_") && secret.len() == 44, "{secret}");
    assert_eq!(db_check_status(&app, &secret).await, 200);

    let listed = list_keys(&app, "").await;
    let entry = listed["api_keys"].as_array().unwrap().iter().find(|k| k["id"] == id).unwrap().clone();
    assert_eq!(entry["label"], "reporting service");
    assert_eq!(entry["scope"], "platform");
    assert_eq!(entry["prefix"], &secret[..12]);
    // The secret never comes back after creation.
    assert!(!listed.to_string().contains(&secret));
    assert_eq!(listed["total_size"], 2, "bootstrap key + the new one");

    let resp = app.post(&format!("/omega/api-keys/{id}/revoke"), &app.platform_key, None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["key_id"], id);
    // Revocation takes effect on the very next request.
    assert_eq!(db_check_status(&app, &secret).await, 401);

    // Revoking twice, or an unknown key: 404.
    for target in [id, 999_999] {
        let resp = app.post(&format!("/omega/api-keys/{target}/revoke"), &app.platform_key, None).await;
        assert_eq!(resp.status(), 404);
    }
}

async fn business_keys_cannot_manage_keys(db: Db) {
    let app = spawn_app(db).await;
    let business = app.insert_business("Lotus Yoga").await;
    let (_, business_key) = app.create_key("front desk", Some(business)).await;
    let listed = list_keys(&app, &format!("?business_id={business}")).await;
    assert_eq!(listed["total_size"], 1);
    assert_eq!(listed["api_keys"][0]["scope"], "business");
    assert_eq!(listed["api_keys"][0]["business_id"], business);

    // A business key authenticates…
    assert_eq!(db_check_status(&app, &business_key).await, 200);
    // …but platform operations are refused, and nothing is created.
    let resp = app.post("/omega/api-keys", &business_key, Some(json!({ "label": "sneaky" }))).await;
    assert_eq!(resp.status(), 403);
    let resp = app.get("/omega/api-keys", &business_key).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(list_keys(&app, "").await["total_size"], 2);

    // A key for a business that does not exist: 404, nothing written.
    let resp = app
        .post("/omega/api-keys", &app.platform_key, Some(json!({ "label": "ghost", "business_id": business + 100 })))
        .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(list_keys(&app, "").await["total_size"], 2);
}

async fn rest_parameter_errors_are_422_naming_the_field(db: Db) {
    let app = spawn_app(db).await;
    let post = |body: String| {
        app.http
            .post(app.rest("/omega/api-keys"))
            .header("x-api-key", &app.platform_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    // Rejected by Omega's validation: google.rpc.BadRequest details name the field.
    let resp = post(json!({ "label": "  " }).to_string()).await.unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(!resp.headers().contains_key("grpc-status"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 3);
    assert_eq!(body["details"][0]["@type"], "type.googleapis.com/google.rpc.BadRequest");
    assert_eq!(body["details"][0]["field_violations"][0]["field"], "label");

    let resp = post(json!({ "label": "x", "business_id": 0 }).to_string()).await.unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(resp.json::<Value>().await.unwrap()["details"][0]["field_violations"][0]["field"], "business_id");

    // Rejected by Envoy before Omega (wrong types, broken JSON): still 422 JSON naming the field.
    for (body, field) in [
        (json!({ "label": "x", "business_id": -1 }).to_string(), Some("business_id")),
        (json!({ "label": "x", "business_id": "abc" }).to_string(), Some("business_id")),
        ("{\"label\":".to_owned(), None),
    ] {
        let resp = post(body.clone()).await.unwrap();
        assert_eq!(resp.status(), 422, "{body}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["code"], 3, "{body}: {err}");
        if let Some(field) = field {
            assert!(err["message"].as_str().unwrap().contains(field), "{body}: {err}");
        }
    }

    for (query, field) in
        [("?page_size=500", "page_size"), ("?page_size=abc", "page_size"), ("?page_token=garbage!", "page_token")]
    {
        let resp = app.get(&format!("/omega/api-keys{query}"), &app.platform_key).await;
        assert_eq!(resp.status(), 422, "{query}");
        let err: Value = resp.json().await.unwrap();
        assert!(err.to_string().contains(field), "{query}: {err}");
    }
    // A non-numeric id, and an empty one as the legacy REST API's examples leave them (`…//…`).
    for path in ["/omega/api-keys/abc/revoke", "/omega/api-keys//revoke"] {
        let resp = app.post(path, &app.platform_key, None).await;
        assert_eq!(resp.status(), 422, "{path}");
        assert!(resp.text().await.unwrap().contains("key_id"), "{path}");
    }

    // None of the rejected calls wrote anything.
    assert_eq!(list_keys(&app, "").await["total_size"], 1);
}

async fn grpc_parameter_errors_carry_field_violations(db: Db) {
    let app = spawn_app(db).await;
    let mut client = ApiKeyServiceClient::new(app.grpc_channel().await);
    let request = common::with_key(CreateApiKeyRequest { label: String::new(), business_id: None }, &app.platform_key);
    let status = client.create_api_key(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let bad_request = status.get_details_bad_request().expect("BadRequest details");
    assert_eq!(bad_request.field_violations[0].field, "label");

    let request = tonic::Request::new(CreateApiKeyRequest { label: "x".into(), business_id: None });
    assert_eq!(client.create_api_key(request).await.unwrap_err().code(), tonic::Code::Unauthenticated);
}

async fn key_lists_paginate_without_gaps_or_duplicates(db: Db) {
    let app = spawn_app(db).await;
    for i in 0..7 {
        app.create_key(&format!("key {i}"), None).await;
    }
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = list_keys(&app, &format!("?page_size=3&page_token={token}")).await;
        assert_eq!(page["total_size"], 8);
        let ids: Vec<u64> = page["api_keys"].as_array().unwrap().iter().map(|k| k["id"].as_u64().unwrap()).collect();
        assert!(ids.len() <= 3);
        seen.extend(ids);
        pages += 1;
        token = page["next_page_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 8);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 8);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first: {seen:?}");
}

/// How many keys `omega` resolved from its key cache, by its metrics.
async fn cached_lookups(omega: &Process) -> f64 {
    let url = format!("http://{}/metrics", omega.metrics_addr());
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    metric_sample(&text, r#"omega_api_key_lookups_total{source="cache"}"#).unwrap_or(0.0)
}

/// A replica's answer to the key, over gRPC straight to it.
async fn grpc_check(addr: SocketAddr, key: &str) -> tonic::Code {
    let mut client = HealthServiceClient::connect(format!("http://{addr}")).await.unwrap();
    match client.check_db_connection(with_key(CheckDbConnectionRequest {}, key)).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// Uses `key` on `addr` until `omega` answers it from its key cache (on PostgreSQL, once its
/// listener is connected): what follows then tests a cached key.
async fn until_cached(omega: &Process, addr: SocketAddr, key: &str) {
    let before = cached_lookups(omega).await;
    eventually(Duration::from_secs(10), "the key is answered from the key cache", || async {
        assert_eq!(grpc_check(addr, key).await, tonic::Code::Ok);
        cached_lookups(omega).await > before
    })
    .await;
}

/// `omega keys revoke` is another process on the same database: the server must not go on
/// accepting the key from its cache. SQLite keeps no key cache (it could not hear this); on
/// PostgreSQL the revocation's NOTIFY reaches the server's listener.
async fn a_key_revoked_by_the_cli_beside_the_server_is_refused(db: Db) {
    let app = spawn_app_with(db, &[("OMEGA_METRICS_ADDR", "127.0.0.1:0")]).await;
    let (id, secret) = app.create_key("kiosk", None).await;
    if db == Db::Postgres {
        until_cached(&app.omega, app.grpc_addr, &secret).await;
    } else {
        for _ in 0..3 {
            assert_eq!(grpc_check(app.grpc_addr, &secret).await, tonic::Code::Ok);
        }
        assert_eq!(cached_lookups(&app.omega).await, 0.0, "SQLite keeps no key cache");
    }
    let revoke = std::process::Command::new(env!("CARGO_BIN_EXE_omega"))
        .args(["keys", "revoke", &id.to_string()])
        .current_dir(app.dir.path())
        .env("OMEGA_DATABASE_URL", &app.db.url)
        .env("OMEGA_SECRETS_KEY_FILE", app.dir.path().join("omega-secrets.key"))
        .output()
        .unwrap();
    assert!(revoke.status.success(), "{}", String::from_utf8_lossy(&revoke.stderr));
    let revoked = Instant::now();
    refused_soon(app.grpc_addr, &secret, revoked).await;
}

/// The key is refused at the latest 1 s after `revoked` (the NOTIFY's way to a listener takes
/// milliseconds; on SQLite there is no cache and the first call is refused).
async fn refused_soon(addr: SocketAddr, key: &str, revoked: Instant) {
    loop {
        match grpc_check(addr, key).await {
            tonic::Code::Unauthenticated => break,
            code => assert_eq!(code, tonic::Code::Ok),
        }
        assert!(revoked.elapsed() < Duration::from_secs(1), "the revoked key was still accepted after 1 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("revoked key refused after {:?}", revoked.elapsed());
}

/// Two replicas on one PostgreSQL database: a key in use on one, so answered from its key cache,
/// and revoked through the other (REST through Envoy) is refused by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_key_revoked_through_one_replica_is_refused_by_the_other() {
    let app = spawn_app(Db::Postgres).await;
    let (id, secret) = app.create_key("front desk", None).await;
    let (other, other_addr) = app.start_replica(&[("OMEGA_METRICS_ADDR", "127.0.0.1:0")]).await;
    until_cached(&other, other_addr, &secret).await;
    assert_eq!(db_check_status(&app, &secret).await, 200);
    let resp = app.post(&format!("/omega/api-keys/{id}/revoke"), &app.platform_key, None).await;
    assert_eq!(resp.status(), 200);
    let revoked = Instant::now();
    // The revoking replica at once…
    assert_eq!(db_check_status(&app, &secret).await, 401);
    // …and the other as soon as the revocation's NOTIFY reaches it.
    refused_soon(other_addr, &secret, revoked).await;
    // Other keys work on; the next use of the platform key reads it again.
    assert_eq!(grpc_check(other_addr, &app.platform_key).await, tonic::Code::Ok);
}
