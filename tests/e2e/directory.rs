//! A business's directory end to end, over REST through Envoy: onboarding (idempotent, atomic,
//! validated as a whole), onboarding status, locations, staff and clients (upserts by identity,
//! normalization, concurrency, search and pagination), and tenant isolation between businesses.

use crate::common;

use std::collections::HashSet;

use common::{Db, TestApp, TestBusiness, spawn_app};
use serde_json::{Value, json};

both_databases!(
    onboarding_creates_the_business_and_a_working_key,
    repeated_onboarding_finds_the_business_and_issues_a_new_key,
    concurrent_onboardings_with_one_external_ref_make_one_business,
    onboarding_reports_every_invalid_field_and_writes_nothing,
    onboarding_rejects_a_sender_number_of_another_business,
    onboarding_needs_a_platform_key,
    onboarding_status_follows_the_setup,
    onboarding_status_counts_a_disabled_channel_as_done,
    locations_upsert_by_external_ref,
    staff_upsert_by_external_ref_then_email,
    staff_detail_counts_assigned_conversations,
    a_location_cannot_take_a_sender_of_another_location,
    concurrent_staff_and_location_upserts_are_idempotent,
    clients_upsert_by_identity_and_normalize,
    a_client_update_without_a_name_keeps_the_name,
    client_identity_conflicts_and_invalid_clients_are_422,
    concurrent_client_upserts_make_one_client,
    clients_search_and_paginate,
    client_search_treats_wildcards_literally,
    client_detail_shows_its_conversation_once_it_exists,
    business_keys_see_only_their_own_business,
    updates_keep_the_fields_they_omit,
);

// ---- helpers ----

/// Asserts the status of `resp` and answers its JSON body (`Null` when it is not JSON).
async fn expect(resp: reqwest::Response, status: u16, what: &str) -> Value {
    let actual = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(actual, status, "{what}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// `GET` that must answer 200; its JSON body.
async fn get_ok(app: &TestApp, path: &str, key: &str) -> Value {
    expect(app.get(path, key).await, 200, &format!("GET {path}")).await
}

/// `POST` that must answer 200; its JSON body.
async fn post_ok(app: &TestApp, path: &str, key: &str, body: Value) -> Value {
    expect(app.post(path, key, Some(body)).await, 200, &format!("POST {path}")).await
}

/// `POST /omega/business/onboard` with the platform key.
async fn onboard_raw(app: &TestApp, body: &Value) -> reqwest::Response {
    app.post("/omega/business/onboard", &app.platform_key, Some(body.clone())).await
}

/// The (field, description) pairs of a 422 body's google.rpc.BadRequest details.
fn violations(body: &Value) -> Vec<(String, String)> {
    assert_eq!(body["code"], 3, "INVALID_ARGUMENT: {body}");
    assert_eq!(body["details"][0]["@type"], "type.googleapis.com/google.rpc.BadRequest", "{body}");
    body["details"][0]["field_violations"]
        .as_array()
        .unwrap_or_else(|| panic!("field_violations in {body}"))
        .iter()
        .map(|v| (v["field"].as_str().unwrap().to_owned(), v["description"].as_str().unwrap().to_owned()))
        .collect()
}

fn violation_fields(body: &Value) -> Vec<String> {
    violations(body).into_iter().map(|(f, _)| f).collect()
}

/// The `id` of every object in `body[field]`, in order.
fn ids(body: &Value, field: &str) -> Vec<u64> {
    body[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {body}"))
        .iter()
        .map(|item| item["id"].as_u64().unwrap())
        .collect()
}

/// Numbers of a JSON array (`location_ids`, `staff_ids`).
fn numbers(value: &Value) -> Vec<u64> {
    value.as_array().unwrap_or_else(|| panic!("array: {value}")).iter().map(|v| v.as_u64().unwrap()).collect()
}

/// How many API keys exist (platform view): every onboarding issues one.
async fn key_count(app: &TestApp, query: &str) -> u64 {
    get_ok(app, &format!("/omega/api-keys{query}"), &app.platform_key).await["total_size"].as_u64().unwrap()
}

fn clients_path(business: &TestBusiness) -> String {
    format!("/omega/businesses/{}/clients", business.id)
}

fn staffs_path(business: &TestBusiness) -> String {
    format!("/omega/businesses/{}/staffs", business.id)
}

fn locations_path(business: &TestBusiness) -> String {
    format!("/omega/businesses/{}/locations", business.id)
}

/// Upserts a client with the business's own key; answers the whole response.
async fn upsert_client(app: &TestApp, business: &TestBusiness, body: Value) -> Value {
    post_ok(app, &clients_path(business), &business.key, body).await
}

/// A client upsert that must fail with 422; answers the violations.
async fn rejected_client(app: &TestApp, business: &TestBusiness, body: Value) -> Vec<(String, String)> {
    let what = format!("upsert client {body}");
    let resp = app.post(&clients_path(business), &business.key, Some(body)).await;
    violations(&expect(resp, 422, &what).await)
}

async fn upsert_staff(app: &TestApp, business: &TestBusiness, body: Value) -> Value {
    post_ok(app, &staffs_path(business), &business.key, body).await
}

async fn onboarding_status(app: &TestApp, business: &TestBusiness) -> Value {
    get_ok(app, &format!("/omega/business/{}/onboarding-status", business.id), &business.key).await
}

/// The onboarding step named `name` of a status response.
fn step<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("step {name} in {status}"))
}

/// Asserts that a response is a 404 NOT_FOUND whose body leaks none of `secrets`.
async fn expect_not_found(resp: reqwest::Response, what: &str, secrets: &[&str]) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 404, "{what}: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {text}"));
    assert_eq!(body["code"], 5, "{what}: {body}");
    for secret in secrets {
        assert!(!text.contains(secret), "{what} leaks {secret:?}: {text}");
    }
}

/// A full onboarding request: two locations, two staff.
fn spa_request(external_ref: &str) -> Value {
    json!({
        "external_ref": external_ref,
        "name": "Serenity Spa",
        "time_zone": "America/Los_Angeles",
        "locations": [
            {
                "external_ref": "loc-main",
                "name": "Downtown",
                "phone_numbers": ["(415) 555-0100", "+1 415 555 0101"],
                "email_sender": "hello@serenity.example"
            },
            { "name": "Airport", "time_zone": "America/Denver", "phone_numbers": ["415.555.0102"] }
        ],
        "staff": [
            { "external_ref": "st-1", "name": "Olive", "email": "Olive@Serenity.example", "role": "Owner" },
            { "name": "Pat", "email": "pat@serenity.example", "active": false }
        ]
    })
}

// ---- onboarding ----

