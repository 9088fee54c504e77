//! Two replicas on one PostgreSQL database behind the project's Envoy, under a steady mixed load
//! of REST and gRPC calls (reads, idempotent writes and plain writes). A replica killed with
//! SIGKILL fails no call Envoy may send again and no call that had not reached it yet; a
//! replica restarted with SIGTERM fails none at all.

use crate::common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use common::{Db, Process, TestApp, TestBusiness, TestDatabase, eventually, start_envoy_with, start_omega, with_key};
use omega::{
    envoy::EnvoyParams,
    proto::omega::v1::{
        AddNoteRequest, ClientInput, GetHealthRequest, ListClientsRequest, UpsertClientRequest,
        client_service_client::ClientServiceClient, conversation_service_client::ConversationServiceClient,
        health_service_client::HealthServiceClient,
    },
};
use serde_json::json;

/// Callers running at once; each has at most one call in flight.
const WORKERS: usize = 6;

/// A port free right now, for a replica that must come back on the same address.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

struct Cluster {
    /// Replica 0 is `app.omega`; `app` also holds Envoy, the database and the directory.
    app: TestApp,
    other: Process,
    addrs: [SocketAddr; 2],
    env: Vec<(String, String)>,
    business: TestBusiness,
    client: u64,
    conversation: u64,
}

impl Cluster {
    async fn start(drain_secs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDatabase::create(Db::Postgres, dir.path()).await;
        let platform_key = common::test_key();
        let addrs = [free_port(), free_port()];
        let env: Vec<(String, String)> =
            vec![("OMEGA_DELIVERY_WORKERS".into(), "0".into()), ("OMEGA_DRAIN_SECS".into(), drain_secs.to_string())];
        let replica_env = |addr: SocketAddr| {
            let mut env = env.clone();
            env.push(("OMEGA_LISTEN_ADDR".into(), addr.to_string()));
            env
        };
        // One after the other: the first applies the migrations.
        let (first, _) = start_replica(dir.path(), &db.url, &platform_key, &replica_env(addrs[0])).await;
        let (other, _) = start_replica(dir.path(), &db.url, &platform_key, &replica_env(addrs[1])).await;
        let params = EnvoyParams::new(addrs.iter().map(ToString::to_string).collect());
        let (envoy, envoy_addr, envoy_admin) = start_envoy_with(dir.path(), &params).await;
        let app = TestApp {
            grpc_addr: addrs[0],
            envoy_addr,
            envoy_admin,
            platform_key,
            http: common::http_client(),
            env: env.clone(),
            envoy,
            omega: first,
            db,
            dir,
        };
        let cluster = Self { app, other, addrs, env, business: placeholder_business(), client: 0, conversation: 0 };
        for addr in addrs {
            cluster.wait_until(addr, "healthy", |flags| flags == "healthy").await;
        }
        let business = cluster.app.onboard_simple("replicas", "+14155550100").await;
        let client = cluster.app.upsert_client(&business, json!({ "name": "Rita", "phone": "+14155550123" })).await;
        let conversation = cluster.app.conversation(&business, client).await;
        Self { business, client, conversation, ..cluster }
    }

    fn replica(&mut self, i: usize) -> &mut Process {
        if i == 0 { &mut self.app.omega } else { &mut self.other }
    }

