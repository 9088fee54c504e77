//! The `omega` binary's commands: migrate, keys, descriptor, envoy-config (validated by the real
//! Envoy), and `serve`'s start-up checks and graceful shutdown.

use crate::common;

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::{envoy_binary, start_omega, test_key};
use prost::Message;

fn omega(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_omega"))
        .args(args)
        .current_dir(dir)
        .env_remove("OMEGA_DATABASE_URL")
        .output()
        .expect("run omega")
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn keys_are_created_listed_and_revoked_on_the_default_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let key = stdout(&omega(dir.path(), &["keys", "create", "--label", "operator"])).trim().to_owned();
    assert!(key.starts_with("omk_") && key.len() == 44, "{key}");
    // The embedded default: a SQLite file under ./data/.
    assert!(dir.path().join("data/omega.db").exists());

    let listing = stdout(&omega(dir.path(), &["keys", "list"]));
    assert!(listing.contains(&key[..12]) && listing.contains("operator") && listing.contains("platform"), "{listing}");
    assert!(!listing.contains(&key), "the secret must never be listed");

    // Keys for a business that does not exist are refused.
    let refused = omega(dir.path(), &["keys", "create", "--label", "x", "--business-id", "7"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("business 7 not found"));

    stdout(&omega(dir.path(), &["keys", "revoke", "1"]));
    let listing = stdout(&omega(dir.path(), &["keys", "list"]));
    let row: Vec<&str> = listing.lines().find(|l| l.contains("operator")).unwrap().split_whitespace().collect();
    // id, prefix, scope, created, last used, revoked, label
    assert_eq!(row[2], "platform");
    assert!(row[5].starts_with("20"), "revoked date shown: {row:?}");
    assert!(!omega(dir.path(), &["keys", "revoke", "1"]).status.success());
}

#[test]
fn migrate_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/x.db?mode=rwc", dir.path().display());
    for _ in 0..2 {
        stdout(&omega(dir.path(), &["migrate", "--database-url", &url]));
    }
}

#[test]
fn descriptor_holds_every_service_with_its_rest_bindings() {
    let dir = tempfile::tempdir().unwrap();
    let services = stdout(&omega(dir.path(), &["descriptor", "--services"]));
    assert_eq!(
        services.lines().collect::<Vec<_>>(),
        [
            "omega.v1.ApiKeyService",
            "omega.v1.AttachmentService",
            "omega.v1.AuthService",
            "omega.v1.ChatService",
            "omega.v1.ClientService",
            "omega.v1.ConversationService",
            "omega.v1.DocsService",
            "omega.v1.EmailService",
            "omega.v1.EventService",
            "omega.v1.HealthService",
            "omega.v1.InboundEmailService",
            "omega.v1.InboxService",
            "omega.v1.LocationService",
            "omega.v1.MessageService",
            "omega.v1.OnboardingService",
            "omega.v1.ProviderService",
            "omega.v1.SessionService",
            "omega.v1.SmsService",
            "omega.v1.StaffService",
            "omega.v1.VoiceService",
            "omega.v1.WebhookEndpointService",
            "omega.v1.WebhookService",
        ]
    );

    let out = dir.path().join("omega.pb");
    stdout(&omega(dir.path(), &["descriptor", "--out", out.to_str().unwrap()]));
    let set = prost_types::FileDescriptorSet::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
    let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    for needed in [
        "omega/v1/health.proto",
        "google/api/annotations.proto",
        "google/rpc/error_details.proto",
        "google/protobuf/descriptor.proto",
    ] {
        assert!(names.contains(&needed), "{needed} missing from {names:?}");
    }
    let health = set.file.iter().find(|f| f.name() == "omega/v1/health.proto").unwrap();
    assert!(health.source_code_info.is_some(), "source info is included");
    // No proto maps in the API: Envoy 1.40's transcoder crashes (SIGSEGV) printing a response
    // that has one, taking every REST call down with it.
    for file in set.file.iter().filter(|f| f.package() == "omega.v1") {
        for message in &file.message_type {
            let maps: Vec<&str> = message
                .nested_type
                .iter()
                .filter(|n| n.options.as_ref().is_some_and(|o| o.map_entry()))
                .map(|n| n.name())
                .collect();
            assert!(maps.is_empty(), "{}.{} has map fields {maps:?}", file.name(), message.name());
        }
    }
    // The google.api.http options (which prost-types cannot decode) survive in the raw bytes.
    let raw = std::fs::read(&out).unwrap();
    assert!(raw.windows(b"/health/db".len()).any(|w| w == b"/health/db"), "REST path in the descriptor");
}

#[test]
fn the_shipped_envoy_config_validates() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("envoy");
    let config = stdout(&omega(
        std::path::Path::new(common::MANIFEST_DIR),
        &["envoy-config", "--out-dir", out_dir.to_str().unwrap(), "--listen-port", "18080", "--admin-port", "19901"],
    ));
    let output = Command::new(envoy_binary())
        .args(["--mode", "validate", "--use-dynamic-base-id", "-c", config.trim()])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("OK"), "{log}");
}

#[tokio::test]
async fn serve_refuses_a_weak_bootstrap_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_omega"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("OMEGA_DATABASE_URL", format!("sqlite://{}/x.db?mode=rwc", dir.path().display()))
        .env("OMEGA_BOOTSTRAP_API_KEY", "short")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OMEGA_BOOTSTRAP_API_KEY"), "{stderr}");
    assert!(!stderr.contains("short\""), "the key itself is not echoed: {stderr}");
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_with_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/x.db?mode=rwc", dir.path().display());
    let key = test_key();
    let (mut process, addr) = start_omega(dir.path(), &url, &key, &[("OMEGA_LOG_FORMAT", "json")]).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());

    let pid = process.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "omega ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let log = process.log_text();
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    assert!(lines.iter().any(|l| l["message"] == "omega stopped"), "{log}");
    assert!(!log.contains(&key), "the bootstrap key must not be logged");
}

#[test]
fn openapi_is_generated_from_the_protos() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("openapi.json");
    stdout(&omega(dir.path(), &["openapi", "--out", out.to_str().unwrap()]));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    // The legacy REST API's documented endpoints, under the public base path.
    for (path, verb) in [
        ("/omega/businesses/{business_id}/clients/{client_id}/conversation", "post"),
        ("/omega/businesses/{business_id}/clients/{client_id}/conversations/{conversation_id}/assignment", "post"),
        ("/omega/health/db", "get"),
        ("/omega/twilio/sms/incoming", "post"),
    ] {
        assert!(paths[path][verb].is_object(), "{verb} {path} missing");
    }
}
