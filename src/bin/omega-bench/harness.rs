//! The real things a benchmark runs against: a fresh database, the `omega` binary as a child
//! process, Envoy with the project's own config, and a Twilio stand-in on loopback.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use omega::envoy::{EnvoyParams, write_config};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tonic::transport::Channel;

/// The platform key every benchmark server is bootstrapped with.
pub const KEY: &str = "omk_benchbenchbenchbenchbenchbench0001";
pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// A database made for one benchmark run; a PostgreSQL one is dropped again by `drop_now`.
pub struct BenchDb {
    pub backend: Backend,
    pub url: String,
    admin: Option<(String, String)>,
}

impl BenchDb {
    pub async fn fresh(backend: Backend, dir: &Path, postgres_url: &str) -> anyhow::Result<Self> {
        match backend {
            Backend::Sqlite => {
                Ok(Self { backend, url: format!("sqlite://{}/bench.db?mode=rwc", dir.display()), admin: None })
            }
            Backend::Postgres => {
                let name = format!("omega_bench_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(postgres_url).await.context("connect to PostgreSQL")?;
                admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await?;
                admin.close().await?;
                let base = postgres_url.rsplit_once('/').map_or(postgres_url, |(b, _)| b);
                let url = loopback_plaintext(backend, format!("{base}/{name}"));
                Ok(Self { backend, url, admin: Some((postgres_url.to_owned(), name)) })
            }
        }
    }

    /// An existing database (a dataset kept by an earlier run with `--keep`).
    pub fn existing(backend: Backend, url: String) -> Self {
        Self { backend, url: loopback_plaintext(backend, url), admin: None }
    }

    /// Keeps the database after the run (a kept SQLite file must live outside the temp dir).
    pub fn keep(&mut self) {
        self.admin = None;
    }

    pub async fn connect(&self) -> anyhow::Result<DatabaseConnection> {
        Ok(Database::connect(&self.url).await?)
    }

    /// Drops a PostgreSQL database (a SQLite file goes with its temp dir).
    pub async fn drop_now(self) -> anyhow::Result<()> {
        if let Some((admin_url, name)) = &self.admin {
            let admin = Database::connect(admin_url).await?;
            admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
            admin.close().await?;
        }
        Ok(())
    }
}

/// PostgreSQL on loopback without TLS (unless the URL says otherwise): the driver's TLS
/// handshake costs ~45 ms per new connection here, which would be measured as Omega's start.
fn loopback_plaintext(backend: Backend, url: String) -> String {
    if backend == Backend::Postgres && !url.contains('?') && url.contains("127.0.0.1") {
        format!("{url}?sslmode=disable")
    } else {
        url
    }
}

/// A child process, killed when dropped.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ensure_alive(&mut self, what: &str) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("{what} exited ({status}); its log:\n{}", self.log_text());
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident set size of a process in bytes: (current, peak), from /proc.
pub fn rss(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
    };
    Ok((field("VmRSS:").context("VmRSS")?, field("VmHWM:").context("VmHWM")?))
}

/// A running `omega serve`: its process, gRPC address and how long it took to serve.
pub struct Omega {
    pub process: Process,
    pub addr: SocketAddr,
    pub started_in: Duration,
}

