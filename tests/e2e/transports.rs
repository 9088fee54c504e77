//! One API, three transports: gRPC reflection, gRPC-Web (hand-framed, as a browser sends it)
//! directly to tonic-web and through Envoy, and the REST edge's behaviour (404s, CORS, query
//! parameters) through Envoy.

use crate::common;

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::{Db, spawn_app};
use omega::proto::omega::v1::{CheckDbConnectionResponse, GetHealthResponse};
use prost::Message;
use serde_json::Value;
use tokio_stream::StreamExt;

both_databases!(
    reflection_lists_the_omega_services_v1_and_v1alpha,
    grpc_web_binary_direct_and_through_envoy,
    grpc_web_text_through_envoy,
    unknown_paths_are_json_404s,
    cors_preflights_are_answered,
    unknown_query_parameters_are_ignored,
    the_openapi_document_is_served,
);

/// A gRPC-Web request body: one uncompressed data frame.
fn frame(message: &impl Message) -> Bytes {
    let payload = message.encode_to_vec();
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u8(0);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(&payload);
    buf.freeze()
}

/// Splits a gRPC-Web response body into its data frames and its trailers.
fn unframe(mut body: Bytes) -> (Vec<Bytes>, String) {
    let (mut data, mut trailers) = (Vec::new(), String::new());
    while body.has_remaining() {
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        let chunk = body.split_to(len);
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(&chunk));
        } else {
            data.push(chunk);
        }
    }
    (data, trailers.to_ascii_lowercase())
}

/// gRPC status of a gRPC-Web answer: from the trailer frame, or from the headers of a
/// trailers-only answer.
fn grpc_status(headers: &reqwest::header::HeaderMap, trailers: &str) -> String {
    if let Some(status) = headers.get("grpc-status") {
        return status.to_str().unwrap().to_owned();
    }
    trailers.lines().find_map(|l| l.strip_prefix("grpc-status:")).map(|s| s.trim().to_owned()).unwrap_or_default()
}

async fn grpc_web_call(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    body: Bytes,
    key: Option<&str>,
) -> (reqwest::header::HeaderMap, Vec<Bytes>, String) {
    let mut request = http
        .post(format!("{base}/omega.v1.HealthService/{method}"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(body);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let resp = request.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    let headers = resp.headers().clone();
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/grpc-web"));
    let (data, trailers) = unframe(resp.bytes().await.unwrap());
    (headers, data, trailers)
}

async fn reflection_lists_the_omega_services_v1_and_v1alpha(db: Db) {
    let app = spawn_app(db).await;
    let channel = app.grpc_channel().await;

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut v1 = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = v1.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = stream.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["omega.v1.HealthService", "omega.v1.ApiKeyService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }

    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest as AlphaRequest, server_reflection_client::ServerReflectionClient as AlphaClient,
        server_reflection_request::MessageRequest as AlphaMessageRequest,
        server_reflection_response::MessageResponse as AlphaMessageResponse,
    };
    let mut alpha = AlphaClient::new(channel);
    // v1alpha also serves the file that defines a symbol, REST annotations included.
    let request = AlphaRequest {
        host: String::new(),
        message_request: Some(AlphaMessageRequest::FileContainingSymbol("omega.v1.HealthService".into())),
    };
    let mut stream = alpha.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let Some(AlphaMessageResponse::FileDescriptorResponse(files)) =
        stream.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors");
    };
    let file = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(file.name(), "omega/v1/health.proto");
    assert_eq!(file.service[0].method.len(), 2);
}

async fn grpc_web_binary_direct_and_through_envoy(db: Db) {
    let app = spawn_app(db).await;
    for base in [app.grpc_url(), app.rest("")] {
        let (headers, data, trailers) = grpc_web_call(&app.http, &base, "GetHealth", frame(&()), None).await;
        assert_eq!(grpc_status(&headers, &trailers), "0", "{base}: {trailers}");
        let health = GetHealthResponse::decode(data[0].clone()).unwrap();
        assert_eq!(health.status, "ok");

        let (headers, data, trailers) =
            grpc_web_call(&app.http, &base, "CheckDbConnection", frame(&()), Some(&app.platform_key)).await;
        assert_eq!(grpc_status(&headers, &trailers), "0", "{base}: {trailers}");
        assert_eq!(CheckDbConnectionResponse::decode(data[0].clone()).unwrap().status, "ok");

        let (headers, data, trailers) = grpc_web_call(&app.http, &base, "CheckDbConnection", frame(&()), None).await;
        assert_eq!(grpc_status(&headers, &trailers), "16", "{base}: unauthenticated expected");
        assert!(data.is_empty());
    }
}

async fn grpc_web_text_through_envoy(db: Db) {
    let app = spawn_app(db).await;
    let resp = app
        .http
        .post(app.rest("/omega.v1.HealthService/GetHealth"))
        .header("content-type", "application/grpc-web-text")
        .header("accept", "application/grpc-web-text")
        .header("x-grpc-web", "1")
        .body(STANDARD.encode(frame(&())))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/grpc-web-text"));
    let text = resp.text().await.unwrap();
    // Each frame may be base64-encoded separately; decode the padded chunks one by one.
    let mut raw = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let end =
            rest.find('=').map(|i| rest[i..].find(|c| c != '=').map_or(rest.len(), |j| i + j)).unwrap_or(rest.len());
        raw.extend(STANDARD.decode(&rest[..end]).unwrap());
        rest = &rest[end..];
    }
    let (data, trailers) = unframe(Bytes::from(raw));
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    assert_eq!(GetHealthResponse::decode(data[0].clone()).unwrap().status, "ok");
}

async fn unknown_paths_are_json_404s(db: Db) {
    let app = spawn_app(db).await;
    for path in ["/omega/nope", "/nope", "/health", "/omega/api-keys/1/nope", "/public/api/v1/nope"] {
        let resp = app.get(path, &app.platform_key).await;
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(resp.headers()["content-type"], "application/json", "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 5, "{path}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}: {body}");
    }
}

async fn cors_preflights_are_answered(db: Db) {
    let app = spawn_app(db).await;
    // REST through Envoy, and gRPC-Web straight to tonic-web.
    for (url, method) in [
        (app.rest("/omega/health/db"), "GET"),
        (app.rest("/omega.v1.HealthService/GetHealth"), "POST"),
        (format!("{}/omega.v1.HealthService/GetHealth", app.grpc_url()), "POST"),
    ] {
        let resp = app
            .http
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", "https://studio.example")
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "x-api-key,content-type,x-grpc-web")
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        let allow_origin = resp.headers()["access-control-allow-origin"].to_str().unwrap();
        assert!(allow_origin == "*" || allow_origin == "https://studio.example", "{url}: {allow_origin}");
        let allow_headers = resp.headers()["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
        assert!(allow_headers.contains("x-api-key"), "{url}: {allow_headers}");
        // Any origin (the default `*`) never gets credentials.
        assert!(!resp.headers().contains_key("access-control-allow-credentials"), "{url}");
    }
    let resp = app.http.get(app.rest("/omega/health")).header("origin", "https://studio.example").send().await.unwrap();
    assert!(resp.headers().contains_key("access-control-allow-origin"));
}

async fn unknown_query_parameters_are_ignored(db: Db) {
    let app = spawn_app(db).await;
    let resp = app.http.get(app.rest("/omega/health?utm_source=newsletter&x=1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "ok");
}

async fn the_openapi_document_is_served(db: Db) {
    let app = spawn_app(db).await;
    let resp = app.get("/omega/openapi.json", "").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let served: Value = resp.json().await.unwrap();
    assert_eq!(served, omega::openapi::document());
}
