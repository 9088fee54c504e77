//! Trust boundaries of the browser and the network: cookie credentials cannot be used by another
//! site's forged requests (403, nothing written), JSON endpoints refuse other bodies (415), and
//! `X-Forwarded-For` names the client only when a configured proxy wrote it.

use crate::common;

use crate::common::json_of;
use bytes::{BufMut, Bytes, BytesMut};
use common::{Db, TestApp, spawn_app_with};
use prost::Message;
use serde_json::json;

both_databases!(
    cross_site_cookie_changes_are_refused,
    header_credentials_and_same_site_cookies_keep_working,
    json_endpoints_refuse_other_bodies,
    forwarded_for_is_believed_only_from_trusted_proxies,
    the_session_cookie_works_cross_origin_through_envoy_for_named_origins,
);

const EVIL: &str = "https://evil.example";
const APP_ORIGIN: &str = "https://app.example";
const SECRET: &str = "test-token-secret-0123456789abcdefghij";

async fn spawn(db: Db) -> TestApp {
    spawn_app_with(db, &[("OMEGA_CORS_ALLOWED_ORIGINS", APP_ORIGIN), ("OMEGA_TOKEN_SECRET", SECRET)]).await
}

/// What a page on another site can make a browser send: a form (or `no-cors` fetch) post that
/// carries the site's cookie, with the browser's own `Origin` and `Sec-Fetch-Site`.
async fn forged(app: &TestApp, path: &str, cookie: &str, content_type: &str, body: &str) -> reqwest::Response {
    app.http
        .post(app.rest(path))
        .header("cookie", cookie)
        .header("origin", EVIL)
        .header("sec-fetch-site", "cross-site")
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.sql(sql, vec![]).await.unwrap().try_get::<i64>("", "n").unwrap()
}

async fn db_check(app: &TestApp, key: &str) -> u16 {
    app.get("/omega/health/db", key).await.status().as_u16()
}

/// A gRPC-Web call straight to Omega (HTTP/1.1), answering the grpc-status.
async fn grpc_web(
    http: &reqwest::Client,
    app: &TestApp,
    method: &str,
    message: &impl Message,
    headers: &[(&str, &str)],
) -> String {
    let payload = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + payload.len());
    frame.put_u8(0);
    frame.put_u32(payload.len() as u32);
    frame.put_slice(&payload);
    let mut request = http
        .post(format!("http://{}/{method}", app.grpc_addr))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(Bytes::from(frame));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let resp = request.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    if let Some(status) = resp.headers().get("grpc-status") {
        return status.to_str().unwrap().to_owned();
    }
    let body = String::from_utf8_lossy(&resp.bytes().await.unwrap()).to_ascii_lowercase();
    body.lines().find_map(|l| l.split("grpc-status:").nth(1)).map(|s| s.trim().to_owned()).unwrap_or_default()
}