impl Omega {
    /// Stops the server as an operator would (SIGTERM), so that delivery workers record the
    /// batch in hand; killing it would leave those sends ambiguous for the next run to settle.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.process.pid().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status()?;
        let started = Instant::now();
        while self.process.child.try_wait()?.is_none() {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "omega did not stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// The `omega` binary built beside this one (`cargo build --release --bins`).
pub fn omega_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name("omega");
    anyhow::ensure!(path.exists(), "{} is missing: build it with `cargo build --release --bins`", path.display());
    Ok(path)
}

/// Settings the benchmark passes from its own environment to the servers it starts.
const TUNING_PASSED_THROUGH: [&str; 2] = ["OMEGA_DELIVERY_CONCURRENCY", "OMEGA_DELIVERY_BATCH"];

/// Starts `omega serve` on a random loopback port with `env` on top of quiet defaults; answers
/// once its address file says it is serving (start time = spawn → address file).
pub async fn start_omega(dir: &Path, database_url: &str, env: &[(&str, String)]) -> anyhow::Result<Omega> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let address_file = dir.join(format!("omega-{id}.addr"));
    let log = dir.join(format!("omega-{id}.log"));
    let mut command = Command::new(omega_binary()?);
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OMEGA_LISTEN_ADDR", "127.0.0.1:0")
        // The benchmark holds no websockets; several replicas would meet on the default port.
        .env("OMEGA_CABLE_LISTEN_ADDR", "off")
        .env("OMEGA_ADDRESS_FILE", &address_file)
        .env("OMEGA_DATABASE_URL", database_url)
        .env("OMEGA_BOOTSTRAP_API_KEY", KEY)
        .env("OMEGA_LOG", "warn")
        // Nothing routes around a stopping benchmark server: no drain on SIGTERM.
        .env("OMEGA_DRAIN_SECS", "0")
        .env("OMEGA_AUTH_FAILURES_PER_MINUTE", "100000")
        .env("OMEGA_DELIVERY_WORKERS", "0")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    // Delivery tuning given to the benchmark itself reaches every server it starts, so a setting
    // can be measured against the default without a rebuild; the phases' own settings win.
    for name in TUNING_PASSED_THROUGH {
        if let Ok(value) = std::env::var(name) {
            command.env(name, value);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let started = Instant::now();
    let mut process = Process { child: command.spawn().context("start omega")?, log };
    loop {
        if let Ok(text) = std::fs::read_to_string(&address_file)
            && let Ok(addr) = text.trim().parse()
        {
            return Ok(Omega { process, addr, started_in: started.elapsed() });
        }
        process.ensure_alive("omega")?;
        anyhow::ensure!(started.elapsed() < Duration::from_secs(300), "omega did not start:\n{}", process.log_text());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The Envoy binary: `OMEGA_TEST_ENVOY`, else the project's `.venv`, else `envoy` on PATH.
pub fn envoy_binary() -> PathBuf {
    if let Ok(path) = std::env::var("OMEGA_TEST_ENVOY") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/envoy");
    if venv.exists() { venv } else { PathBuf::from("envoy") }
}

/// Envoy with the project's `envoy/envoy.yaml`, in front of `upstream`: (process, listener).
pub async fn start_envoy(dir: &Path, upstream: SocketAddr) -> anyhow::Result<(Process, SocketAddr)> {
    start_envoy_for(dir, &[upstream]).await
}

/// `start_envoy` in front of several replicas (one cluster); answers once each passed Envoy's
/// health check.
pub async fn start_envoy_for(dir: &Path, upstreams: &[SocketAddr]) -> anyhow::Result<(Process, SocketAddr)> {
    let out_dir = dir.join(format!("envoy-{}", uuid::Uuid::new_v4().simple()));
    let params = EnvoyParams::new(upstreams.iter().map(ToString::to_string).collect());
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/envoy.yaml");
    let config = write_config(&template, &out_dir, &params)?;
    add_floor_route(&config)?;
    let admin_file = out_dir.join("admin.addr");
    let log = out_dir.join("envoy.log");
    let child = Command::new(envoy_binary())
        .arg("-c")
        .arg(&config)
        .args(["--use-dynamic-base-id", "--log-level", "error", "--concurrency", "1", "--admin-address-path"])
        .arg(&admin_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("start envoy (run scripts/ensure-tools.sh first)")?;
    let mut process = Process { child, log };
    let http = http_client();
    let started = Instant::now();
    loop {
        process.ensure_alive("envoy")?;
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "envoy did not start:\n{}", process.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Some(admin) = std::fs::read_to_string(&admin_file).ok().and_then(|a| a.trim().parse::<SocketAddr>().ok())
        else {
            continue;
        };
        let Ok(resp) = http.get(format!("http://{admin}/listeners?format=json")).send().await else {
            continue;
        };
        let Ok(listeners) = resp.json::<serde_json::Value>().await else {
            continue;
        };
        let port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"].as_u64();
        let Some(port) = port.filter(|p| *p != 0) else {
            continue;
        };
        let clusters = http.get(format!("http://{admin}/clusters")).send().await?.text().await?;
        if clusters.matches("::health_flags::healthy").count() == upstreams.len() {
            return Ok((process, SocketAddr::from(([127, 0, 0, 1], port as u16))));
        }
    }
}

/// The path of a route the benchmark adds to its own copy of the Envoy config, answered by Envoy
/// itself (`direct_response`, no filter of the project's, no upstream): Envoy's floor in P5.
pub const ENVOY_FLOOR_PATH: &str = "/bench/envoy-floor";

/// Adds the floor route first in the virtual host's routes (before `/cable`, the first one).
fn add_floor_route(config: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)?;
    let first = "- match: { path: \"/cable\" }";
    let at = text.find(first).context("the Envoy config's /cable route (where the floor route goes)")?;
    let indent = &text[text[..at].rfind('\n').map_or(0, |n| n + 1)..at];
    let route = [
        format!("- match: {{ path: \"{ENVOY_FLOOR_PATH}\" }}"),
        "  direct_response: { status: 200, body: { inline_string: \"ok\" } }".to_owned(),
        "  typed_per_filter_config:".to_owned(),
        "    envoy.filters.http.lua:".to_owned(),
        "      \"@type\": type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute".to_owned(),
        "      disabled: true".to_owned(),
        "    envoy.filters.http.grpc_json_transcoder:".to_owned(),
        "      \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig".to_owned(),
        "      disabled: true".to_owned(),
    ]
    .iter()
    .map(|line| format!("{line}\n{indent}"))
    .collect::<String>();
    std::fs::write(config, format!("{}{route}{}", &text[..at], &text[at..]))?;
    Ok(())
}

pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("http client")
}

pub async fn grpc_channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?)
}

/// A gRPC request carrying the platform key.
pub fn keyed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-api-key", KEY.parse().expect("ascii"));
    request
}

