//! The gRPC server: one tonic router that speaks gRPC (HTTP/2) and gRPC-Web (HTTP/1.1 or 2),
//! with CORS, request ids, tracing, `grpc.health.v1` and reflection.

use std::{future::Future, net::SocketAddr, path::Path, time::Duration};

use anyhow::Context;
use http::{HeaderName, HeaderValue, Method};
use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
};

use crate::{
    api::{
        ApiKeyApi, ChatApi, ConversationApi, DirectoryApi, DocsApi, EventApi, HealthApi, InboundEmailApi, MessagingApi,
        OnboardingApi, ProviderApi, TokenApi, WebhookApi, WebhookEndpointApi,
    },
    config::ServeArgs,
    domain::{Omega, auth},
    proto::{
        self,
        omega::v1::{
            api_key_service_server::ApiKeyServiceServer, attachment_service_server::AttachmentServiceServer,
            auth_service_server::AuthServiceServer, chat_service_server::ChatServiceServer,
            client_service_server::ClientServiceServer, conversation_service_server::ConversationServiceServer,
            docs_service_server::DocsServiceServer, email_service_server::EmailServiceServer,
            event_service_server::EventServiceServer, health_service_server::HealthServiceServer,
            inbound_email_service_server::InboundEmailServiceServer, inbox_service_server::InboxServiceServer,
            location_service_server::LocationServiceServer, message_service_server::MessageServiceServer,
            onboarding_service_server::OnboardingServiceServer, provider_service_server::ProviderServiceServer,
            session_service_server::SessionServiceServer, sms_service_server::SmsServiceServer,
            staff_service_server::StaffServiceServer, voice_service_server::VoiceServiceServer,
            webhook_endpoint_service_server::WebhookEndpointServiceServer,
            webhook_service_server::WebhookServiceServer,
        },
    },
    store::Store,
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How a stop was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM (an orchestrator, a rolling restart): report NOT_SERVING, keep serving for the
    /// drain period, then stop.
    Drain,
    /// SIGINT (Ctrl-C at a terminal): stop at once, finishing the calls in flight.
    Now,
}

