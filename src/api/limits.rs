//! A tower layer that slows down credential guessing: an address whose calls failed
//! authentication too often in the last minute gets RESOURCE_EXHAUSTED (HTTP 429) for a while,
//! without its credentials even being looked at.

use std::{
    collections::HashMap,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tonic::{Status, body::Body, transport::server::TcpConnectInfo};
use tower::{Layer, Service};

const WINDOW: Duration = Duration::from_secs(60);

struct Failures {
    allowed: u32,
    by_address: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Failures {
    fn blocked(&self, address: IpAddr) -> bool {
        let map = self.by_address.lock().expect("not poisoned");
        map.get(&address).is_some_and(|(count, since)| *count >= self.allowed && since.elapsed() < WINDOW)
    }

    fn record(&self, address: IpAddr) {
        let mut map = self.by_address.lock().expect("not poisoned");
        if map.len() > 100_000 {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
        }
        let entry = map.entry(address).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

#[derive(Clone)]
pub struct AuthFailureLimitLayer {
    failures: Arc<Failures>,
}

impl AuthFailureLimitLayer {
    /// Allows `per_minute` failed authentications per address per minute (0: no limit).
    pub fn new(per_minute: u32) -> Self {
        Self {
            failures: Arc::new(Failures {
                allowed: if per_minute == 0 { u32::MAX } else { per_minute },
                by_address: Default::default(),
            }),
        }
    }
}

impl<S> Layer<S> for AuthFailureLimitLayer {
    type Service = AuthFailureLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthFailureLimit { inner, failures: self.failures.clone() }
    }
}

#[derive(Clone)]
pub struct AuthFailureLimit<S> {
    inner: S,
    failures: Arc<Failures>,
}

/// The client's address: the peer, or — when the peer is Envoy on loopback — the address Envoy
/// appended to `x-forwarded-for` (a client cannot forge the last entry).
fn client_address<B>(request: &http::Request<B>) -> Option<IpAddr> {
    let peer = request.extensions().get::<TcpConnectInfo>().and_then(|info| info.remote_addr()).map(|a| a.ip());
    let forwarded = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok());
    match (peer, forwarded) {
        (Some(peer), Some(forwarded)) if peer.is_loopback() => Some(forwarded),
        (peer, _) => peer,
    }
}

impl<S> Service<http::Request<Body>> for AuthFailureLimit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let address = client_address(&request);
        if let Some(address) = address
            && self.failures.blocked(address)
        {
            let status =
                Status::resource_exhausted("too many failed authentications from this address; retry in a minute");
            return Box::pin(async move { Ok(status.into_http::<Body>()) });
        }
        let failures = self.failures.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // tonic answers a failed call "trailers-only": the status is in the headers.
            let unauthenticated = response.headers().get("grpc-status").is_some_and(|s| s.as_bytes() == b"16");
            if let (true, Some(address)) = (unauthenticated, address) {
                failures.record(address);
            }
            Ok(response)
        })
    }
}