    /// Envoy's view of the cluster's hosts (`/clusters`): stat name → value, per host.
    async fn hosts(&self) -> HashMap<SocketAddr, HashMap<String, String>> {
        let url = format!("http://{}/clusters", self.app.envoy_admin);
        let text = self.app.http.get(url).send().await.unwrap().text().await.unwrap();
        let mut hosts: HashMap<SocketAddr, HashMap<String, String>> = HashMap::new();
        for line in text.lines() {
            let mut parts = line.splitn(4, "::");
            let (Some("omega"), Some(host), Some(stat), Some(value)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if let Ok(host) = host.parse() {
                hosts.entry(host).or_default().insert(stat.to_owned(), value.to_owned());
            }
        }
        hosts
    }

    /// Envoy's retries towards the cluster: (sent again, of which succeeded).
    async fn retries(&self) -> (u64, u64) {
        let url = format!("http://{}/stats?filter=upstream_rq_retry", self.app.envoy_admin);
        let text = self.app.http.get(url).send().await.unwrap().text().await.unwrap();
        let stat = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("cluster.omega.{name}: ")))
                .map_or(0, |v| v.parse().unwrap())
        };
        (stat("upstream_rq_retry"), stat("upstream_rq_retry_success"))
    }

    async fn requests_per_replica(&self) -> Vec<u64> {
        let hosts = self.hosts().await;
        self.addrs.iter().map(|a| hosts[a]["rq_total"].parse().unwrap()).collect()
    }

    /// Waits (up to 20 s) until `addr`'s health flags in Envoy satisfy `check`; answers how long.
    async fn wait_until(&self, addr: SocketAddr, what: &str, check: impl Fn(&str) -> bool) -> Duration {
        let started = Instant::now();
        eventually(Duration::from_secs(20), &format!("{addr} {what} in Envoy"), || async {
            self.hosts().await.get(&addr).and_then(|h| h.get("health_flags")).is_some_and(|f| check(f))
        })
        .await;
        started.elapsed()
    }

    fn load(&self) -> Load {
        Load {
            base: format!("http://{}", self.app.envoy_addr),
            http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap(),
            business_id: self.business.id as u32,
            key: self.business.key.clone(),
            staff: self.business.staff_ids[0] as u32,
            client: self.client as u32,
            conversation: self.conversation as u32,
        }
    }
}

async fn start_replica(dir: &std::path::Path, url: &str, key: &str, env: &[(String, String)]) -> (Process, SocketAddr) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    start_omega(dir, url, key, &env).await
}

fn placeholder_business() -> TestBusiness {
    TestBusiness { id: 0, key: String::new(), location_ids: Vec::new(), staff_ids: Vec::new() }
}

/// What one call of the load did.
#[derive(Debug)]
struct Outcome {
    call: &'static str,
    /// Envoy may send it again (a read, or a write the proto declares idempotent).
    retry_safe: bool,
    started: Instant,
    error: Option<String>,
}

/// A steady mix of calls through Envoy, REST and gRPC.
#[derive(Clone)]
struct Load {
    base: String,
    http: reqwest::Client,
    business_id: u32,
    key: String,
    staff: u32,
    client: u32,
    conversation: u32,
}

impl Load {
    /// Runs `WORKERS` callers until `stop` turns true; answers every call's outcome.
    fn spawn(&self, stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<Vec<Outcome>> {
        let load = self.clone();
        tokio::spawn(async move {
            let channel = tonic::transport::Channel::from_shared(load.base.clone()).unwrap().connect().await.unwrap();
            let workers = (0..WORKERS).map(|worker| {
                let (load, channel, stop) = (load.clone(), channel.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    let mut i = 0usize;
                    while !*stop.borrow() {
                        let started = Instant::now();
                        let (call, retry_safe, result) = load.call(worker, i, channel.clone()).await;
                        outcomes.push(Outcome { call, retry_safe, started, error: result.err() });
                        i += 1;
                    }
                    outcomes
                })
            });
            let mut all = Vec::new();
            for outcomes in futures_util::future::join_all(workers).await {
                all.extend(outcomes.unwrap());
            }
            all
        })
    }