/// Connects, migrates, installs the bootstrap key, binds, and serves until `shutdown` resolves
/// (then drains first if it asks to).
pub async fn run(args: ServeArgs, shutdown: impl Future<Output = Stop> + Send + 'static) -> anyhow::Result<()> {
    // The phone number metadata loads on first use; meanwhile the database connects.
    tokio::task::spawn_blocking(crate::domain::values::warm_phone_metadata);
    let store = Store::connect_with(&args.database.database_url, args.database.database_max_connections)
        .await
        .context("connecting to the database")?;
    store.keep_event_feed_rows(usize::try_from(args.event_feed_rows).unwrap_or(usize::MAX));
    if args.migrate_on_start {
        store.migrate().await.context("applying migrations")?;
    }
    if let Some(key) = &args.bootstrap_api_key
        && auth::ensure_bootstrap_key(&store, key).await.map_err(anyhow::Error::new)?
    {
        tracing::info!("bootstrap platform api key installed");
    }
    if args.token_secret.as_ref().is_some_and(|s| s.len() < 32) {
        anyhow::bail!("OMEGA_TOKEN_SECRET must be at least 32 characters");
    }
    let tokens =
        crate::domain::tokens::TokenSettings::new(args.token_secret.clone(), args.token_previous_secret.clone());
    if tokens.ephemeral {
        tracing::warn!(
            "no OMEGA_TOKEN_SECRET: access tokens are signed with a random secret and end with this process"
        );
    }
    let secrets = args.secrets.keys(&args.database.database_url).context("the secrets key")?;
    let files = args.attachments.store(&args.database.database_url).context("the attachment store")?;
    let omega = Omega::with_settings(store.clone(), args.delivery.webhook_settings(), tokens, secrets)
        .with_files(files, args.attachments.limits())
        .with_outbound(args.webhooks.settings());

    let (reporter, health_service) = tonic_health::server::health_reporter();
    let (start_drain, draining) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(watch_database(
        omega.clone(),
        reporter,
        Duration::from_secs(args.health_check_interval_secs),
        draining,
    ));

    let (stop_delivery, delivery_stopped) = tokio::sync::watch::channel(false);
    let (stop_webhooks, _) = tokio::sync::watch::channel(false);
    let delivery_config = args.delivery.to_config();
    let workers = if delivery_config.workers > 0 {
        crate::delivery::Dispatcher::spawn(omega.clone(), store.clone(), delivery_config, delivery_stopped)
    } else {
        Vec::new()
    };
    let webhook_config = args.webhooks.to_config();
    let webhook_workers = if webhook_config.workers > 0 {
        crate::delivery::webhooks::WebhookSender::spawn(
            omega.clone(),
            store.clone(),
            webhook_config,
            stop_webhooks.subscribe(),
        )?
    } else {
        Vec::new()
    };
    let sweeper = tokio::spawn(reopen_snoozed(omega.clone(), Duration::from_secs(args.snooze_check_interval_secs)));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let metrics = match args.metrics_addr {
        Some(addr) => {
            let (bound, task) = crate::metrics::serve(addr, store.clone()).await?;
            tracing::info!(address = %bound, "serving Prometheus metrics at /metrics");
            Some(task)
        }
        None => None,
    };

    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;

    let layers = tower::ServiceBuilder::new()
        // A panicking handler answers INTERNAL instead of resetting the stream (which Envoy
        // would report as an opaque 503).
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            tracing::error!("handler panicked");
            tonic::Status::internal("internal error").into_http::<String>()
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(cors(&args.cors_allowed_origins)?)
        .layer(tonic_web::GrpcWebLayer::new())
        // Outside every layer that may refuse a call (limits, CSRF, request checks), so that
        // each refusal gets its REST status from the one table.
        .layer(crate::api::error::RestStatusLayer)
        // Inside tonic-web: every call is plain gRPC here, its status in headers or trailers.
        .layer(crate::api::observe::ObserveLayer::new(proto::service_names().into_iter().chain([
            "grpc.health.v1.Health".to_owned(),
            "grpc.reflection.v1.ServerReflection".to_owned(),
            "grpc.reflection.v1alpha.ServerReflection".to_owned(),
        ])))
        .layer(crate::api::csrf::CsrfLayer::new(&args.cors_allowed_origins))
        .layer(crate::api::limits::AuthFailureLimitLayer::new(
            args.auth_failures_per_minute,
            trusted_proxies(&args.trusted_proxies)?,
        ))
        .layer(crate::api::validate::RequestCheckLayer::new(proto::DESCRIPTOR_SET)?)
        .into_inner();

    let directory = DirectoryApi::new(omega.clone());
    let messaging = MessagingApi::new(omega.clone());
    let webhooks = WebhookApi::new(omega.clone());
    let token_api = TokenApi::new(omega.clone());
    let chat = ChatApi::new(omega.clone());
    let docs = DocsApi::new();
    let cable = match args.cable_listen.trim() {
        "off" | "" => None,
        address => {
            let address: SocketAddr =
                address.parse().with_context(|| format!("OMEGA_CABLE_LISTEN_ADDR: {address:?} is not host:port"))?;
            let listener = TcpListener::bind(address).await.with_context(|| format!("binding {address}"))?;
            let bound = listener.local_addr()?;
            if let Some(path) = &args.cable_address_file {
                write_address_file(path, bound)?;
            }
            tracing::info!(address = %bound, "omega serving the /cable websocket");
            let (_, mut stopping) = store.event_wakeups().subscribe();
            let stop = async move {
                let _ = stopping.wait_for(|s| *s).await;
            };
            let ping = Duration::from_secs(args.cable_ping_secs.max(1));
            Some(tokio::spawn(crate::api::cable::serve(omega.clone(), listener, ping, stop)))
        }
    };
    // Announced only now that everything is built: a reader of the address file can call at once.
    if let Some(path) = &args.address_file {
        write_address_file(path, local)?;
    }
    tracing::info!(address = %local, database = store.engine(), "omega serving gRPC and gRPC-Web");
    let drain_for = Duration::from_secs(args.drain_secs);
    let stop_streams = store.event_wakeups().clone();
    let stop_streams_early = stop_streams.clone();
    // Other replicas' commits reach this one's streams, and their key revocations its key cache,
    // by NOTIFY (SQLite runs in one process).
    let event_listener = (store.engine() == "postgresql").then(|| {
        tokio::spawn(crate::store::events::listen(
            args.database.database_url.clone(),
            store.event_wakeups().clone(),
            store.key_cache().clone(),
        ))
    });
    let stop_delivery_early = stop_delivery.clone();
    let stop_webhooks_early = stop_webhooks.clone();
    let stop_serving = async move {
        if shutdown.await == Stop::Drain && !drain_for.is_zero() {
            tracing::info!(seconds = drain_for.as_secs(), "draining: reporting NOT_SERVING, still serving");
            let _ = start_drain.send(true);
            // Delivery stops now (the calls in flight finish): the other replicas take the
            // outbox, and nothing is started that the stop would cut short.
            let _ = stop_delivery_early.send(true);
            let _ = stop_webhooks_early.send(true);
            tokio::time::sleep(drain_for).await;
        }
        tracing::info!("no longer accepting calls; finishing the calls in flight");
        // Event streams never finish by themselves: end them, and their clients resume
        // elsewhere from their last event id.
        stop_streams_early.stop();
    };
    let result = Server::builder()
        .accept_http1(true)
        // Envoy admits 60 KiB of URL and headers and answers 431 JSON beyond; what it forwards
        // (the path twice: as :path and x-omega-public-path) must not meet hyper's 16 KiB limit,
        // which would be an empty 431 that no client can read.
        .http2_max_header_list_size(256 * 1024)
        .timeout(Duration::from_secs(args.request_timeout_secs))
        .layer(layers)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(HealthServiceServer::new(HealthApi::new(omega.clone())))
        .add_service(ApiKeyServiceServer::new(ApiKeyApi::new(omega.clone())))
        .add_service(OnboardingServiceServer::new(OnboardingApi::new(omega.clone())))
        .add_service(LocationServiceServer::new(directory.clone()))
        .add_service(ClientServiceServer::new(directory.clone()))
        .add_service(StaffServiceServer::new(directory))
        .add_service(ConversationServiceServer::new(ConversationApi::new(omega.clone())))
        .add_service(SmsServiceServer::new(messaging.clone()))
        .add_service(EmailServiceServer::new(messaging.clone()))
        .add_service(MessageServiceServer::new(messaging))
        .add_service(ProviderServiceServer::new(ProviderApi::new(omega.clone())))
        .add_service(WebhookServiceServer::new(webhooks.clone()))
        .add_service(InboundEmailServiceServer::new(InboundEmailApi::new(omega.clone())))
        .add_service(VoiceServiceServer::new(webhooks))
        .add_service(AuthServiceServer::new(token_api.clone()))
        .add_service(SessionServiceServer::new(token_api))
        .add_service(ChatServiceServer::new(chat.clone()))
        .add_service(InboxServiceServer::new(chat.clone()))
        .add_service(AttachmentServiceServer::new(chat))
        .add_service(DocsServiceServer::new(docs))
        .add_service(EventServiceServer::new(EventApi::new(omega.clone())))
        .add_service(WebhookEndpointServiceServer::new(WebhookEndpointApi::new(omega.clone())))
        // TCP_NODELAY: without it, Nagle holds back the small trailing HTTP/2 frames of each
        // answer until the peer's delayed ACK (~40 ms per call behind Envoy).
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stop_serving)
        .await;
    watcher.abort();
    sweeper.abort();
    if let Some(task) = metrics {
        task.abort();
    }
    if let Some(listener) = event_listener {
        listener.abort();
    }
    // Streams and websockets were told to end when serving stopped (`stop_streams`).
    stop_streams.stop();
    if let Some(cable) = cable
        && tokio::time::timeout(Duration::from_secs(5), cable).await.is_err()
    {
        tracing::warn!("/cable connections did not close in time");
    }
    // Workers finish the message in hand, then stop; a send cut short would be ambiguous.
    let _ = stop_delivery.send(true);
    let _ = stop_webhooks.send(true);
    let drained = tokio::time::timeout(
        Duration::from_secs(20),
        futures_join_all(workers.into_iter().chain(webhook_workers).collect()),
    )
    .await;
    if drained.is_err() {
        tracing::warn!("delivery workers did not stop in time");
    }
    store.close().await;
    tracing::info!("omega stopped");
    result.context("serving")
}

