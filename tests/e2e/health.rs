//! The legacy REST API's health endpoints, over REST through Envoy and over gRPC directly, on both databases.

use crate::common;

use std::time::Duration;

use common::{Db, eventually, spawn_app};
use omega::proto::omega::v1::{CheckDbConnectionRequest, GetHealthRequest, health_service_client::HealthServiceClient};
use serde_json::Value;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

both_databases!(
    rest_health_needs_no_key,
    rest_db_check_needs_a_key_and_reports_latency,
    rest_db_check_accepts_the_key_in_a_cookie,
    rest_db_check_fails_once_the_database_is_gone,
    grpc_health_methods_called_directly,
    grpc_standard_health_is_serving,
);

async fn rest_health_needs_no_key(db: Db) {
    let app = spawn_app(db).await;
    let resp = app.get("/omega/health", "").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_seconds"].as_f64().unwrap() >= 0.0);
}

async fn rest_db_check_needs_a_key_and_reports_latency(db: Db) {
    let app = spawn_app(db).await;
    let resp = app.get("/omega/health/db", "").await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 16, "{body}");

    // An unknown key of the right shape and a malformed one answer the same.
    for bad in [common::test_key(), "nope".to_owned()] {
        let resp = app.get("/omega/health/db", &bad).await;
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["message"], "missing or invalid credentials");
    }

    let resp = app.get("/omega/health/db", &app.platform_key).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    let engine = match db {
        Db::Sqlite => "sqlite",
        Db::Postgres => "postgresql",
    };
    assert_eq!(body["database"], engine);
    let latency = body["latency_ms"].as_f64().unwrap();
    assert!(latency > 0.0 && latency < 5_000.0, "latency {latency}");
}

async fn rest_db_check_accepts_the_key_in_a_cookie(db: Db) {
    let app = spawn_app(db).await;
    let with_cookie = |cookie: String| app.http.get(app.rest("/omega/health/db")).header("cookie", cookie).send();
    // The legacy clients' form (`cookie: <key>`) and a named cookie among others.
    let key = &app.platform_key;
    for cookie in [key.clone(), format!("theme=dark; X-API-KEY={key}")] {
        assert_eq!(with_cookie(cookie).await.unwrap().status(), 200);
    }
    let wrong = format!("X-API-KEY={}", common::test_key());
    assert_eq!(with_cookie(wrong).await.unwrap().status(), 401);
}

async fn rest_db_check_fails_once_the_database_is_gone(db: Db) {
    let app = spawn_app(db).await;
    let key = &app.platform_key;
    assert_eq!(app.get("/omega/health/db", key).await.status(), 200);

    app.db.destroy().await;

    // The key lookup needs the database too; either way the answer is a failure, never 200.
    let resp = app.get("/omega/health/db", key).await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 14, "{body}");

    // The process itself is still up.
    assert_eq!(app.get("/omega/health", "").await.status(), 200);

    // And grpc.health.v1 follows the database within a few checks.
    let mut health = HealthClient::new(app.grpc_channel().await);
    eventually(Duration::from_secs(10), "grpc health NOT_SERVING", || {
        let mut health = health.clone();
        async move {
            let resp = health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
            resp.into_inner().status == ServingStatus::NotServing as i32
        }
    })
    .await;
    let status = health.check(HealthCheckRequest { service: "omega.v1.HealthService".into() }).await.unwrap();
    assert_eq!(status.into_inner().status, ServingStatus::NotServing as i32);
}

async fn grpc_health_methods_called_directly(db: Db) {
    let app = spawn_app(db).await;
    let mut client = HealthServiceClient::new(app.grpc_channel().await);

    let health = client.get_health(GetHealthRequest {}).await.unwrap().into_inner();
    assert_eq!(health.status, "ok");

    let err = client.check_db_connection(CheckDbConnectionRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let request = common::with_key(CheckDbConnectionRequest {}, &app.platform_key);
    let check = client.check_db_connection(request).await.unwrap().into_inner();
    assert_eq!(check.status, "ok");
    assert!(check.latency_ms > 0.0);

    // The same call as a gRPC client would make it through Envoy (HTTP/2 end to end).
    let channel = tonic::transport::Channel::from_shared(app.rest("")).unwrap().connect().await.unwrap();
    let mut via_envoy = HealthServiceClient::new(channel);
    let request = common::with_key(CheckDbConnectionRequest {}, &app.platform_key);
    assert_eq!(via_envoy.check_db_connection(request).await.unwrap().into_inner().status, "ok");
}

async fn grpc_standard_health_is_serving(db: Db) {
    let app = spawn_app(db).await;
    let mut health = HealthClient::new(app.grpc_channel().await);
    for service in ["", "omega.v1.HealthService", "omega.v1.ApiKeyService"] {
        let resp = health.check(HealthCheckRequest { service: service.into() }).await.unwrap();
        assert_eq!(resp.into_inner().status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "nope.Service".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}