async fn onboarding_creates_the_business_and_a_working_key(db: Db) {
    let app = spawn_app(db).await;
    let body = expect(onboard_raw(&app, &spa_request("crm-1")).await, 200, "onboard").await;
    assert_eq!(body["created"], true, "{body}");
    let business_id = body["business_id"].as_u64().expect("business_id");
    assert!(business_id > 0, "{body}");
    let key = body["api_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("omk_"), "{key}");
    assert!(body["api_key_id"].as_u64().unwrap() > 0, "{body}");
    let location_ids = numbers(&body["location_ids"]);
    let staff_ids = numbers(&body["staff_ids"]);
    assert_eq!(location_ids.len(), 2, "{body}");
    assert_eq!(staff_ids.len(), 2, "{body}");

    // The returned key is scoped to the new business and works for its data.
    let path = format!("/omega/businesses/{business_id}/locations");
    let locations = get_ok(&app, &path, &key).await;
    assert_eq!(locations["total_size"], 2, "{locations}");
    assert_eq!(ids(&locations, "locations"), location_ids, "request order");
    let downtown = &locations["locations"][0];
    assert_eq!(downtown["name"], "Downtown");
    assert_eq!(downtown["external_ref"], "loc-main");
    assert_eq!(downtown["phone_numbers"], json!(["+14155550100", "+14155550101"]), "numbers normalized to E.164");
    assert_eq!(downtown["email_sender"], "hello@serenity.example");
    assert_eq!(downtown["time_zone"], "", "empty: the business's time zone");
    let airport = &locations["locations"][1];
    assert_eq!(airport["name"], "Airport");
    assert_eq!(airport["phone_numbers"], json!(["+14155550102"]));
    assert_eq!(airport["time_zone"], "America/Denver");

    let staff = get_ok(&app, &format!("/omega/businesses/{business_id}/staffs"), &key).await;
    assert_eq!(ids(&staff, "staff"), staff_ids, "{staff}");
    assert_eq!(staff["staff"][0]["email"], "olive@serenity.example");
    assert_eq!(staff["staff"][0]["role"], "owner", "roles are lower-cased");
    assert_eq!(staff["staff"][0]["active"], true, "active when omitted");
    assert_eq!(staff["staff"][1]["role"], "staff", "default role");
    assert_eq!(staff["staff"][1]["active"], false);

    // One business-scoped key was issued for it.
    let keys = get_ok(&app, &format!("/omega/api-keys?business_id={business_id}"), &app.platform_key).await;
    assert_eq!(keys["total_size"], 1, "{keys}");
    assert_eq!(keys["api_keys"][0]["id"], body["api_key_id"], "{keys}");
    assert_eq!(keys["api_keys"][0]["scope"], "business", "{keys}");
}

async fn repeated_onboarding_finds_the_business_and_issues_a_new_key(db: Db) {
    let app = spawn_app(db).await;
    let first = expect(onboard_raw(&app, &spa_request("crm-7")).await, 200, "first").await;
    assert_eq!(first["created"], true, "{first}");

    // The retry may differ (the caller's data moved on): the business is found, not duplicated.
    let mut retry = spa_request("crm-7");
    retry["name"] = json!("Serenity Spa & Wellness");
    let second = expect(onboard_raw(&app, &retry).await, 200, "retry").await;
    assert_eq!(second["created"], false, "{second}");
    assert_eq!(second["business_id"], first["business_id"], "same business");
    assert_eq!(second["location_ids"], first["location_ids"], "same locations");
    assert_eq!(second["staff_ids"], first["staff_ids"], "same staff");
    assert_ne!(second["api_key"], first["api_key"], "a fresh key");
    assert_ne!(second["api_key_id"], first["api_key_id"], "a fresh key");

    let business_id = first["business_id"].as_u64().unwrap();
    let new_key = second["api_key"].as_str().unwrap();
    assert!(new_key.starts_with("omk_"), "{new_key}");
    let locations = get_ok(&app, &format!("/omega/businesses/{business_id}/locations"), new_key).await;
    assert_eq!(
        ids(&locations, "locations"),
        numbers(&first["location_ids"]),
        "the new key sees the same locations, none added"
    );
    assert_eq!(key_count(&app, &format!("?business_id={business_id}")).await, 2, "one key per onboarding call");

    // A different external_ref is a different business.
    let other = expect(
        onboard_raw(
            &app,
            &json!({
                "external_ref": "crm-8", "name": "Other", "time_zone": "Europe/London"
            }),
        )
        .await,
        200,
        "other",
    )
    .await;
    assert_eq!(other["created"], true, "{other}");
    assert_ne!(other["business_id"], first["business_id"], "{other}");
}

/// Sends `body` to `path` from `n` concurrent tasks; answers each (status, body text).
async fn concurrently(app: &TestApp, path: &str, key: &str, body: &Value, n: usize) -> Vec<(u16, String)> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (http, url, key, body) = (app.http.clone(), app.rest(path), key.to_owned(), body.clone());
        tasks.spawn(async move {
            let resp = http.post(url).header("x-api-key", key).json(&body).send().await.expect("concurrent request");
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = tasks.join_next().await {
        answers.push(done.unwrap());
    }
    answers
}

async fn concurrent_onboardings_with_one_external_ref_make_one_business(db: Db) {
    let app = spawn_app(db).await;
    // A few rounds, each with its own external_ref and numbers: the race is narrow.
    for round in 0..3 {
        let mut body = spa_request(&format!("crm-race-{round}"));
        body["locations"][0]["phone_numbers"] = json!([format!("+1415556{round}100"), format!("+1415556{round}101")]);
        body["locations"][1]["phone_numbers"] = json!([format!("+1415556{round}102")]);
        let mut answers = Vec::new();
        for (status, text) in concurrently(&app, "/omega/business/onboard", &app.platform_key, &body, 10).await {
            // A call that loses the race on external_ref finds the business (200, created=false),
            // even when the winner took the sender numbers first.
            assert_eq!(status, 200, "round {round}, concurrent onboarding: {text}");
            answers.push(serde_json::from_str::<Value>(&text).unwrap());
        }
        let businesses: HashSet<u64> = answers.iter().map(|a| a["business_id"].as_u64().unwrap()).collect();
        assert_eq!(businesses.len(), 1, "one business: {businesses:?}");
        let created = answers.iter().filter(|a| a["created"] == true).count();
        assert_eq!(created, 1, "exactly one call created it: {answers:?}");
        let keys: HashSet<&str> = answers.iter().map(|a| a["api_key"].as_str().unwrap()).collect();
        assert_eq!(keys.len(), 10, "each call got its own key");
        for answer in &answers {
            assert_eq!(answer["location_ids"].as_array().unwrap().len(), 2, "{answer}");
            assert_eq!(answer["staff_ids"].as_array().unwrap().len(), 2, "{answer}");
        }
        let business_id = *businesses.iter().next().unwrap();
        let locations = get_ok(&app, &format!("/omega/businesses/{business_id}/locations"), &app.platform_key).await;
        assert_eq!(locations["total_size"], 2, "no duplicated locations: {locations}");
        assert_eq!(key_count(&app, &format!("?business_id={business_id}")).await, 10);
    }
}

async fn onboarding_reports_every_invalid_field_and_writes_nothing(db: Db) {
    let app = spawn_app(db).await;
    let keys_before = key_count(&app, "").await;
    let messy = json!({
        "external_ref": "crm-messy",
        "name": "Messy Salon",
        "time_zone": "Mars/Olympus",
        "locations": [{
            "name": " ",
            "phone_numbers": ["+1 415 555 0100", "abc"],
            "messaging_service_sid": "MG-not-a-sid"
        }],
        "staff": [
            { "name": "Ana", "email": "dup@messy.example" },
            { "name": "Ann", "email": "DUP@messy.example" }
        ]
    });
    let body = expect(onboard_raw(&app, &messy).await, 422, "messy onboarding").await;
    let fields = violation_fields(&body);
    for field in [
        "time_zone",
        "locations[0].name",
        "locations[0].phone_numbers[1]",
        "locations[0].messaging_service_sid",
        "staff[1].email",
    ] {
        assert!(fields.iter().any(|f| f == field), "{field} missing from {fields:?}");
    }
    assert!(
        !fields.iter().any(|f| f == "locations[0].phone_numbers[0]" || f == "staff[0].email"),
        "valid fields are not reported: {fields:?}"
    );
    assert!(body["message"].as_str().unwrap().contains("time_zone"), "{body}");

    // Nothing was written: no key was issued, and the external_ref is still free.
    assert_eq!(key_count(&app, "").await, keys_before);
    let fixed = json!({
        "external_ref": "crm-messy",
        "name": "Messy Salon",
        "time_zone": "Europe/Paris",
        "locations": [{ "name": "Main", "phone_numbers": ["+1 415 555 0100"] }],
        "staff": [{ "name": "Ana", "email": "dup@messy.example" }]
    });
    let body = expect(onboard_raw(&app, &fixed).await, 200, "fixed onboarding").await;
    assert_eq!(body["created"], true, "the rejected call created nothing: {body}");

    // Problems that only show once the parts are valid: twice the same number, an empty name.
    let twice = json!({
        "external_ref": "crm-twice",
        "name": "",
        "time_zone": "Europe/Paris",
        "default_calling_code": "33",
        "locations": [
            { "external_ref": "same", "name": "A", "phone_numbers": ["+33 1 23 45 67 89"] },
            { "external_ref": "same", "name": "B", "phone_numbers": ["01 23 45 67 89"] }
        ],
        "staff": [
            { "external_ref": "s", "name": "Ana" },
            { "external_ref": "s", "name": "Ann", "role": "Front Desk" }
        ]
    });
    let body = expect(onboard_raw(&app, &twice).await, 422, "duplicate number").await;
    let fields = violation_fields(&body);
    for field in ["name", "locations[1].external_ref", "locations[1].phone_numbers[0]", "staff[1].role"] {
        assert!(fields.iter().any(|f| f == field), "{field} missing from {fields:?}");
    }
    let body = expect(
        onboard_raw(&app, &json!({ "name": "X", "time_zone": "UTC", "default_calling_code": "0x" })).await,
        422,
        "bad calling code",
    )
    .await;
    assert_eq!(violation_fields(&body), vec!["default_calling_code"], "{body}");
    assert_eq!(key_count(&app, "").await, keys_before + 1);
}

async fn onboarding_rejects_a_sender_number_of_another_business(db: Db) {
    let app = spawn_app(db).await;
    let first = app.onboard_simple("alpha", "+14155550100").await;
    let keys_before = key_count(&app, "").await;
    let request = json!({
        "external_ref": "ext-beta",
        "name": "Beta",
        "time_zone": "America/Chicago",
        "locations": [{ "name": "Main", "phone_numbers": ["(415) 555-0100", "+1 415 555 0190"] }]
    });
    let body = expect(onboard_raw(&app, &request).await, 422, "taken number").await;
    let found = violations(&body);
    assert_eq!(
        found.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
        vec!["locations[0].phone_numbers[0]"],
        "{body}"
    );
    assert!(found[0].1.contains("+14155550100"), "{found:?}");
    assert_eq!(key_count(&app, "").await, keys_before, "nothing written");

    // The owner keeps its number.
    let locations = get_ok(&app, &locations_path(&first), &first.key).await;
    assert_eq!(locations["locations"][0]["phone_numbers"], json!(["+14155550100"]));
}

async fn onboarding_needs_a_platform_key(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("gamma", "+14155550100").await;
    let keys_before = key_count(&app, "").await;
    let request = spa_request("crm-sneaky");
    let resp = app.post("/omega/business/onboard", &business.key, Some(request.clone())).await;
    let body = expect(resp, 403, "business key onboarding").await;
    assert_eq!(body["code"], 7, "PERMISSION_DENIED: {body}");
    let resp = app.post("/omega/business/onboard", "", Some(request.clone())).await;
    let body = expect(resp, 401, "onboarding without a key").await;
    assert_eq!(body["code"], 16, "UNAUTHENTICATED: {body}");
    let resp = app.post("/omega/business/onboard", "omk_not_a_real_key", Some(request)).await;
    expect(resp, 401, "onboarding with a wrong key").await;
    assert_eq!(key_count(&app, "").await, keys_before, "nothing written");
}

// ---- onboarding status ----

async fn onboarding_status_follows_the_setup(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("delta", "+14155550100").await;
    let status = onboarding_status(&app, &business).await;
    assert_eq!(status["business_id"], business.id, "{status}");
    let names: Vec<&str> = status["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(names, ["profile", "locations", "staff", "sms_sender", "email_sender", "clients", "first_message"]);
    let done = |status: &Value| -> Vec<(String, bool)> {
        status["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["step"].as_str().unwrap().to_owned(), s["complete"] == true))
            .collect()
    };
    let expected = |flags: [bool; 7]| -> Vec<(String, bool)> {
        names.iter().zip(flags).map(|(n, f)| (n.to_string(), f)).collect()
    };
    assert_eq!(done(&status), expected([true, true, true, true, false, false, false]), "{status}");
    assert_eq!(status["complete"], false);
    assert_eq!(status["completed_steps"], 4, "{status}");
    assert_eq!(status["total_steps"], 7, "{status}");
    for s in status["steps"].as_array().unwrap() {
        assert!(!s["title"].as_str().unwrap().is_empty(), "{s}");
        assert!(!s["detail"].as_str().unwrap().is_empty(), "{s}");
    }
    assert!(step(&status, "staff")["detail"].as_str().unwrap().contains('2'), "two active staff: {status}");

    // A client completes the clients step.
    app.upsert_client(&business, json!({ "phone": "+14155550199", "name": "Carl" })).await;
    let status = onboarding_status(&app, &business).await;
    assert_eq!(done(&status), expected([true, true, true, true, false, true, false]), "{status}");
    assert_eq!(status["completed_steps"], 5, "{status}");

    // A location with an email sender completes the email step.
    post_ok(
        &app,
        &locations_path(&business),
        &business.key,
        json!({ "external_ref": "mail", "name": "Mail", "email_sender": "desk@delta.example" }),
    )
    .await;
    let status = onboarding_status(&app, &business).await;
    assert_eq!(done(&status), expected([true, true, true, true, true, true, false]), "{status}");
    assert_eq!(status["completed_steps"], 6, "{status}");
    assert_eq!(status["complete"], false, "no message sent yet");

    // Another business's key does not learn about it; the platform key does.
    let other = app.onboard_simple("epsilon", "+14155550111").await;
    let resp = app.get(&format!("/omega/business/{}/onboarding-status", business.id), &other.key).await;
    expect_not_found(resp, "another business's status", &["delta"]).await;
    let status = get_ok(&app, &format!("/omega/business/{}/onboarding-status", business.id), &app.platform_key).await;
    assert_eq!(status["completed_steps"], 6, "{status}");
    let resp = app.get("/omega/business/999999/onboarding-status", &app.platform_key).await;
    expect(resp, 404, "unknown business").await;
}

async fn onboarding_status_counts_a_disabled_channel_as_done(db: Db) {
    let app = spawn_app(db).await;
    let business = app
        .onboard(json!({
            "external_ref": "ext-zeta",
            "name": "Zeta",
            "time_zone": "Europe/Berlin",
            "locations": [{ "name": "Main", "phone_numbers": ["+4930123456"] }],
            "staff": [{ "name": "Zoe" }],
            "channel_settings": { "email_enabled": false }
        }))
        .await;
    let status = onboarding_status(&app, &business).await;
    let email = step(&status, "email_sender");
    assert_eq!(email["complete"], true, "email is off: {status}");
    assert!(email["detail"].as_str().unwrap().contains("channel is off"), "{email}");
    assert_eq!(step(&status, "sms_sender")["complete"], true, "{status}");
    assert_eq!(status["completed_steps"], 5, "{status}");

    // With SMS off too and no number, the SMS step is done as well; no location: not done.
    let bare = app
        .onboard(json!({
            "external_ref": "ext-eta",
            "name": "Eta",
            "time_zone": "Europe/Berlin",
            "channel_settings": { "sms_enabled": false, "email_enabled": true }
        }))
        .await;
    let status = onboarding_status(&app, &bare).await;
    assert_eq!(step(&status, "sms_sender")["complete"], true, "{status}");
    assert_eq!(step(&status, "email_sender")["complete"], false, "{status}");
    assert_eq!(step(&status, "locations")["complete"], false, "{status}");
    assert_eq!(step(&status, "staff")["complete"], false, "{status}");
    assert_eq!(status["completed_steps"], 2, "profile and sms: {status}");
}

// ---- locations ----

async fn locations_upsert_by_external_ref(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("theta", "+14155550100").await;
    let path = locations_path(&business);
    let uptown = json!({
        "external_ref": "loc-2",
        "name": "Uptown",
        "phone_numbers": ["+1 415 555 0111"],
        "email_sender": "up@theta.example"
    });
    let created = post_ok(&app, &path, &business.key, uptown.clone()).await;
    assert_eq!(created["created"], true, "{created}");
    let location = &created["location"];
    let id = location["id"].as_u64().unwrap();
    assert!(id > business.location_ids[0], "{created}");
    assert_eq!(location["name"], "Uptown");
    assert_eq!(location["external_ref"], "loc-2");
    assert_eq!(location["phone_numbers"], json!(["+14155550111"]));
    assert_eq!(location["email_sender"], "up@theta.example");

    let mut renamed = uptown.clone();
    renamed["name"] = json!("Uptown East");
    let updated = post_ok(&app, &path, &business.key, renamed).await;
    assert_eq!(updated["created"], false, "{updated}");
    assert_eq!(updated["location"]["id"], id, "same location");
    assert_eq!(updated["location"]["name"], "Uptown East");
    assert_eq!(updated["location"]["phone_numbers"], json!(["+14155550111"]));
    assert_eq!(updated["location"]["email_sender"], "up@theta.example");

    // Without an external_ref every call is a new location.
    let plain = post_ok(&app, &path, &business.key, json!({ "name": "Pop-up", "time_zone": "America/Chicago" })).await;
    assert_eq!(plain["created"], true, "{plain}");
    assert_eq!(plain["location"]["phone_numbers"], json!([]), "{plain}");
    assert_eq!(plain["location"]["time_zone"], "America/Chicago");

    let list = get_ok(&app, &path, &business.key).await;
    assert_eq!(list["total_size"], 3, "{list}");
    assert_eq!(list["next_page_token"], "", "{list}");
    let listed = ids(&list, "locations");
    assert_eq!(listed, vec![business.location_ids[0], id, plain["location"]["id"].as_u64().unwrap()], "id order");
    assert_eq!(list["locations"][0]["phone_numbers"], json!(["+14155550100"]));
    assert_eq!(list["locations"][1]["name"], "Uptown East");
    assert_eq!(list["locations"][1]["phone_numbers"], json!(["+14155550111"]));

    // Pages of one.
    let page = get_ok(&app, &format!("{path}?page_size=1"), &business.key).await;
    assert_eq!(ids(&page, "locations"), vec![business.location_ids[0]]);
    assert_eq!(page["total_size"], 3);
    let token = page["next_page_token"].as_str().unwrap();
    assert!(!token.is_empty(), "{page}");
    let page = get_ok(&app, &format!("{path}?page_size=1&page_token={token}"), &business.key).await;
    assert_eq!(ids(&page, "locations"), vec![id], "{page}");

    // Invalid input: 422 naming the field, nothing changed.
    for (body, field) in [
        (json!({ "external_ref": "loc-2", "name": "X", "email_sender": "not-an-email" }), "email_sender"),
        (json!({ "external_ref": "loc-3", "name": "" }), "name"),
        (json!({ "external_ref": "loc-3", "name": "X", "time_zone": "Mars/Olympus" }), "time_zone"),
        (
            json!({ "external_ref": "loc-3", "name": "X", "phone_numbers": ["+1 415", "+14155550112"] }),
            "phone_numbers[0]",
        ),
    ] {
        let resp = app.post(&path, &business.key, Some(body.clone())).await;
        let err = expect(resp, 422, &body.to_string()).await;
        assert_eq!(violation_fields(&err), vec![field], "{body}: {err}");
    }
    // Another business's number.
    let other = app.onboard_simple("iota", "+14155550177").await;
    let resp = app
        .post(
            &path,
            &business.key,
            Some(json!({ "external_ref": "loc-3", "name": "X", "phone_numbers": ["415-555-0177"] })),
        )
        .await;
    let err = expect(resp, 422, "another business's number").await;
    assert_eq!(violation_fields(&err), vec!["phone_numbers[0]"], "{err}");
    let list = get_ok(&app, &path, &business.key).await;
    assert_eq!(list["total_size"], 3, "nothing created: {list}");
    assert_eq!(list["locations"][1]["email_sender"], "up@theta.example");
    let others = get_ok(&app, &locations_path(&other), &other.key).await;
    assert_eq!(others["locations"][0]["phone_numbers"], json!(["+14155550177"]));
}

async fn a_location_cannot_take_a_sender_of_another_location(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("phi", "+14155550100").await;
    let path = locations_path(&business);
    let sid = "MG0123456789abcdef0123456789abcdef";
    let first = post_ok(
        &app,
        &path,
        &business.key,
        json!({ "external_ref": "l-1", "name": "One", "messaging_service_sid": sid }),
    )
    .await;
    assert_eq!(first["location"]["messaging_service_sid"], sid, "{first}");

    // A number or messaging service already used by another location of the same business
    // is a field error, as it is for another business's.
    // A sender held by another location of the same business is a 422 naming the field.
    for (body, field) in [
        (json!({ "external_ref": "l-2", "name": "Two", "phone_numbers": ["(415) 555-0100"] }), "phone_numbers[0]"),
        (json!({ "external_ref": "l-2", "name": "Two", "messaging_service_sid": sid }), "messaging_service_sid"),
    ] {
        let resp = app.post(&path, &business.key, Some(body.clone())).await;
        let err = expect(resp, 422, &body.to_string()).await;
        assert_eq!(violation_fields(&err), vec![field], "{body}: {err}");
    }
    let list = get_ok(&app, &path, &business.key).await;
    assert_eq!(list["total_size"], 2, "nothing created: {list}");
    assert_eq!(list["locations"][0]["phone_numbers"], json!(["+14155550100"]));
}

async fn concurrent_staff_and_location_upserts_are_idempotent(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("chi", "+14155550100").await;
    // Losers of the race find the row the winner inserted, as client upserts do.
    let mut problems = Vec::new();
    for (path, body) in [
        (staffs_path(&business), json!({ "external_ref": "st-race", "name": "Racer" })),
        (staffs_path(&business), json!({ "email": "race@chi.example", "name": "Racer" })),
        (locations_path(&business), json!({ "external_ref": "loc-race", "name": "Racer" })),
    ] {
        let answers = concurrently(&app, &path, &business.key, &body, 10).await;
        let failed: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
        if let Some((status, text)) = failed.first() {
            problems.push(format!("{path} {body}: {} of 10 failed, e.g. {status} {text}", failed.len()));
        }
        let created =
            answers.iter().filter(|(_, t)| serde_json::from_str::<Value>(t).unwrap()["created"] == true).count();
        assert_eq!(created, 1, "{path} {body}: exactly one call created it");
    }
    assert!(problems.is_empty(), "{problems:#?}");
    let staff = get_ok(&app, &staffs_path(&business), &business.key).await;
    assert_eq!(staff["total_size"], 4, "two staff + the two racers: {staff}");
    let locations = get_ok(&app, &locations_path(&business), &business.key).await;
    assert_eq!(locations["total_size"], 2, "{locations}");
}

// ---- staff ----

async fn staff_upsert_by_external_ref_then_email(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("kappa", "+14155550100").await;
    let created = upsert_staff(
        &app,
        &business,
        json!({ "external_ref": "st-9", "name": "Cara", "email": "Cara@Kappa.example", "role": "Front_Desk" }),
    )
    .await;
    assert_eq!(created["created"], true, "{created}");
    let cara = created["staff"]["id"].as_u64().unwrap();
    assert_eq!(created["staff"]["email"], "cara@kappa.example");
    assert_eq!(created["staff"]["role"], "front_desk");
    assert_eq!(created["staff"]["active"], true);

    // The same external_ref: an update.
    let by_ref = upsert_staff(
        &app,
        &business,
        json!({ "external_ref": "st-9", "name": "Cara B", "email": "cara@kappa.example", "role": "manager" }),
    )
    .await;
    assert_eq!(by_ref["created"], false, "{by_ref}");
    assert_eq!(by_ref["staff"]["id"], cara);
    assert_eq!(by_ref["staff"]["name"], "Cara B");
    assert_eq!(by_ref["staff"]["role"], "manager");

    // No external_ref, the same email (any case): an update that keeps the external_ref.
    let by_email =
        upsert_staff(&app, &business, json!({ "name": "Cara C", "email": "CARA@kappa.example", "role": "manager" }))
            .await;
    assert_eq!(by_email["created"], false, "{by_email}");
    assert_eq!(by_email["staff"]["id"], cara);
    assert_eq!(by_email["staff"]["name"], "Cara C");
    assert_eq!(by_email["staff"]["external_ref"], "st-9");

    let dan =
        upsert_staff(&app, &business, json!({ "name": "Dan", "email": "dan@kappa.example", "active": false })).await;
    assert_eq!(dan["created"], true, "{dan}");
    assert_eq!(dan["staff"]["active"], false);
    assert_eq!(dan["staff"]["role"], "staff");
    let dan = dan["staff"]["id"].as_u64().unwrap();

    // An invalid role or email: 422 naming the field, nothing written.
    for (body, field) in [
        (json!({ "name": "Eve", "email": "eve@kappa.example", "role": "front desk" }), "role"),
        (json!({ "name": "Eve", "email": "eve@" }), "email"),
        (json!({ "name": " ", "email": "eve@kappa.example" }), "name"),
    ] {
        let resp = app.post(&staffs_path(&business), &business.key, Some(body.clone())).await;
        let err = expect(resp, 422, &body.to_string()).await;
        assert_eq!(violation_fields(&err), vec![field], "{body}: {err}");
    }

    // Cara's external_ref with Ben's email: two staff members at once. A conflict, nothing
    // written.
    let resp = app
        .post(
            &staffs_path(&business),
            &business.key,
            Some(json!({ "external_ref": "st-9", "name": "Who", "email": "ben@kappa.example" })),
        )
        .await;
    let err = expect(resp, 409, "external_ref and email of two staff members").await;
    assert_eq!(err["code"], 6, "ALREADY_EXISTS: {err}");

    let path = staffs_path(&business);
    let all = get_ok(&app, &path, &business.key).await;
    assert_eq!(all["staff"][2]["name"], "Cara C", "{all}");
    assert_eq!(all["staff"][1]["email"], "ben@kappa.example", "{all}");
    let mut expected = business.staff_ids.clone();
    expected.extend([cara, dan]);
    assert_eq!(ids(&all, "staff"), expected, "id order: {all}");
    assert_eq!(all["total_size"], 4, "{all}");
    let inactive = get_ok(&app, &format!("{path}?active=false"), &business.key).await;
    assert_eq!(ids(&inactive, "staff"), vec![dan], "{inactive}");
    assert_eq!(inactive["total_size"], 1, "{inactive}");
    let active = get_ok(&app, &format!("{path}?active=true"), &business.key).await;
    assert_eq!(ids(&active, "staff"), expected[..3].to_vec(), "{active}");
    assert_eq!(active["total_size"], 3, "{active}");
    let page = get_ok(&app, &format!("{path}?page_size=3"), &business.key).await;
    assert_eq!(ids(&page, "staff"), expected[..3].to_vec(), "{page}");
    assert_eq!(page["total_size"], 4, "{page}");
    assert_ne!(page["next_page_token"], "", "{page}");
}

async fn staff_detail_counts_assigned_conversations(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("lambda", "+14155550100").await;
    let ana = business.staff_ids[0];
    let path = format!("{}/{ana}", staffs_path(&business));
    let detail = get_ok(&app, &path, &business.key).await;
    assert_eq!(detail["staff"]["id"], ana, "{detail}");
    assert_eq!(detail["staff"]["name"], "Ana");
    assert_eq!(detail["staff"]["role"], "manager");
    let counts = |detail: &Value| -> Vec<(String, u64)> {
        detail["assigned_counts"]
            .as_array()
            .unwrap_or_else(|| panic!("assigned_counts in {detail}"))
            .iter()
            .map(|c| {
                assert_eq!(c["label"].as_str().map(str::is_empty), Some(false), "{c}");
                (c["value"].as_str().unwrap().to_owned(), c["count"].as_u64().unwrap())
            })
            .collect()
    };
    let statuses = |open: u64| {
        vec![
            ("OPEN".to_owned(), open),
            ("PENDING".to_owned(), 0),
            ("SNOOZED".to_owned(), 0),
            ("RESOLVED".to_owned(), 0),
        ]
    };
    assert_eq!(counts(&detail), statuses(0), "{detail}");

    // A conversation assigned to Ana counts as OPEN for her only.
    let client = app.upsert_client(&business, json!({ "phone": "+14155550199", "name": "Carl" })).await;
    let conversation = app.conversation(&business, client).await;
    let assign =
        format!("{}/{client}/conversations/{conversation}/assignment?assigned_to={ana}", clients_path(&business));
    let resp = app.post(&assign, &business.key, None).await;
    expect(resp, 200, "assign").await;
    let detail = get_ok(&app, &path, &business.key).await;
    assert_eq!(counts(&detail), statuses(1), "{detail}");
    let ben = get_ok(&app, &format!("{}/{}", staffs_path(&business), business.staff_ids[1]), &business.key).await;
    assert_eq!(counts(&ben), statuses(0), "{ben}");

    // Unknown ids, and another business's staff on this business's path: 404.
    let other = app.onboard_simple("mu", "+14155550111").await;
    let resp = app.get(&format!("{}/999999", staffs_path(&business)), &business.key).await;
    expect_not_found(resp, "unknown staff", &[]).await;
    let resp = app.get(&format!("{}/{}", staffs_path(&business), other.staff_ids[0]), &business.key).await;
    expect_not_found(resp, "another business's staff id", &["ana@mu.example"]).await;
    let resp = app.get(&format!("{}/{}", staffs_path(&business), other.staff_ids[0]), &app.platform_key).await;
    expect_not_found(resp, "another business's staff id (platform)", &["ana@mu.example"]).await;
}

// ---- clients ----

async fn clients_upsert_by_identity_and_normalize(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("nu", "+14155550100").await;
    let created = upsert_client(
        &app,
        &business,
        json!({
            "external_ref": "c-1",
            "name": "Carl Jung",
            "phone": "415.555.0199",
            "email": "Carl@Example.COM",
            "sms_consent": true
        }),
    )
    .await;
    assert_eq!(created["created"], true, "{created}");
    let client = &created["client"];
    let id = client["id"].as_u64().unwrap();
    assert_eq!(client["phone"], "+14155550199");
    assert_eq!(client["email"], "carl@example.com");
    assert_eq!(client["external_ref"], "c-1");
    assert_eq!(client["sms_consent"], true);
    assert!(client["sms_consent_updated_at"].is_string(), "{client}");

    // By phone (another spelling): same client, name updated, the rest kept.
    let by_phone = upsert_client(&app, &business, json!({ "phone": "(415) 555-0199", "name": "Carl G. Jung" })).await;
    assert_eq!(by_phone["created"], false, "{by_phone}");
    assert_eq!(by_phone["client"]["id"], id);
    assert_eq!(by_phone["client"]["name"], "Carl G. Jung");
    assert_eq!(by_phone["client"]["email"], "carl@example.com");
    assert_eq!(by_phone["client"]["external_ref"], "c-1");
    assert_eq!(by_phone["client"]["sms_consent"], true, "kept when omitted");

    // By email (any case).
    let by_email = upsert_client(
        &app,
        &business,
        json!({ "email": "CARL@example.com", "name": "C. G. Jung", "sms_consent": false }),
    )
    .await;
    assert_eq!(by_email["created"], false, "{by_email}");
    assert_eq!(by_email["client"]["id"], id);
    assert_eq!(by_email["client"]["name"], "C. G. Jung");
    assert_eq!(by_email["client"]["sms_consent"], false);

    // By external_ref, which wins over a new phone: the phone moves.
    let by_ref =
        upsert_client(&app, &business, json!({ "external_ref": "c-1", "name": "Carl", "phone": "+1 415 555 0198" }))
            .await;
    assert_eq!(by_ref["created"], false, "{by_ref}");
    assert_eq!(by_ref["client"]["id"], id);
    assert_eq!(by_ref["client"]["phone"], "+14155550198");

    // A new identity is a new client; its name defaults to what identifies it.
    let other = upsert_client(&app, &business, json!({ "phone": "415 555 0199" })).await;
    assert_eq!(other["created"], true, "the old number is free again: {other}");
    assert_ne!(other["client"]["id"], id);
    assert_eq!(other["client"]["sms_consent"], false, "false for a new client");
    assert!(!other["client"]["name"].as_str().unwrap().is_empty(), "{other}");

    let list = get_ok(&app, &clients_path(&business), &business.key).await;
    assert_eq!(list["total_size"], 2, "{list}");
    assert_eq!(ids(&list, "clients"), vec![id, other["client"]["id"].as_u64().unwrap()]);
    let detail = get_ok(&app, &format!("{}/{id}", clients_path(&business)), &business.key).await;
    assert_eq!(detail["client"]["name"], "Carl", "{detail}");
    assert_eq!(detail["client"]["phone"], "+14155550198", "{detail}");
    assert_eq!(detail["client"]["email"], "carl@example.com", "{detail}");
}

async fn a_client_update_without_a_name_keeps_the_name(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("upsilon", "+14155550100").await;
    let id = app.upsert_client(&business, json!({ "name": "Uma Thurman", "phone": "+14155550199" })).await;
    // Syncing an identity without a name (e.g. adding the email) must not rename the client.
    // The fallback name (the phone) is only for new clients.
    let updated =
        upsert_client(&app, &business, json!({ "phone": "415-555-0199", "email": "uma@upsilon.example" })).await;
    assert_eq!(updated["created"], false, "{updated}");
    assert_eq!(updated["client"]["id"], id, "{updated}");
    assert_eq!(updated["client"]["email"], "uma@upsilon.example", "{updated}");
    assert_eq!(updated["client"]["name"], "Uma Thurman", "an omitted name is kept: {updated}");
    // A new client without a name is named after what identifies it.
    let fresh = upsert_client(&app, &business, json!({ "email": "Nameless@Upsilon.example" })).await;
    assert_eq!(fresh["created"], true, "{fresh}");
    assert_eq!(fresh["client"]["name"], "nameless@upsilon.example", "{fresh}");
}

async fn client_identity_conflicts_and_invalid_clients_are_422(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("xi", "+14155550100").await;
    let a = app
        .upsert_client(&business, json!({ "name": "Anna", "phone": "+14155550199", "email": "anna@xi.example" }))
        .await;
    let b = app
        .upsert_client(&business, json!({ "name": "Bert", "phone": "+14155550200", "email": "bert@xi.example" }))
        .await;

    // A's phone with B's email: which client is it? Refused, naming the field and the owner.
    let found =
        rejected_client(&app, &business, json!({ "name": "Mix", "phone": "415-555-0199", "email": "BERT@xi.example" }))
            .await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "email", "{found:?}");
    assert!(found[0].1.contains(&format!("already belongs to client {b}")), "{found:?}");

    // B's external_ref with A's phone: refused, naming the phone and A.
    app.upsert_client(&business, json!({ "external_ref": "ref-b", "name": "Bert", "phone": "+14155550200" })).await;
    let found = rejected_client(&app, &business, json!({ "external_ref": "ref-b", "phone": "+1 415 555 0199" })).await;
    assert_eq!(found, vec![("phone".to_owned(), format!("already belongs to client {a}"))]);

    // Nothing changed.
    let list = get_ok(&app, &clients_path(&business), &business.key).await;
    assert_eq!(list["total_size"], 2, "{list}");
    assert_eq!(ids(&list, "clients"), vec![a, b]);
    assert_eq!(list["clients"][0]["name"], "Anna");
    assert_eq!(list["clients"][0]["email"], "anna@xi.example");
    assert_eq!(list["clients"][1]["name"], "Bert");
    assert_eq!(list["clients"][1]["phone"], "+14155550200");
    assert_eq!(list["clients"][1]["external_ref"], "ref-b");

    // No identity at all.
    for body in
        [json!({ "name": "Nobody" }), json!({ "name": "Blank", "external_ref": " ", "phone": "", "email": "  " })]
    {
        let found = rejected_client(&app, &business, body.clone()).await;
        assert!(!found.is_empty(), "{body}");
        assert!(
            found.iter().any(|(_, d)| d.contains("external_ref") && d.contains("phone") && d.contains("email")),
            "{body}: {found:?}"
        );
    }
    // Invalid values, each named.
    for (body, field) in [
        (json!({ "name": "X", "phone": "abc" }), "phone"),
        (json!({ "name": "X", "phone": "+1 415 555 01" }), "phone"),
        (json!({ "name": "X", "email": "x@y" }), "email"),
        (json!({ "name": "X".repeat(201), "phone": "+14155550333" }), "name"),
    ] {
        let found = rejected_client(&app, &business, body.clone()).await;
        assert_eq!(found.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), vec![field], "{body}");
    }
    let list = get_ok(&app, &clients_path(&business), &business.key).await;
    assert_eq!(list["total_size"], 2, "nothing created: {list}");
}

async fn concurrent_client_upserts_make_one_client(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("omicron", "+14155550100").await;
    app.upsert_client(&business, json!({ "phone": "+14155550101", "name": "Existing" })).await;
    let body = json!({ "phone": "+1 (415) 555-0177", "name": "Racer" });
    let mut answers = Vec::new();
    for (status, text) in concurrently(&app, &clients_path(&business), &business.key, &body, 20).await {
        assert_eq!(status, 200, "concurrent upsert: {text}");
        answers.push(serde_json::from_str::<Value>(&text).unwrap());
    }
    let clients: HashSet<u64> = answers.iter().map(|a| a["client"]["id"].as_u64().unwrap()).collect();
    assert_eq!(clients.len(), 1, "one client: {clients:?}");
    let created = answers.iter().filter(|a| a["created"] == true).count();
    assert_eq!(created, 1, "exactly one call created it");
    let list = get_ok(&app, &format!("{}?query=5550177", clients_path(&business)), &business.key).await;
    assert_eq!(list["total_size"], 1, "{list}");
    let all = get_ok(&app, &clients_path(&business), &business.key).await;
    assert_eq!(all["total_size"], 2, "the existing client and the racer: {all}");
}

async fn clients_search_and_paginate(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("pi", "+14155550100").await;
    let mut made = Vec::new();
    for body in [
        json!({ "name": "Carl Sagan", "phone": "+14155550101" }),
        json!({ "name": "Ada", "email": "McCarley@Mail.example" }),
        json!({ "name": "CARLOTTA", "phone": "+14155550102" }),
        json!({ "name": "Bob", "phone": "+14155550103" }),
        json!({ "name": "Eve", "email": "eve@mail.example" }),
    ] {
        made.push(app.upsert_client(&business, body).await);
    }
    let path = clients_path(&business);
    for query in ["carl", "CARL", "Carl"] {
        let found = get_ok(&app, &format!("{path}?query={query}"), &business.key).await;
        assert_eq!(ids(&found, "clients"), vec![made[0], made[1], made[2]], "name or email contains {query}: {found}");
        assert_eq!(found["total_size"], 3, "{found}");
    }
    let by_phone = get_ok(&app, &format!("{path}?query=5550103"), &business.key).await;
    assert_eq!(ids(&by_phone, "clients"), vec![made[3]], "{by_phone}");
    let by_email = get_ok(&app, &format!("{path}?query=MAIL.EXAMPLE"), &business.key).await;
    assert_eq!(ids(&by_email, "clients"), vec![made[1], made[4]], "{by_email}");
    let none = get_ok(&app, &format!("{path}?query=zzz"), &business.key).await;
    assert_eq!(none["total_size"], 0, "{none}");
    assert_eq!(none["clients"], json!([]), "{none}");

    // A search is paginated like the list.
    let first = get_ok(&app, &format!("{path}?query=carl&page_size=2"), &business.key).await;
    assert_eq!(ids(&first, "clients"), vec![made[0], made[1]], "{first}");
    let token = first["next_page_token"].as_str().unwrap();
    let second = get_ok(&app, &format!("{path}?query=carl&page_size=2&page_token={token}"), &business.key).await;
    assert_eq!(ids(&second, "clients"), vec![made[2]], "{second}");
    assert_eq!(second["next_page_token"], "", "{second}");

    // The whole list, two at a time.
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = get_ok(&app, &format!("{path}?page_size=2&page_token={token}"), &business.key).await;
        assert_eq!(page["total_size"], 5, "{page}");
        let page_ids = ids(&page, "clients");
        assert!(page_ids.len() <= 2, "{page}");
        seen.extend(page_ids);
        pages += 1;
        token = page["next_page_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, made, "every client once, in id order");

    for query in ["?page_size=201", "?page_token=garbage!"] {
        let resp = app.get(&format!("{path}{query}"), &business.key).await;
        expect(resp, 422, query).await;
    }
}

async fn client_search_treats_wildcards_literally(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("psi", "+14155550100").await;
    let bob = app.upsert_client(&business, json!({ "name": "Bob", "phone": "+14155550301" })).await;
    let underscore = app.upsert_client(&business, json!({ "name": "Ann", "email": "ann_lee@psi.example" })).await;
    let percent = app.upsert_client(&business, json!({ "name": "100% Cotton", "phone": "+14155550303" })).await;
    let path = clients_path(&business);
    let found = get_ok(&app, &format!("{path}?query=bob"), &business.key).await;
    assert_eq!(ids(&found, "clients"), vec![bob], "{found}");
    // LIKE wildcards in the query are literal characters.
    for (query, expected) in [("_", vec![underscore]), ("%25", vec![percent]), ("a_n", vec![])] {
        let found = get_ok(&app, &format!("{path}?query={query}"), &business.key).await;
        assert_eq!(ids(&found, "clients"), expected, "query {query:?} is a literal substring: {found}");
    }
}

async fn client_detail_shows_its_conversation_once_it_exists(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("rho", "+14155550100").await;
    let client = app
        .upsert_client(&business, json!({ "name": "Rita", "phone": "+14155550199", "email": "rita@rho.example" }))
        .await;
    let path = format!("{}/{client}", clients_path(&business));
    let detail = get_ok(&app, &path, &business.key).await;
    assert_eq!(detail["client"]["id"], client, "{detail}");
    assert_eq!(detail["client"]["name"], "Rita");
    assert_eq!(detail["client"]["phone"], "+14155550199");
    assert!(detail.get("conversation").is_none(), "no conversation yet: {detail}");

    let conversation = app.conversation(&business, client).await;
    let detail = get_ok(&app, &path, &business.key).await;
    let summary = &detail["conversation"];
    assert_eq!(summary["conversation_id"], conversation, "{detail}");
    assert_eq!(summary["client_id"], client, "{detail}");
    assert_eq!(summary["client_name"], "Rita", "{detail}");
    assert_eq!(summary["status"], "OPEN", "{detail}");
    assert_eq!(summary["unread_count"], 0, "{detail}");
    assert_eq!(app.conversation(&business, client).await, conversation, "one conversation per client");

    let resp = app.get(&format!("{}/999999", clients_path(&business)), &business.key).await;
    expect_not_found(resp, "unknown client", &[]).await;
    let resp = app.get(&format!("{}/abc", clients_path(&business)), &business.key).await;
    expect(resp, 422, "non-numeric client id").await;
}

// ---- tenant isolation ----

async fn business_keys_see_only_their_own_business(db: Db) {
    let app = spawn_app(db).await;
    let a = app.onboard_simple("sigma", "+14155550100").await;
    let b = app.onboard_simple("tau", "+14155550200").await;
    let a_client = app
        .upsert_client(&a, json!({ "name": "Secret Sam", "phone": "+14155550199", "email": "sam@private.example" }))
        .await;
    let b_client = app.upsert_client(&b, json!({ "name": "Tina", "phone": "+14155550299" })).await;
    let secrets = ["Secret Sam", "+14155550199", "sam@private.example", "ana@sigma.example", "Main"];

    let a_id = a.id;
    for path in [
        format!("/omega/businesses/{a_id}/locations"),
        format!("/omega/businesses/{a_id}/clients"),
        format!("/omega/businesses/{a_id}/clients?query=sam"),
        format!("/omega/businesses/{a_id}/clients/{a_client}"),
        format!("/omega/businesses/{a_id}/staffs"),
        format!("/omega/businesses/{a_id}/staffs/{}", a.staff_ids[0]),
        format!("/omega/business/{a_id}/onboarding-status"),
    ] {
        let resp = app.get(&path, &b.key).await;
        expect_not_found(resp, &format!("B's key on GET {path}"), &secrets).await;
    }
    for (path, body) in [
        (format!("/omega/businesses/{a_id}/locations"), json!({ "external_ref": "evil", "name": "Evil" })),
        (format!("/omega/businesses/{a_id}/clients"), json!({ "phone": "+14155550199", "name": "Hijacked" })),
        (format!("/omega/businesses/{a_id}/staffs"), json!({ "email": "ana@sigma.example", "name": "Hijacked" })),
    ] {
        let resp = app.post(&path, &b.key, Some(body)).await;
        expect_not_found(resp, &format!("B's key on POST {path}"), &secrets).await;
    }
    // A's client id on B's own path is not B's either.
    let resp = app.get(&format!("/omega/businesses/{}/clients/{a_client}", b.id), &b.key).await;
    expect_not_found(resp, "A's client on B's path", &secrets).await;

    // A's data is untouched, and visible to A and to the platform.
    for key in [a.key.as_str(), app.platform_key.as_str()] {
        let clients = get_ok(&app, &format!("/omega/businesses/{a_id}/clients"), key).await;
        assert_eq!(ids(&clients, "clients"), vec![a_client], "{clients}");
        assert_eq!(clients["clients"][0]["name"], "Secret Sam", "{clients}");
        let staff = get_ok(&app, &format!("/omega/businesses/{a_id}/staffs"), key).await;
        assert_eq!(staff["total_size"], 2, "{staff}");
        assert_eq!(staff["staff"][0]["name"], "Ana", "{staff}");
        let locations = get_ok(&app, &format!("/omega/businesses/{a_id}/locations"), key).await;
        assert_eq!(ids(&locations, "locations"), a.location_ids, "{locations}");
    }
    // The platform key reads B as well; B reads itself.
    for key in [b.key.as_str(), app.platform_key.as_str()] {
        let clients = get_ok(&app, &format!("/omega/businesses/{}/clients", b.id), key).await;
        assert_eq!(ids(&clients, "clients"), vec![b_client], "{clients}");
        let detail = get_ok(&app, &format!("/omega/businesses/{}/clients/{b_client}", b.id), key).await;
        assert_eq!(detail["client"]["name"], "Tina", "{detail}");
    }
    // A business that does not exist looks the same as another business's.
    let resp = app.get("/omega/businesses/999999/clients", &b.key).await;
    expect_not_found(resp, "unknown business (business key)", &[]).await;
    let resp = app.get("/omega/businesses/999999/clients", &app.platform_key).await;
    expect_not_found(resp, "unknown business (platform key)", &[]).await;
    // No key at all.
    let resp = app.get(&format!("/omega/businesses/{a_id}/clients"), "").await;
    expect(resp, 401, "no key").await;
}

async fn updates_keep_the_fields_they_omit(db: Db) {
    let app = spawn_app(db).await;
    let business = app.onboard_simple("keep", "+14155550100").await;
    let first = post_ok(
        &app,
        &locations_path(&business),
        &business.key,
        json!({ "external_ref": "loc-k", "name": "Kept", "time_zone": "Europe/London", "email_sender": "k@keep.example", "phone_numbers": ["+14155550150"] }),
    )
    .await;
    let renamed =
        post_ok(&app, &locations_path(&business), &business.key, json!({ "external_ref": "loc-k", "name": "Renamed" }))
            .await;
    let location = &renamed["location"];
    assert_eq!(location["id"], first["location"]["id"]);
    assert_eq!(location["name"], "Renamed");
    assert_eq!(location["time_zone"], "Europe/London", "{renamed}");
    assert_eq!(location["email_sender"], "k@keep.example", "{renamed}");
    assert_eq!(location["phone_numbers"], json!(["+14155550150"]), "{renamed}");

    let staff = upsert_staff(&app, &business, json!({ "external_ref": "st-k", "name": "Kim", "email": "kim@keep.example", "role": "manager", "active": false })).await;
    let updated = upsert_staff(&app, &business, json!({ "external_ref": "st-k", "name": "Kim Lee" })).await;
    assert_eq!(updated["staff"]["id"], staff["staff"]["id"]);
    assert_eq!(updated["staff"]["name"], "Kim Lee");
    assert_eq!(updated["staff"]["email"], "kim@keep.example", "{updated}");
    assert_eq!(updated["staff"]["role"], "manager", "{updated}");
    assert_eq!(updated["staff"]["active"], false, "{updated}");
}