/// Keeps `grpc.health.v1` truthful: every service is SERVING only while the database answers,
/// and NOT_SERVING for good once `draining` turns true.
async fn watch_database(
    omega: Omega,
    reporter: HealthReporter,
    every: Duration,
    mut draining: tokio::sync::watch::Receiver<bool>,
) {
    let services: Vec<String> = std::iter::once(String::new()).chain(proto::service_names()).collect();
    let mut last = None;
    let mut tick = tokio::time::interval(every);
    loop {
        let drain = tokio::select! {
            _ = tick.tick() => false,
            // The guard `wait_for` answers is dropped here, before any await.
            _ = draining.wait_for(|d| *d) => true,
        };
        if drain {
            for service in &services {
                reporter.set_service_status(service, ServingStatus::NotServing).await;
            }
            return;
        }
        let status = match omega.health.check_database().await {
            Ok(_) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        if last != Some(status) {
            for service in &services {
                reporter.set_service_status(service, status).await;
            }
            if last.is_some() {
                tracing::warn!(?status, "health changed");
            }
            last = Some(status);
        }
    }
}

async fn futures_join_all(handles: Vec<tokio::task::JoinHandle<()>>) {
    for handle in handles {
        let _ = handle.await;
    }
}

/// Reopens snoozed conversations when their time comes. Every replica may run it: each
/// reopening is conditional, so none happens twice.
async fn reopen_snoozed(omega: Omega, every: Duration) {
    let mut tick = tokio::time::interval(every);
    let mut last_purge: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        match omega.reopen_expired_snoozes().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(reopened = n, "snoozed conversations reopened"),
            Err(err) => tracing::warn!(error = %err, "could not reopen snoozed conversations"),
        }
        // Hourly housekeeping rides on the same loop.
        if last_purge.is_none_or(|at| at.elapsed() >= Duration::from_secs(3_600)) {
            last_purge = Some(std::time::Instant::now());
            match omega.purge_stale_records().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "expired sessions and old provider events deleted"),
                Err(err) => tracing::warn!(error = %err, "housekeeping failed"),
            }
        }
    }
}

