//! Reading the caller's credentials from request metadata.
//!
//! The legacy REST API takes an API key in the `X-API-KEY` header or the same key in a cookie.
//! The cookie may be named `X-API-KEY` / `api_key` (any case, `-` or `_`), or, as that API's own
//! curl example sends it, be the bare key alone (`cookie: <key>`).

use tonic::{Request, Status, metadata::MetadataMap};

use crate::domain::{Omega, auth::Caller};

const KEY_HEADER: &str = "x-api-key";
const KEY_COOKIE_NAMES: [&str; 3] = ["x-api-key", "api-key", "omega-api-key"];

/// Read access to request headers, whether tonic's metadata or the raw HTTP headers a tower
/// layer sees: the credential rules are written once, over both.
pub trait Headers {
    fn first(&self, name: &str) -> Option<&str>;
    fn all(&self, name: &str) -> Vec<&str>;
}

impl Headers for MetadataMap {
    fn first(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
    fn all(&self, name: &str) -> Vec<&str> {
        self.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect()
    }
}

impl Headers for http::HeaderMap {
    fn first(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
    fn all(&self, name: &str) -> Vec<&str> {
        self.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect()
    }
}

/// What the caller authenticates with, and whether it came from a cookie (which a browser
/// attaches on its own, even to a request another site made it send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Token { token: String, from_cookie: bool },
    Key { key: String, from_cookie: bool },
}

impl Credential {
    pub fn from_cookie(&self) -> bool {
        match self {
            Credential::Token { from_cookie, .. } | Credential::Key { from_cookie, .. } => *from_cookie,
        }
    }
}

/// The one credential `caller` checks: `X-API-KEY`, then `Authorization: Bearer`, then the
/// `omega_session` cookie, then a key cookie. The `X-API-KEY` header names Omega and nothing
/// else, so it is the caller's deliberate choice; an `Authorization` header may be a stray
/// (an HTTP client's default, a proxy's, a stale token) and must not refuse a valid key.
/// Headers win over cookies, which a browser attaches on its own.
pub fn presented_credential(headers: &impl Headers) -> Option<Credential> {
    if let Some(key) = key_header(headers) {
        return Some(Credential::Key { key, from_cookie: false });
    }
    if let Some(token) = bearer(headers) {
        return Some(Credential::Token { token, from_cookie: false });
    }
    let cookies = headers.all("cookie");
    if let Some(token) = cookies.iter().find_map(|h| token_from_cookie_header(h)) {
        return Some(Credential::Token { token, from_cookie: true });
    }
    cookies.iter().find_map(|h| key_from_cookie_header(h)).map(|key| Credential::Key { key, from_cookie: true })
}

fn key_header(headers: &impl Headers) -> Option<String> {
    let value = headers.first(KEY_HEADER)?.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

fn bearer(headers: &impl Headers) -> Option<String> {
    let value = headers.first("authorization")?.trim();
    value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(|t| t.trim().to_owned())
}

/// The key the caller presented, if any: the header first, then the cookie.
pub fn presented_key(metadata: &MetadataMap) -> Option<String> {
    key_header(metadata).or_else(|| metadata.all("cookie").into_iter().find_map(key_from_cookie_header))
}

/// The cookies of one `Cookie` header, parsed by the `cookie` crate; a part that is not
/// `name=value` is skipped.
fn cookies_of(header: &str) -> impl Iterator<Item = cookie::Cookie<'_>> {
    cookie::Cookie::split_parse(header).filter_map(Result::ok)
}

/// A `Cookie` header that is one bare value, with no name (`cookie: <key>`).
fn lone_cookie_value(header: &str) -> Option<&str> {
    let mut parts = header.split(';').map(str::trim).filter(|p| !p.is_empty());
    let single = parts.next()?;
    (parts.next().is_none() && !single.contains('=')).then_some(single)
}

fn key_from_cookie_header(header: &str) -> Option<String> {
    let named = cookies_of(header).find_map(|cookie| {
        let name = cookie.name().trim().to_ascii_lowercase().replace('_', "-");
        let value = cookie.value_trimmed().trim();
        (KEY_COOKIE_NAMES.contains(&name.as_str()) && !value.is_empty()).then(|| value.to_owned())
    });
    // A lone value is a key, unless it is a token.
    named.or_else(|| lone_cookie_value(header).filter(|v| !looks_like_token(v)).map(str::to_owned))
}

/// Whether a credential is shaped like a JWT (three base64url parts, a JSON header).
fn looks_like_token(value: &str) -> bool {
    value.starts_with("eyJ") && value.matches('.').count() == 2
}

/// The access token the caller presented, if any: `Authorization: Bearer`, the
/// `omega_session` cookie, or a bare cookie that is a token.
pub fn presented_token(metadata: &MetadataMap) -> Option<String> {
    bearer(metadata).or_else(|| metadata.all("cookie").into_iter().find_map(token_from_cookie_header))
}

fn token_from_cookie_header(header: &str) -> Option<String> {
    let named = cookies_of(header)
        .find(|cookie| cookie.name().trim() == SESSION_COOKIE)
        .map(|cookie| cookie.value_trimmed().trim().to_owned());
    named.or_else(|| {
        header.split(';').map(str::trim).find(|part| !part.contains('=') && looks_like_token(part)).map(str::to_owned)
    })
}

/// The cookie a browser keeps its access token in.
pub const SESSION_COOKIE: &str = "omega_session";

/// Authenticates the request's caller by access token or API key; UNAUTHENTICATED when none is
/// given or it is not valid (never saying which).
pub async fn caller<T>(omega: &Omega, request: &Request<T>) -> Result<Caller, Status> {
    let caller = match presented_credential(request.metadata()) {
        Some(Credential::Token { token, .. }) => omega.tokens.authenticate_token(&token).await?,
        Some(Credential::Key { key, .. }) => omega.authenticate(&key).await?,
        None => return Err(Status::from(crate::domain::Error::Unauthenticated)),
    };
    let span = tracing::Span::current();
    span.record("key_id", caller.key_id);
    if let crate::domain::auth::Scope::Business(business_id) = caller.scope {
        span.record("business_id", business_id);
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn header_wins_over_cookie() {
        let md = metadata(&[("x-api-key", "from-header"), ("cookie", "X-API-KEY=from-cookie")]);
        assert_eq!(presented_key(&md).as_deref(), Some("from-header"));
    }

    #[test]
    fn cookie_forms_are_accepted() {
        for (header, want) in [
            ("X-API-KEY=k1", Some("k1")),
            ("theme=dark; api_key=k2", Some("k2")),
            ("omega_api_key=\"k3\"; x=1", Some("k3")),
            ("k4", Some("k4")),
            ("theme=dark", None),
            ("eyJhbGciOiJIUzI1NiJ9.e30.c2ln", None),
            ("", None),
        ] {
            assert_eq!(key_from_cookie_header(header).as_deref(), want, "cookie {header:?}");
        }
    }

    #[test]
    fn the_key_header_wins_over_a_bearer_token_and_headers_over_cookies() {
        let md = metadata(&[("authorization", "Bearer stale"), ("x-api-key", "k1"), ("cookie", "omega_session=t")]);
        assert_eq!(presented_credential(&md), Some(Credential::Key { key: "k1".into(), from_cookie: false }));
        let md = metadata(&[("authorization", "Bearer t1"), ("cookie", "X-API-KEY=k2")]);
        assert_eq!(presented_credential(&md), Some(Credential::Token { token: "t1".into(), from_cookie: false }));
        let md = metadata(&[("cookie", "X-API-KEY=k3; omega_session=t2")]);
        assert_eq!(presented_credential(&md), Some(Credential::Token { token: "t2".into(), from_cookie: true }));
    }

    #[test]
    fn session_cookie_forms_are_accepted() {
        for (header, want) in [
            ("omega_session=t1", Some("t1")),
            ("theme=dark; omega_session=\"t2\"", Some("t2")),
            ("theme=dark; eyJhbGciOiJIUzI1NiJ9.e30.c2ln", Some("eyJhbGciOiJIUzI1NiJ9.e30.c2ln")),
            ("Omega_Session=t3", None),
            ("k4", None),
        ] {
            assert_eq!(token_from_cookie_header(header).as_deref(), want, "cookie {header:?}");
        }
    }

    #[test]
    fn empty_header_falls_back_to_cookie() {
        let md = metadata(&[("x-api-key", " "), ("cookie", "api-key=k5")]);
        assert_eq!(presented_key(&md).as_deref(), Some("k5"));
    }
}
