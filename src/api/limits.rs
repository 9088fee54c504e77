//! A tower layer that slows down credential guessing: an address may fail authentication a
//! configured number of times a minute (a `governor` rate limit per address: the allowance
//! comes back evenly over the minute); its failures beyond that are answered
//! RESOURCE_EXHAUSTED (HTTP 429), after a pause. Only the failures are limited: a valid
//! credential, or a call that presents none (`/health`), still works from that address — a
//! shared address (an office, a NAT) is not locked out by one client guessing keys.
//!
//! The client's address is the TCP peer, or, when the peer is a configured trusted proxy, the
//! nearest untrusted address in `X-Forwarded-For` (anyone else could write that header).

use std::{
    future::Future,
    net::IpAddr,
    num::NonZeroU32,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use tonic::{Status, body::Body, transport::server::TcpConnectInfo};
use tower::{Layer, Service};

use super::auth::presented_credential;
use crate::domain::Error;

/// How long a refused guess from a blocked address waits for its answer: a guesser that waits
/// for each answer is held to a couple of guesses a second.
const PENALTY: Duration = Duration::from_millis(500);
/// Addresses remembered before the idle ones are forgotten.
const MAX_ADDRESSES: usize = 100_000;

struct Failures {
    /// None: no limit.
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trusted_proxies: Vec<IpNet>,
}

impl Failures {
    /// Counts a failure of `address`; whether it is one too many.
    fn over_limit(&self, address: IpAddr) -> bool {
        let Some(limiter) = &self.limiter else { return false };
        if limiter.len() > MAX_ADDRESSES {
            limiter.retain_recent();
        }
        limiter.check_key(&address).is_err()
    }
}

#[derive(Clone)]
pub struct AuthFailureLimitLayer {
    failures: Arc<Failures>,
}

impl AuthFailureLimitLayer {
    /// Allows `per_minute` failed authentications per address per minute (0: no limit); the
    /// `X-Forwarded-For` of peers in `trusted_proxies` names the client.
    pub fn new(per_minute: u32, trusted_proxies: Vec<IpNet>) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)));
        Self { failures: Arc::new(Failures { limiter, trusted_proxies }) }
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

/// The client's address: the peer, or — when the peer is a trusted proxy — the last address in
/// `X-Forwarded-For` that is not one (each proxy appends its own peer: the entries further left
/// are the client's to write).
fn client_address<B>(request: &http::Request<B>, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = request.extensions().get::<TcpConnectInfo>().and_then(|info| info.remote_addr()).map(|a| a.ip());
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer?;
    if !is_trusted(&client) {
        return Some(client);
    }
    let forwarded: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in forwarded.into_iter().rev() {
        let Ok(hop) = hop.trim().parse::<IpAddr>() else { break };
        client = hop;
        if !is_trusted(&client) {
            break;
        }
    }
    Some(client)
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
        // A call without a credential guesses nothing (and `/health` must answer everyone).
        let address =
            presented_credential(request.headers()).and(client_address(&request, &self.failures.trusted_proxies));
        let failures = self.failures.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // tonic answers a failed call "trailers-only": the status is in the headers.
            let unauthenticated = response.headers().get("grpc-status").is_some_and(|s| s.as_bytes() == b"16");
            let Some(address) = address.filter(|_| unauthenticated) else {
                return Ok(response);
            };
            // The credential was checked like any other (in constant time): only a failure is
            // refused, so a valid key from a blocked address still works.
            if !failures.over_limit(address) {
                return Ok(response);
            }
            tokio::time::sleep(PENALTY).await;
            let status = Status::from(Error::ResourceExhausted(
                "too many failed authentications from this address; retry in a minute".into(),
            ));
            Ok(status.into_http::<Body>())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_the_allowance_are_refused_per_address() {
        let layer = AuthFailureLimitLayer::new(3, Vec::new());
        let (guesser, neighbour) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let refused: Vec<bool> = (0..5).map(|_| layer.failures.over_limit(guesser)).collect();
        assert_eq!(refused, [false, false, false, true, true]);
        assert!(!layer.failures.over_limit(neighbour));
        let unlimited = AuthFailureLimitLayer::new(0, Vec::new());
        assert!((0..1000).all(|_| !unlimited.failures.over_limit(guesser)));
    }

    fn request(peer: &str, forwarded: Option<&str>) -> http::Request<()> {
        let mut request = http::Request::new(());
        if let Some(forwarded) = forwarded {
            request.headers_mut().insert("x-forwarded-for", forwarded.parse().unwrap());
        }
        let info = TcpConnectInfo { local_addr: None, remote_addr: Some(format!("{peer}:4000").parse().unwrap()) };
        request.extensions_mut().insert(info);
        request
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let address = |peer, forwarded| client_address(&request(peer, forwarded), &trusted).unwrap().to_string();
        assert_eq!(address("127.0.0.2", Some("203.0.113.9")), "127.0.0.2", "an untrusted loopback peer");
        assert_eq!(address("198.51.100.1", Some("203.0.113.9")), "198.51.100.1");
        assert_eq!(address("127.0.0.1", Some("203.0.113.9")), "203.0.113.9");
        // The client wrote the left entry; the proxies appended the rest.
        assert_eq!(address("127.0.0.1", Some("192.0.2.1, 203.0.113.9, 10.1.2.3")), "203.0.113.9");
        assert_eq!(address("127.0.0.1", Some("junk")), "127.0.0.1");
        assert_eq!(address("127.0.0.1", None), "127.0.0.1");
    }
}