fn cors(origins: &[String]) -> anyhow::Result<CorsLayer> {
    let headers =
        ["x-api-key", "authorization", "content-type", "x-grpc-web", "x-user-agent", "grpc-timeout", "x-request-id"]
            .map(HeaderName::from_static);
    let exposed =
        ["grpc-status", "grpc-message", "grpc-status-details-bin", "x-request-id"].map(HeaderName::from_static);
    // Straight to Omega a browser speaks gRPC-Web only: POST (REST is Envoy's).
    let layer = CorsLayer::new()
        .allow_methods([Method::POST])
        .allow_headers(headers)
        .expose_headers(exposed)
        .max_age(Duration::from_secs(86_400));
    let Some(origins) = crate::envoy::named_origins(origins) else {
        return Ok(layer.allow_origin(AllowOrigin::any()));
    };
    let list = origins
        .iter()
        .map(|o| HeaderValue::from_str(o).with_context(|| format!("invalid CORS origin {o:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Named origins may send cookies (the API key cookie); `*` may not, by the CORS rules.
    Ok(layer.allow_origin(AllowOrigin::list(list)).allow_credentials(true))
}

/// `OMEGA_TRUSTED_PROXIES`: addresses (`127.0.0.1`) or networks (`10.0.0.0/8`).
fn trusted_proxies(entries: &[String]) -> anyhow::Result<Vec<ipnet::IpNet>> {
    entries
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.parse::<ipnet::IpNet>()
                .or_else(|_| e.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .with_context(|| format!("OMEGA_TRUSTED_PROXIES: {e:?} is neither an IP address nor a CIDR network"))
        })
        .collect()
}

/// Writes the address atomically, so that a reader never sees a half-written file.
fn write_address_file(path: &Path, address: SocketAddr) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, address.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C: stop now) or SIGTERM (drain first).
pub fn shutdown_signal() -> impl Future<Output = Stop> + Send + 'static {
    // Registered now, not when first polled: a SIGTERM that arrives while the server is still
    // starting must not kill the process outright.
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        #[cfg(unix)]
        let terminate = async {
            match terminate.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        let stop = tokio::select! {
            _ = tokio::signal::ctrl_c() => Stop::Now,
            _ = terminate => Stop::Drain,
        };
        tracing::info!(?stop, "shutdown signal received");
        stop
    }
}