/// What the Twilio stand-in received from each sender (a message's `From`): how many messages,
/// and when the first and the last arrived.
#[derive(Default)]
pub struct SenderLog(std::sync::Mutex<std::collections::HashMap<String, (u64, Instant, Instant)>>);

impl SenderLog {
    fn record(&self, from: String) {
        let now = Instant::now();
        let mut senders = self.0.lock().expect("sender log");
        let entry = senders.entry(from).or_insert((0, now, now));
        entry.0 += 1;
        entry.2 = now;
    }

    pub fn clear(&self) {
        self.0.lock().expect("sender log").clear();
    }

    /// (sender, messages, first arrival, last arrival), by sender.
    pub fn senders(&self) -> Vec<(String, u64, Instant, Instant)> {
        let mut senders: Vec<_> =
            self.0.lock().expect("sender log").iter().map(|(k, v)| (k.clone(), v.0, v.1, v.2)).collect();
        senders.sort();
        senders
    }
}

/// A Twilio stand-in that accepts every message at once (201 + a message JSON); counts them,
/// and logs each sender's.
pub async fn start_fake_twilio() -> anyhow::Result<(SocketAddr, Arc<AtomicU64>, Arc<SenderLog>)> {
    let log = Arc::new(SenderLog::default());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    // Message SIDs unique across runs too: a kept dataset already holds the last run's.
    let run: Arc<str> = uuid::Uuid::new_v4().simple().to_string()[..8].into();
    let senders = log.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            let senders = senders.clone();
            let run = run.clone();
            tokio::spawn(async move {
                let _ = socket.set_nodelay(true);
                let mut buf = Vec::with_capacity(4096);
                loop {
                    // One request: headers, then Content-Length bytes.
                    let head_end = loop {
                        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break pos + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let from = form_urlencoded::parse(&buf[head_end..head_end + length])
                        .find(|(name, _)| name == "From" || name == "MessagingServiceSid")
                        .map_or_else(|| "(none)".to_owned(), |(_, value)| value.into_owned());
                    senders.record(from);
                    buf.drain(..head_end + length);
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let body = format!(
                        r#"{{"sid":"SM{run}{n:024x}","status":"queued","error_code":null,"error_message":null}}"#
                    );
                    let response = format!(
                        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, count, log))
}