    async fn call(
        &self,
        worker: usize,
        i: usize,
        channel: tonic::transport::Channel,
    ) -> (&'static str, bool, Result<(), String>) {
        let (b, key) = (self.business_id, self.key.as_str());
        let conversation_path =
            format!("/omega/businesses/{b}/clients/{}/conversations/{}/note", self.client, self.conversation);
        let note = format!("note {worker}-{i}");
        let grpc = |r: Result<(), tonic::Status>| r.map_err(|s| format!("{:?}: {}", s.code(), s.message()));
        match (worker + i) % 6 {
            0 => (
                "REST GET clients",
                true,
                self.rest(self.http.get(self.url(&format!("/omega/businesses/{b}/clients"))), key).await,
            ),
            1 => {
                let body = json!({ "content": note, "sent_by": self.staff, "sender_type": "staff" });
                (
                    "REST POST note",
                    false,
                    self.rest(self.http.post(self.url(&conversation_path)).json(&body), key).await,
                )
            }
            2 => {
                let mut client = ClientServiceClient::new(channel);
                let request = with_key(ListClientsRequest { business_id: b, ..Default::default() }, key);
                ("gRPC ListClients", true, grpc(client.list_clients(request).await.map(drop)))
            }
            3 => {
                let mut client = ConversationServiceClient::new(channel);
                let request = AddNoteRequest {
                    business_id: b,
                    client_id: self.client,
                    conversation_id: self.conversation,
                    content: note,
                    sent_by: self.staff,
                    sender_type: "staff".into(),
                    category: String::new(),
                };
                ("gRPC AddNote", false, grpc(client.add_note(with_key(request, key)).await.map(drop)))
            }
            4 => {
                let mut client = ClientServiceClient::new(channel);
                let input = ClientInput { name: "Rita".into(), phone: "+14155550123".into(), ..Default::default() };
                let request = with_key(UpsertClientRequest { business_id: b, client: Some(input) }, key);
                ("gRPC UpsertClient", true, grpc(client.upsert_client(request).await.map(drop)))
            }
            _ => {
                let mut client = HealthServiceClient::new(channel);
                ("gRPC GetHealth", true, grpc(client.get_health(GetHealthRequest {}).await.map(drop)))
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn rest(&self, request: reqwest::RequestBuilder, key: &str) -> Result<(), String> {
        match request.header("x-api-key", key).send().await {
            Ok(resp) if resp.status() == 200 => Ok(()),
            Ok(resp) => Err(format!("{} {}", resp.status(), resp.text().await.unwrap_or_default())),
            Err(err) => Err(err.to_string()),
        }
    }
}

/// Per call: how many, how many failed.
fn summary(outcomes: &[Outcome]) -> String {
    let mut calls: Vec<(&str, usize, usize)> = Vec::new();
    for o in outcomes {
        match calls.iter_mut().find(|c| c.0 == o.call) {
            Some(c) => {
                c.1 += 1;
                c.2 += o.error.is_some() as usize;
            }
            None => calls.push((o.call, 1, o.error.is_some() as usize)),
        }
    }
    calls.sort();
    calls.iter().map(|(call, n, failed)| format!("{call}: {n} ({failed} failed)")).collect::<Vec<_>>().join(", ")
}

/// Notes stored twice would be a write sent again behind the client's back.
async fn assert_no_note_stored_twice(app: &TestApp) -> i64 {
    let twice = app
        .sql(
            "SELECT COUNT(*) AS n FROM (SELECT content FROM messages WHERE content LIKE 'note %' \
             GROUP BY content HAVING COUNT(*) > 1) AS twice",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(twice.try_get::<i64>("", "n").unwrap(), 0, "a note was stored twice");
    let all = app.sql("SELECT COUNT(*) AS n FROM messages WHERE content LIKE 'note %'", vec![]).await.unwrap();
    all.try_get::<i64>("", "n").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkill_of_one_replica_fails_only_writes_in_flight_and_is_ejected() {
    let mut cluster = Cluster::start(1).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = cluster.load().spawn(stopped);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = cluster.requests_per_replica().await;

    let killed = cluster.addrs[1];
    let killed_at = Instant::now();
    cluster.replica(1).child.kill().unwrap();
    cluster.replica(1).child.wait().unwrap();
    let ejected_after = cluster
        .wait_until(killed, "out of rotation", |f| f.contains("failed_active_hc") || f.contains("failed_outlier_check"))
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.send(true).unwrap();
    let outcomes = load.await.unwrap();
    let after = cluster.requests_per_replica().await;
    let notes = assert_no_note_stored_twice(&cluster.app).await;
    let retries = cluster.retries().await;

    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    eprintln!(
        "SIGKILL: {} calls ({}); per replica before the kill {before:?}, at the end {after:?}; \
         ejected {ejected_after:?} after the kill; Envoy retries (sent again, succeeded) {retries:?}; \
         {notes} notes stored; failures: {failed:?}",
        outcomes.len(),
        summary(&outcomes)
    );
    assert!(ejected_after < Duration::from_secs(5), "ejected only after {ejected_after:?}");
    let envoy_log = cluster.app.envoy.log_text();
    assert!(!envoy_log.contains("no configured limit"), "a downstream connection limit is set: {envoy_log}");
    assert!(before.iter().all(|n| *n > 10), "both replicas served before the kill: {before:?}");
    assert!(after[0] > before[0] + 20, "the survivor took the load: {before:?} → {after:?}");
    assert!(outcomes.len() > 100, "a steady load: {}", summary(&outcomes));
    // Reads and idempotent writes are sent again elsewhere: none fails.
    let safe_failed: Vec<_> = failed.iter().filter(|o| o.retry_safe).collect();
    assert!(safe_failed.is_empty(), "retry-safe calls failed: {safe_failed:?}");
    // A plain write fails only if it was in flight on the killed replica (each caller has one
    // call in flight at most), and it fails visibly: it is never sent again.
    assert!(failed.len() <= WORKERS, "more writes failed than were in flight: {failed:?}");
    for o in &failed {
        assert!(o.started < killed_at + Duration::from_secs(1), "a write sent after the kill failed: {o:?}");
    }
    let ok_notes = outcomes.iter().filter(|o| !o.retry_safe && o.error.is_none()).count() as i64;
    assert!(notes >= ok_notes && notes <= ok_notes + failed.len() as i64, "{notes} notes, {ok_notes} answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigterm_restart_of_each_replica_in_turn_fails_nothing() {
    // The drain outlasts Envoy's health check (one NOT_SERVING answer, checked every second)
    // with room to spare.
    let mut cluster = Cluster::start(4).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = cluster.load().spawn(stopped);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut served = Vec::new();
    for i in 0..2 {
        let addr = cluster.addrs[i];
        let pid = cluster.replica(i).child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let drained_after = cluster.wait_until(addr, "out of rotation", |f| f.contains("failed_active_hc")).await;
        let status = tokio::task::block_in_place(|| cluster.replica(i).child.wait()).unwrap();
        assert!(status.success(), "replica {i} stopped cleanly: {status}");
        let log = cluster.replica(i).log_text();
        assert!(log.contains("draining"), "{log}");
        let mut env = cluster.env.clone();
        env.push(("OMEGA_LISTEN_ADDR".into(), addr.to_string()));
        let (process, _) =
            start_replica(cluster.app.dir.path(), &cluster.app.db.url, &cluster.app.platform_key, &env).await;
        *cluster.replica(i) = process;
        let back_after = cluster.wait_until(addr, "healthy again", |f| f == "healthy").await;
        served.push((i, drained_after, back_after, cluster.requests_per_replica().await));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.send(true).unwrap();
    let outcomes = load.await.unwrap();
    let end = cluster.requests_per_replica().await;
    let notes = assert_no_note_stored_twice(&cluster.app).await;
    let retries = cluster.retries().await;
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    eprintln!(
        "SIGTERM restarts: {} calls ({}); per replica at the end {end:?}; restarts \
         (replica, out of rotation after, healthy again after, requests per replica then): {served:?}; \
         Envoy retries (sent again, succeeded) {retries:?}; {notes} notes stored; failures: {failed:?}",
        outcomes.len(),
        summary(&outcomes)
    );
    assert!(failed.is_empty(), "calls failed during the rolling restart: {failed:?}");
    assert!(outcomes.len() > 100, "a steady load: {}", summary(&outcomes));
    let ok_notes = outcomes.iter().filter(|o| !o.retry_safe).count() as i64;
    assert_eq!(notes, ok_notes, "every note answered was stored once");
    // The replica restarted first took calls again after its return.
    let after_first = &served[0].3;
    assert!(end[0] > after_first[0], "replica 0 served again after its restart: {after_first:?} → {end:?}");
}
