//! Cross-site request forgery: a browser attaches cookies to any request, including one another
//! site's page makes it send (a form post, a `no-cors` fetch). So a call authenticated by a
//! cookie that changes state is refused when the browser says it came from another site: its
//! `Origin` is neither this host nor a configured origin, or (without `Origin`) its
//! `Sec-Fetch-Site` is `cross-site` or `same-site`. Credentials in headers (`X-API-KEY`,
//! `Authorization`) are never sent by a browser on its own, and requests without those browser
//! headers (curl, servers, the legacy clients' bare-key cookie) are not a browser's forgery: both pass.
//!
//! Decided here, once, for every transport: REST through Envoy (which forwards `Origin` and
//! `Sec-Fetch-Site` as metadata), gRPC-Web and gRPC. Reads (methods bound to REST `GET`) pass:
//! another site cannot read their answers. So do the calls that never look at the caller's
//! key or token — provider webhooks (raw bodies, signed) and the Chatwoot-compatible public API
//! (called from other sites by design, authorized by its inbox and contact identifiers).

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{Status, body::Body};
use tower::{Layer, Service};

use super::auth::presented_credential;

struct Policy {
    /// Origins besides the request's own that may send cookie-authenticated changes, lowercase.
    allowed_origins: HashSet<String>,
    /// gRPC paths of the methods left alone: REST `GET` reads, webhooks, the public API.
    unchecked: HashSet<String>,
}

#[derive(Clone)]
pub struct CsrfLayer {
    policy: Arc<Policy>,
}

impl CsrfLayer {
    /// `allowed_origins`: the named CORS origins (`*` names none).
    pub fn new(allowed_origins: &[String]) -> Self {
        let allowed_origins = allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty() && o != "*")
            .collect();
        let unchecked = crate::proto::http_bindings()
            .into_iter()
            .filter(|b| b.verb == "get" || b.raw_body || b.template.starts_with("/public/"))
            .map(|b| b.grpc_path)
            .collect();
        Self { policy: Arc::new(Policy { allowed_origins, unchecked }) }
    }
}

impl<S> Layer<S> for CsrfLayer {
    type Service = Csrf<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Csrf { inner, policy: self.policy.clone() }
    }
}

#[derive(Clone)]
pub struct Csrf<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl Policy {
    /// Why the request must be refused, if it must.
    fn refusal<B>(&self, request: &http::Request<B>) -> Option<&'static str> {
        let headers = request.headers();
        if !presented_credential(headers).is_some_and(|c| c.from_cookie())
            || self.unchecked.contains(request.uri().path())
        {
            return None;
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        if let Some(origin) = header("origin") {
            let origin = origin.trim_end_matches('/').to_ascii_lowercase();
            let own =
                header("x-forwarded-host").or_else(|| request.uri().authority().map(|a| a.as_str())).or(header("host"));
            if self.allowed_origins.contains(&origin) || own.is_some_and(|host| same_host(&origin, host)) {
                return None;
            }
            return Some(
                "cross-site request with a cookie credential refused: send the key in X-API-KEY or the token in Authorization, or call from an allowed origin",
            );
        }
        match header("sec-fetch-site").map(str::to_ascii_lowercase).as_deref() {
            Some("cross-site" | "same-site") => Some(
                "cross-site request with a cookie credential refused: send the key in X-API-KEY or the token in Authorization",
            ),
            _ => None,
        }
    }
}

/// Whether `origin` (`scheme://host[:port]`, lowercase) names `host` (an authority, as in `Host`).
fn same_host(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let default_port = match scheme {
        "https" => ":443",
        "http" => ":80",
        _ => return false,
    };
    let host = host.to_ascii_lowercase();
    let strip = |a: &str| a.strip_suffix(default_port).map(str::to_owned).unwrap_or_else(|| a.to_owned());
    strip(authority) == strip(&host)
}

impl<S> Service<http::Request<Body>> for Csrf<S>
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
        if let Some(message) = self.policy.refusal(&request) {
            let status = Status::permission_denied(message);
            return Box::pin(async move { Ok(status.into_http::<Body>()) });
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut builder = http::Request::post(format!("http://omega.test{path}"));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    const REVOKE: &str = "/omega.v1.ApiKeyService/RevokeApiKey";

    #[test]
    fn cookie_changes_from_other_sites_are_refused() {
        let layer = CsrfLayer::new(&["https://app.example".into()]);
        let policy = &layer.policy;
        let cookie = ("cookie", "X-API-KEY=omk_k");
        for headers in [
            vec![cookie, ("origin", "https://evil.example")],
            vec![cookie, ("origin", "null")],
            vec![cookie, ("sec-fetch-site", "cross-site")],
            vec![cookie, ("sec-fetch-site", "same-site")],
            vec![("cookie", "omega_session=eyJa.b.c"), ("origin", "https://evil.example")],
        ] {
            assert!(policy.refusal(&request(REVOKE, &headers)).is_some(), "{headers:?}");
        }
        for headers in [
            vec![cookie],
            vec![cookie, ("sec-fetch-site", "same-origin")],
            vec![cookie, ("sec-fetch-site", "none")],
            vec![cookie, ("origin", "http://omega.test")],
            vec![cookie, ("origin", "https://omega.test"), ("x-forwarded-host", "omega.test:443")],
            vec![cookie, ("origin", "https://app.example"), ("sec-fetch-site", "cross-site")],
            vec![("x-api-key", "omk_k"), ("origin", "https://evil.example")],
            // The key header is what `caller` checks, and no page can add it without knowing it.
            vec![("cookie", "omega_session=eyJa.b.c"), ("x-api-key", "omk_k"), ("origin", "https://evil.example")],
            vec![("authorization", "Bearer eyJa.b.c"), ("cookie", "X-API-KEY=k"), ("origin", "https://evil.example")],
            vec![("origin", "https://evil.example")],
        ] {
            assert_eq!(policy.refusal(&request(REVOKE, &headers)), None, "{headers:?}");
        }
        // Reads pass: another site cannot read the answer.
        let read = request("/omega.v1.HealthService/CheckDbConnection", &[cookie, ("origin", "https://evil.example")]);
        assert_eq!(policy.refusal(&read), None);
        // Webhooks and the public chat API never use the cookie.
        for path in ["/omega.v1.WebhookService/ReceiveTwilioSms", "/omega.v1.ChatService/CreateMessage"] {
            assert_eq!(policy.refusal(&request(path, &[cookie, ("origin", "https://evil.example")])), None, "{path}");
        }
        // Changes by another name are still changes.
        let inbox = request("/omega.v1.InboxService/CreateInbox", &[cookie, ("origin", "https://evil.example")]);
        assert!(policy.refusal(&inbox).is_some());
    }
}