async fn cross_site_cookie_changes_are_refused(db: Db) {
    let app = spawn(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let client = app.upsert_client(&b, json!({ "name": "Carla", "phone": "+14155550199", "sms_consent": true })).await;
    let conversation = app.conversation(&b, client).await;
    let (victim_id, victim_key) = app.create_key("reporting", None).await;
    let platform_cookie = format!("X-API-KEY={}", app.platform_key);
    let business_cookie = format!("theme=dark; api_key={}", b.key);
    let keys_before = count(&app, "SELECT COUNT(*) AS n FROM api_keys").await;

    // Resolve a conversation: a bodiless form post, so only the cross-site check stands.
    let resolve =
        format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/status?status=RESOLVED", b.id);
    for cookie in [&business_cookie, &platform_cookie, &b.key] {
        let refused = json_of(forged(&app, &resolve, cookie, "application/x-www-form-urlencoded", "").await, 403).await;
        assert_eq!(refused["code"], 7, "{refused}");
        assert!(refused["message"].as_str().unwrap().contains("cross-site"), "{refused}");
    }
    // Queue an SMS, create a platform key: a text/plain form body dressed as JSON is not JSON
    // (415), and a JSON body from another site is refused all the same (403).
    let sms = json!({ "business_id": b.id, "client_id": client, "content": "pwned" }).to_string();
    let new_key = json!({ "label": "attacker" }).to_string();
    for (path, cookie, body) in
        [("/omega/sms/queue", &business_cookie, &sms), ("/omega/api-keys", &platform_cookie, &new_key)]
    {
        json_of(forged(&app, path, cookie, "text/plain", body).await, 415).await;
        json_of(forged(&app, path, cookie, "application/json", body).await, 403).await;
    }
    // Revoke a key, with the key cookie and with a session-token cookie.
    let token = json_of(app.post("/omega/auth/token", &app.platform_key, Some(json!({}))).await, 200).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoke = format!("/omega/api-keys/{victim_id}/revoke");
    for cookie in [platform_cookie.clone(), format!("omega_session={token}"), token.clone()] {
        json_of(forged(&app, &revoke, &cookie, "application/x-www-form-urlencoded", "").await, 403).await;
    }
    // Without Origin, Sec-Fetch-Site alone tells a cross-site request.
    let resp = app
        .http
        .post(app.rest(&revoke))
        .header("cookie", &platform_cookie)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    json_of(resp, 403).await;
    // gRPC-Web straight to Omega: the same rule.
    let request = omega::proto::omega::v1::RevokeApiKeyRequest { key_id: victim_id as u32 };
    let headers = [("cookie", platform_cookie.as_str()), ("origin", EVIL)];
    let status = grpc_web(&app.http, &app, "omega.v1.ApiKeyService/RevokeApiKey", &request, &headers).await;
    assert_eq!(status, "7", "PERMISSION_DENIED");

    // Nothing changed.
    let resolved = format!("/omega/businesses/{}/conversations?status=RESOLVED", b.id);
    assert_eq!(json_of(app.get(&resolved, &b.key).await, 200).await["total_size"], 0);
    assert_eq!(count(&app, "SELECT COUNT(*) AS n FROM messages").await, 0, "no SMS queued");
    assert_eq!(count(&app, "SELECT COUNT(*) AS n FROM api_keys").await, keys_before, "no key created");
    assert_eq!(db_check(&app, &victim_key).await, 200, "the key was not revoked");
}

async fn header_credentials_and_same_site_cookies_keep_working(db: Db) {
    let app = spawn(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let client = app.upsert_client(&b, json!({ "name": "Carla", "phone": "+14155550199" })).await;
    let conversation = app.conversation(&b, client).await;
    let status =
        |s: &str| format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/status?status={s}", b.id);
    let post = |path: String, headers: Vec<(&'static str, String)>| {
        let mut request = app.http.post(app.rest(&path));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // curl style: the key in X-API-KEY, even when a browser's Origin is present.
    assert_eq!(post(status("RESOLVED"), vec![("x-api-key", b.key.clone())]).await, 200);
    assert_eq!(post(status("OPEN"), vec![("x-api-key", b.key.clone()), ("origin", EVIL.into())]).await, 200);
    // The legacy clients' bare-key cookie, from a client that sends no Origin.
    assert_eq!(post(status("RESOLVED"), vec![("cookie", b.key.clone())]).await, 200);
    // A browser on Omega's own origin, or on a configured one.
    let own = format!("http://{}", app.envoy_addr);
    let cookie = format!("X-API-KEY={}", b.key);
    let same_origin = vec![("cookie", cookie.clone()), ("origin", own), ("sec-fetch-site", "same-origin".into())];
    assert_eq!(post(status("OPEN"), same_origin).await, 200);
    let configured =
        vec![("cookie", cookie.clone()), ("origin", APP_ORIGIN.into()), ("sec-fetch-site", "cross-site".into())];
    assert_eq!(post(status("RESOLVED"), configured).await, 200);
    // Reads with a cookie from anywhere: another site cannot read the answer.
    let resp = app
        .http
        .get(app.rest("/omega/health/db"))
        .header("cookie", &cookie)
        .header("origin", EVIL)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A token in Authorization is a header credential too.
    let token = json_of(app.post("/omega/auth/token", &b.key, Some(json!({}))).await, 200).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bearer = vec![("authorization", format!("Bearer {token}")), ("origin", EVIL.into())];
    assert_eq!(post(status("OPEN"), bearer).await, 200);
}

async fn json_endpoints_refuse_other_bodies(db: Db) {
    let app = spawn(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let twilio = format!("/omega/businesses/{}/providers/twilio", b.id);
    let credentials =
        json!({ "account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "secret" }).to_string();
    let keys_before = count(&app, "SELECT COUNT(*) AS n FROM api_keys").await;
    let send = |method: reqwest::Method, path: &str, content_type: Option<&str>, body: String| {
        let mut request = app.http.request(method, app.rest(path)).header("x-api-key", &app.platform_key).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send()
    };
    for content_type in
        [Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data; boundary=x"), None]
    {
        let resp =
            send(reqwest::Method::POST, "/omega/api-keys", content_type, json!({ "label": "x" }).to_string()).await;
        let refused = json_of(resp.unwrap(), 415).await;
        assert_eq!(refused["code"], 3, "{refused}");
        assert!(refused["message"].as_str().unwrap().contains("JSON"), "{refused}");
        json_of(send(reqwest::Method::PUT, &twilio, content_type, credentials.clone()).await.unwrap(), 415).await;
    }
    assert_eq!(count(&app, "SELECT COUNT(*) AS n FROM api_keys").await, keys_before, "no key created");
    // JSON with parameters, and `+json` media types, are JSON.
    for content_type in ["application/json; charset=utf-8", "Application/JSON"] {
        let resp =
            send(reqwest::Method::POST, "/omega/api-keys", Some(content_type), json!({ "label": "x" }).to_string());
        json_of(resp.await.unwrap(), 200).await;
    }
    // Bodiless posts need no content type.
    let resp = app.post(&format!("/omega/businesses/{}/clients/1/conversation", b.id), &b.key, None).await;
    assert_ne!(resp.status(), 415);
    // Provider webhooks keep their form bodies: refused for the signature, not the media type.
    let form = "From=%2B14155550199&To=%2B14155550100&Body=hi&MessageSid=SM1";
    for path in ["/omega/twilio/sms/incoming", "/omega/twilio/sms/status"] {
        let resp = app
            .http
            .post(app.rest(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_ne!(resp.status(), 415, "{path}");
    }
}

/// A client whose connections come from `address` (any 127.0.0.0/8 address is loopback).
fn client_from(address: [u8; 4]) -> reqwest::Client {
    let _ = common::http_client();
    reqwest::Client::builder().local_address(std::net::IpAddr::from(address)).build().unwrap()
}

async fn forwarded_for_is_believed_only_from_trusted_proxies(db: Db) {
    // The harness trusts 127.0.0.1 (Envoy's address towards Omega), not the rest of loopback.
    let app = spawn_app_with(db, &[("OMEGA_AUTH_FAILURES_PER_MINUTE", "3")]).await;
    let (mallory, alice) = (client_from([127, 0, 0, 2]), client_from([127, 0, 0, 3]));
    let wrong = common::test_key();
    let check = omega::proto::omega::v1::CheckDbConnectionRequest {};
    let method = "omega.v1.HealthService/CheckDbConnection";
    // Mallory, calling Omega directly, blames Alice's address for her failures…
    for _ in 0..3 {
        let headers = [("x-api-key", wrong.as_str()), ("x-forwarded-for", "127.0.0.3")];
        assert_eq!(grpc_web(&mallory, &app, method, &check, &headers).await, "16");
    }
    // …but they count against Mallory, who cannot dodge the block with another address.
    let headers = [("x-api-key", wrong.as_str()), ("x-forwarded-for", "198.51.100.7")];
    assert_eq!(grpc_web(&mallory, &app, method, &check, &headers).await, "8", "RESOURCE_EXHAUSTED");
    assert_eq!(grpc_web(&alice, &app, method, &check, &[("x-api-key", wrong.as_str())]).await, "16");
    // Through Envoy (a trusted proxy) each client is told apart by the address Envoy appends,
    // whatever the client wrote before it.
    let through_envoy = |client: &reqwest::Client, forwarded: &str| {
        let request = client.get(app.rest("/omega/health/db")).header("x-api-key", &wrong);
        let request = if forwarded.is_empty() { request } else { request.header("x-forwarded-for", forwarded) };
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(through_envoy(&mallory, "127.0.0.9").await, 429);
    assert_eq!(through_envoy(&alice, "").await, 401);
    // Mallory's own valid key still works.
    let resp = mallory.get(app.rest("/omega/health/db")).header("x-api-key", &app.platform_key).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// The browser's view of a named origin (OMEGA_CORS_ALLOWED_ORIGINS) through Envoy: the
/// preflight allows credentials and the protos' verbs, and a `credentials: "include"` call with
/// the `omega_session` cookie is answered with what Chromium needs to hand the answer to the page.
async fn the_session_cookie_works_cross_origin_through_envoy_for_named_origins(db: Db) {
    let app = spawn(db).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let token = json_of(app.post("/omega/auth/token", &b.key, Some(json!({}))).await, 200).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/omega/businesses/{}/clients", b.id);
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.rest(&path))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight(APP_ORIGIN).await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], APP_ORIGIN);
    assert_eq!(h["access-control-allow-credentials"], "true");
    let methods = h["access-control-allow-methods"].to_str().unwrap().to_owned();
    // Exactly the verbs the protos' bindings use (DELETE: webhook endpoints), and OPTIONS.
    let mut listed: Vec<&str> = methods.split(", ").collect();
    listed.sort_unstable();
    assert_eq!(listed, ["DELETE", "GET", "OPTIONS", "PATCH", "POST", "PUT"], "{methods}");
    let refused = preflight(EVIL).await.unwrap();
    assert!(!refused.headers().contains_key("access-control-allow-origin"), "{:?}", refused.headers());
    assert!(!refused.headers().contains_key("access-control-allow-credentials"));

    // The call itself, as fetch(…, { credentials: "include" }) sends it from the named origin.
    let call = app
        .http
        .post(app.rest(&path))
        .header("origin", APP_ORIGIN)
        .header("sec-fetch-site", "cross-site")
        .header("cookie", format!("omega_session={token}"))
        .json(&json!({ "name": "Carla", "phone": "+14155550199" }))
        .send()
        .await
        .unwrap();
    assert_eq!(call.headers()["access-control-allow-origin"], APP_ORIGIN);
    assert_eq!(call.headers()["access-control-allow-credentials"], "true");
    json_of(call, 200).await;
}
