//! Access tokens and sessions: issue → use (header, cookie, gRPC) → expire → 401 everywhere;
//! forged, expired, mis-addressed and `none`/RS256 tokens refused; secret rotation; staff
//! identity from the token; tenant scope; the failed-authentication limit.

use crate::common;

use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::common::json_of;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{Db, TestApp, TestBusiness, eventually, spawn_app_with};
use omega::proto::omega::v1::{CheckDbConnectionRequest, health_service_client::HealthServiceClient};
use serde_json::{Value, json};

both_databases!(
    a_token_works_until_its_session_is_expired,
    forged_expired_and_misaddressed_tokens_are_refused,
    rotated_secrets_keep_old_tokens_until_they_go,
    the_token_decides_the_staff_identity,
    tokens_stay_in_their_business,
    failed_authentications_are_rate_limited,
    long_expired_sessions_are_purged,
    a_stray_bearer_header_does_not_refuse_a_valid_key,
);

const SECRET: &str = "test-token-secret-0123456789abcdefghij";

async fn issue(app: &TestApp, key: &str, body: Value) -> Value {
    json_of(app.post("/omega/auth/token", key, Some(body)).await, 200).await
}

async fn with_bearer(app: &TestApp, path: &str, token: &str) -> u16 {
    app.http
        .get(app.rest(path))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn a_token_works_until_its_session_is_expired(db: Db) {
    let app = spawn_app_with(db, &[("OMEGA_TOKEN_SECRET", SECRET)]).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let issued = issue(&app, &b.key, json!({ "staff_id": b.staff_ids[0], "ttl_seconds": 600 })).await;
    let token = issued["token"].as_str().unwrap().to_owned();
    assert_eq!(issued["token_type"], "Bearer");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["iss"], "omega");
    assert_eq!(claims["aud"], "omega-api");
    assert_eq!(claims["bid"], b.id);
    assert_eq!(claims["sid"], b.staff_ids[0]);
    assert_eq!(claims["jti"], issued["session_id"]);
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600);

    let path = format!("/omega/businesses/{}/conversations", b.id);
    assert_eq!(with_bearer(&app, &path, &token).await, 200);
    let cookie = app
        .http
        .get(app.rest(&path))
        .header("cookie", format!("theme=dark; omega_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cookie.status(), 200);
    let mut grpc = HealthServiceClient::new(app.grpc_channel().await);
    let mut request = tonic::Request::new(CheckDbConnectionRequest {});
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    grpc.check_db_connection(request).await.expect("a token works over gRPC");

    // A token cannot mint tokens.
    let resp = app
        .http
        .post(app.rest("/omega/auth/token"))
        .header("authorization", format!("Bearer {token}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    let expired = app
        .http
        .post(app.rest("/omega/session/expire"))
        .header("authorization", format!("Bearer {token}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(expired, 200).await["expired"], true);
    eventually(Duration::from_secs(3), "the revoked token to be refused", || async {
        with_bearer(&app, &path, &token).await == 401
    })
    .await;
    let mut request = tonic::Request::new(CheckDbConnectionRequest {});
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    assert_eq!(grpc.check_db_connection(request).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    // Expiring again, or a token that means nothing: not an error.
    let again = json_of(app.post("/omega/session/expire", "", Some(json!({ "token": token }))).await, 200).await;
    assert_eq!(again["expired"], false);
    let nonsense =
        json_of(app.post("/omega/session/expire", "", Some(json!({ "token": "not.a.token" }))).await, 200).await;
    assert_eq!(nonsense["expired"], false);

    // Revoking the API key ends the tokens issued for it.
    let (key_id, secret) = app.create_key("front desk", Some(b.id as i64)).await;
    let token = issue(&app, &secret, json!({})).await["token"].as_str().unwrap().to_owned();
    assert_eq!(with_bearer(&app, &path, &token).await, 200);
    json_of(app.post(&format!("/omega/api-keys/{key_id}/revoke"), &app.platform_key, None).await, 200).await;
    eventually(Duration::from_secs(3), "tokens of a revoked key to be refused", || async {
        with_bearer(&app, &path, &token).await == 401
    })
    .await;
}

/// A token with any `alg` in its header, signed with HMAC-SHA256 under `secret` (written out: a
/// JWT library would refuse to put an HMAC signature under an RS256 header).
fn forge(claims: Value, secret: &str, alg: &str) -> String {
    use hmac::{Hmac, Mac};
    let header = json!({ "alg": alg, "typ": "JWT" });
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// Whether `token` is an HS256 token signed with `secret` (its claims aside).
fn signed_with(token: &str, secret: &str) -> bool {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::decode::<Value>(token, &key, &validation).is_ok()
}

async fn forged_expired_and_misaddressed_tokens_are_refused(db: Db) {
    let app = spawn_app_with(db, &[("OMEGA_TOKEN_SECRET", SECRET)]).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let issued = issue(&app, &b.key, json!({})).await;
    let token = issued["token"].as_str().unwrap();
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let path = format!("/omega/businesses/{}/conversations", b.id);
    // The genuine token, re-signed: proves the forgeries below differ only in what they break.
    assert_eq!(with_bearer(&app, &path, &forge(claims.clone(), SECRET, "HS256")).await, 200);
    let now = chrono::Utc::now().timestamp();
    let with = |key: &str, value: Value| {
        let mut c = claims.clone();
        c[key] = value;
        c
    };
    let forgeries = [
        ("expired", forge(with("exp", json!(now - 10)), SECRET, "HS256")),
        ("not yet valid", forge(with("nbf", json!(now + 3_600)), SECRET, "HS256")),
        ("wrong secret", forge(claims.clone(), "another-secret-0123456789abcdefghijkl", "HS256")),
        ("wrong audience", forge(with("aud", json!("someone-else")), SECRET, "HS256")),
        ("wrong issuer", forge(with("iss", json!("evil")), SECRET, "HS256")),
        ("RS256 header", forge(claims.clone(), SECRET, "RS256")),
        ("unknown session", forge(with("jti", json!("00000000-0000-0000-0000-000000000000")), SECRET, "HS256")),
        (
            "alg none",
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            ),
        ),
        ("garbage", "eyJhbGciOiJIUzI1NiJ9.bm9wZQ.c2ln".to_owned()),
    ];
    for (what, forged) in forgeries {
        let resp =
            app.http.get(app.rest(&path)).header("authorization", format!("Bearer {forged}")).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{what}");
        assert_eq!(json_of(resp, 401).await["message"], "missing or invalid credentials", "{what}");
    }
    json_of(app.post("/omega/auth/token", &b.key, Some(json!({ "ttl_seconds": 86_401 }))).await, 422).await;
    json_of(app.post("/omega/auth/token", &b.key, Some(json!({ "staff_id": 999999 }))).await, 422).await;
}

async fn rotated_secrets_keep_old_tokens_until_they_go(db: Db) {
    let mut app = spawn_app_with(db, &[("OMEGA_TOKEN_SECRET", SECRET)]).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let old = issue(&app, &b.key, json!({})).await["token"].as_str().unwrap().to_owned();
    let path = format!("/omega/businesses/{}/conversations", b.id);
    let next = "next-token-secret-abcdefghij0123456789";
    app.restart(&[("OMEGA_TOKEN_SECRET", next), ("OMEGA_TOKEN_PREVIOUS_SECRET", SECRET)]).await;
    assert_eq!(with_bearer(&app, &path, &old).await, 200, "signed with the previous secret");
    let new = issue(&app, &b.key, json!({})).await["token"].as_str().unwrap().to_owned();
    assert!(signed_with(&new, next), "new tokens use the new secret");
    assert!(!signed_with(&new, SECRET), "new tokens use the new secret");
    app.restart(&[("OMEGA_TOKEN_SECRET", next)]).await;
    assert_eq!(with_bearer(&app, &path, &old).await, 401, "the old secret is retired");
    assert_eq!(with_bearer(&app, &path, &new).await, 200);
}

async fn the_token_decides_the_staff_identity(db: Db) {
    let app = spawn_app_with(db, &[("OMEGA_TOKEN_SECRET", SECRET)]).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let (ana, ben) = (b.staff_ids[0], b.staff_ids[1]);
    let token = issue(&app, &b.key, json!({ "staff_id": ana })).await["token"].as_str().unwrap().to_owned();
    let client = app.upsert_client(&b, json!({ "name": "Carla", "phone": "+14155550199" })).await;
    let conversation = app.conversation(&b, client).await;
    let note = |body: Value| {
        app.http
            .post(app.rest(&format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/note", b.id)))
            .header("authorization", format!("Bearer {token}"))
            .json(&body)
            .send()
    };
    let forged = note(json!({ "content": "x", "sent_by": ben, "sender_type": "staff" })).await.unwrap();
    assert_eq!(forged.status(), 403, "a body cannot claim another author");
    json_of(note(json!({ "content": "From the token", "sender_type": "staff" })).await.unwrap(), 200).await;
    let messages = json_of(
        app.get(&format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/messages", b.id), &b.key)
            .await,
        200,
    )
    .await;
    assert_eq!(messages["messages"][0]["sender_staff_id"], ana);

    json_of(
        app.post(
            &format!(
                "/omega/businesses/{}/clients/{client}/conversations/{conversation}/assignment?assigned_to={ana}",
                b.id
            ),
            &b.key,
            None,
        )
        .await,
        200,
    )
    .await;
    let mine = app
        .http
        .get(app.rest(&format!("/omega/businesses/{}/conversations?assignee=mine", b.id)))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(mine, 200).await["total_size"], 1);
    // With an API key there is no "mine".
    json_of(app.get(&format!("/omega/businesses/{}/conversations?assignee=mine", b.id), &b.key).await, 422).await;
}

async fn tokens_stay_in_their_business(db: Db) {
    let app = spawn_app_with(db, &[("OMEGA_TOKEN_SECRET", SECRET)]).await;
    let a = app.onboard_simple("lotus", "+14155550100").await;
    let other: TestBusiness = app.onboard_simple("other", "+14155550101").await;
    let token = issue(&app, &other.key, json!({})).await["token"].as_str().unwrap().to_owned();
    for path in [
        format!("/omega/businesses/{}/conversations", a.id),
        format!("/omega/businesses/{}/clients", a.id),
        format!("/omega/businesses/{}/staffs", a.id),
        format!("/omega/business/{}/onboarding-status", a.id),
    ] {
        assert_eq!(with_bearer(&app, &path, &token).await, 404, "{path}");
    }
    assert_eq!(with_bearer(&app, &format!("/omega/businesses/{}/conversations", other.id), &token).await, 200);
    // A business key cannot mint a token for another business.
    json_of(app.post("/omega/auth/token", &other.key, Some(json!({ "business_id": a.id }))).await, 404).await;
    // A platform key can, for a staff member of that business.
    let issued = issue(&app, &app.platform_key, json!({ "business_id": a.id, "staff_id": a.staff_ids[0] })).await;
    let platform_made = issued["token"].as_str().unwrap();
    assert_eq!(with_bearer(&app, &format!("/omega/businesses/{}/conversations", a.id), platform_made).await, 200);
    assert_eq!(with_bearer(&app, &format!("/omega/businesses/{}/conversations", other.id), platform_made).await, 404);
    json_of(app.post("/omega/auth/token", &app.platform_key, Some(json!({ "staff_id": a.staff_ids[0] }))).await, 422)
        .await;
}

/// Guesses with a wrong credential until one is refused (429, RESOURCE_EXHAUSTED); how many
/// were let through (401) first, and when the refusal came.
async fn guesses_until_refused(app: &TestApp, guess: impl AsyncFn() -> reqwest::Response) -> (u64, Instant) {
    let mut through = 0;
    loop {
        let resp = guess().await;
        match resp.status().as_u16() {
            401 => through += 1,
            429 => {
                assert_eq!(json_of(resp, 429).await["code"], 8);
                return (through, Instant::now());
            }
            other => panic!("a wrong credential answered {other}"),
        }
        assert!(through < 200, "200 guesses and none refused: {}", app.omega.log_text());
    }
}

/// The allowance refills evenly, one guess per two seconds (30 a minute): guesses let through
/// since `from` may number at most one per two seconds begun. The bound holds however busy the
/// machine is; without a limit, guesses would run far past it.
fn refilled_since(from: Instant) -> u64 {
    from.elapsed().as_secs() / 2 + 1
}

async fn failed_authentications_are_rate_limited(db: Db) {
    // The default limit: 30 failures a minute.
    let app = spawn_app_with(db, &[("OMEGA_TOKEN_SECRET", SECRET)]).await;
    let wrong = common::test_key();
    let guess = || app.get("/omega/health/db", &wrong);
    let started = Instant::now();
    let (through, refused) = guesses_until_refused(&app, guess).await;
    assert!(through >= 30, "refused after {through} failures");
    assert!(through <= 30 + refilled_since(started), "{through} failures in {:?}", started.elapsed());
    let (through, refused_again) = guesses_until_refused(&app, guess).await;
    assert!(through <= refilled_since(refused), "{through} more failures let through");
    // Only the failures are limited: a valid key (header or cookie), a token, and calls that
    // present no credential still work from that address.
    assert_eq!(app.get("/omega/health/db", &app.platform_key).await.status(), 200);
    let cookie = app.http.get(app.rest("/omega/health/db")).header("cookie", &app.platform_key).send().await.unwrap();
    assert_eq!(cookie.status(), 200);
    let token = issue(&app, &app.platform_key, json!({})).await["token"].as_str().unwrap().to_owned();
    assert_eq!(with_bearer(&app, "/omega/health/db", &token).await, 200);
    assert_eq!(app.get("/omega/health", "").await.status(), 200);
    // …while the guesses stay refused, keys and tokens alike.
    let (through, _) = guesses_until_refused(&app, guess).await;
    let forged = || {
        app.http
            .get(app.rest("/omega/health/db"))
            .header("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.bm9wZQ")
            .send()
            .map(Result::unwrap)
    };
    let (forged_through, _) = guesses_until_refused(&app, forged).await;
    assert!(through + forged_through <= refilled_since(refused_again), "{through} + {forged_through} let through");
}

async fn long_expired_sessions_are_purged(db: Db) {
    let mut app = spawn_app_with(db, &[("OMEGA_TOKEN_SECRET", SECRET)]).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let old = issue(&app, &b.key, json!({})).await["session_id"].as_str().unwrap().to_owned();
    let fresh = issue(&app, &b.key, json!({})).await["session_id"].as_str().unwrap().to_owned();
    let long_ago = chrono::Utc::now() - chrono::Duration::days(2);
    app.sql("UPDATE sessions SET expires_at = $1 WHERE jti = $2", vec![long_ago.into(), old.clone().into()]).await;
    // Housekeeping runs when Omega starts, then hourly.
    app.restart(&[("OMEGA_TOKEN_SECRET", SECRET)]).await;
    let count = |jti: String| {
        let app = &app;
        async move {
            let row = app.sql("SELECT COUNT(*) AS n FROM sessions WHERE jti = $1", vec![jti.into()]).await.unwrap();
            row.try_get::<i64>("", "n").unwrap()
        }
    };
    eventually(Duration::from_secs(10), "the expired session to be purged", || async { count(old.clone()).await == 0 })
        .await;
    assert_eq!(count(fresh).await, 1, "live sessions stay");
}

/// `X-API-KEY` wins over `Authorization`: a valid key is not refused because of a stray or
/// stale bearer token, over REST and gRPC; a bad key is refused even beside a good token.
async fn a_stray_bearer_header_does_not_refuse_a_valid_key(db: Db) {
    let app = spawn_app_with(db, &[("OMEGA_TOKEN_SECRET", SECRET)]).await;
    let b = app.onboard_simple("lotus", "+14155550100").await;
    let path = format!("/omega/businesses/{}/conversations", b.id);
    let call = |key: &str, bearer: &str| {
        app.http
            .get(app.rest(&path))
            .header("x-api-key", key)
            .header("authorization", format!("Bearer {bearer}"))
            .send()
    };
    assert_eq!(call(&b.key, "not-a-token").await.unwrap().status(), 200);
    assert_eq!(call(&b.key, "eyJhbGciOiJIUzI1NiJ9.e30.forged").await.unwrap().status(), 200);
    let token = issue(&app, &b.key, json!({})).await["token"].as_str().unwrap().to_owned();
    assert_eq!(call("omk_wrong", &token).await.unwrap().status(), 401, "the key header is the one checked");

    let mut client = HealthServiceClient::new(app.grpc_channel().await);
    let mut request = common::with_key(CheckDbConnectionRequest {}, &b.key);
    request.metadata_mut().insert("authorization", "Bearer stale".parse().unwrap());
    client.check_db_connection(request).await.expect("the key is enough over gRPC too");
}
