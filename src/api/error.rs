//! The one table of errors: each domain error's gRPC status, and each gRPC status's HTTP status
//! for REST callers (INVALID_ARGUMENT → 422, NOT_FOUND → 404, UNAUTHENTICATED → 401,
//! FAILED_PRECONDITION and ALREADY_EXISTS → 409, RESOURCE_EXHAUSTED → 429, UNAVAILABLE → 503, …).
//!
//! A failed REST call (one that Envoy's REST edge marked with `x-omega-public-path`) carries its
//! HTTP status in the `x-omega-http-status` header; omega.lua moves it into `:status` after the
//! transcoder, and strips the header from every answer.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};

use crate::domain::Error;

/// The most characters of a message or field description an answer carries. Descriptions may
/// quote what was sent ("unknown time zone \"…\""); a status travels in HTTP/2 headers, and one
/// over the proxy's header limit would reset the connection it shares with other calls.
const MAX_TEXT: usize = 300;

fn bounded(text: String) -> String {
    match text.char_indices().nth(MAX_TEXT) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let message = bounded(err.to_string());
        match err {
            Error::InvalidArgument(violations) => {
                let details = ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| tonic_types::FieldViolation::new(bounded(v.field), bounded(v.description)))
                        .collect::<Vec<_>>(),
                );
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::NotFound(_) => Status::not_found(message),
            Error::Unauthenticated => Status::unauthenticated(message),
            Error::PermissionDenied(_) => Status::permission_denied(message),
            Error::FailedPrecondition(_) => Status::failed_precondition(message),
            Error::Conflict(_) => Status::already_exists(message),
            Error::ResourceExhausted(_) => Status::resource_exhausted(message),
            Error::Unavailable(_) => Status::unavailable(message),
            Error::Internal(cause) => {
                // The cause chain is for operators; the client learns only that it failed.
                tracing::error!(error = format!("{cause:#}"), "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// The HTTP status a REST caller gets for a gRPC code. UNIMPLEMENTED is an unknown method, the
/// caller's mistake like an unknown path: 404, not a fault of the server.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::InvalidArgument => 422,
        Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound | Code::Unimplemented => 404,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => 409,
        Code::ResourceExhausted => 429,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// The header that carries a failed REST call's HTTP status to Envoy's REST edge.
pub const HTTP_STATUS_HEADER: &str = "x-omega-http-status";

/// Set by Envoy's REST edge on every REST call it forwards.
const REST_MARK: &str = "x-omega-public-path";

/// A tower layer that writes `x-omega-http-status` on the failed answers to REST calls, from
/// the `grpc-status` of an answer without a body (how every failed unary call is answered).
/// gRPC and gRPC-Web callers never see the header.
#[derive(Clone, Default)]
pub struct RestStatusLayer;

impl<S> Layer<S> for RestStatusLayer {
    type Service = RestStatus<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RestStatus { inner }
    }
}

#[derive(Clone)]
pub struct RestStatus<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for RestStatus<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let rest = request.headers().contains_key(REST_MARK);
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            if rest {
                mark_http_status(&mut response);
            }
            Ok(response)
        })
    }
}

fn mark_http_status<B>(response: &mut Response<B>) {
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from);
    if let Some(code) = code.filter(|code| *code != Code::Ok) {
        response.headers_mut().insert(HTTP_STATUS_HEADER, HeaderValue::from(http_status(code)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_rest_answers_carry_their_http_status() {
        let status_of = |status: Status| {
            let mut response = status.into_http::<()>();
            mark_http_status(&mut response);
            response.headers().get(HTTP_STATUS_HEADER).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(status_of(Error::invalid("name", "is required").into()).as_deref(), Some("422"));
        assert_eq!(status_of(Error::FailedPrecondition("resolved".into()).into()).as_deref(), Some("409"));
        assert_eq!(status_of(Error::Conflict("taken".into()).into()).as_deref(), Some("409"));
        assert_eq!(status_of(Error::ResourceExhausted("slow down".into()).into()).as_deref(), Some("429"));
        assert_eq!(status_of(Error::Unavailable("down".into()).into()).as_deref(), Some("503"));
        assert_eq!(status_of(Error::NotFound("client".into()).into()).as_deref(), Some("404"));
        assert_eq!(status_of(Error::Unauthenticated.into()).as_deref(), Some("401"));
        assert_eq!(status_of(Status::unimplemented("no such method")).as_deref(), Some("404"));
        assert_eq!(status_of(Status::ok("")), None);
    }

    #[tokio::test]
    async fn only_rest_calls_get_the_header() {
        use tower::ServiceExt;
        let failing = tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Status::not_found("x").into_http::<()>())
        });
        let mut rest = Request::new(());
        rest.headers_mut().insert(REST_MARK, HeaderValue::from_static("/omega/x"));
        let answered = RestStatusLayer.layer(failing).oneshot(rest).await.unwrap();
        assert_eq!(answered.headers()[HTTP_STATUS_HEADER], "404");
        let answered = RestStatusLayer.layer(failing).oneshot(Request::new(())).await.unwrap();
        assert!(!answered.headers().contains_key(HTTP_STATUS_HEADER));
    }

    #[test]
    fn long_descriptions_are_cut() {
        let status = Status::from(Error::invalid("time_zone", format!("unknown time zone {:?}", "x".repeat(100_000))));
        assert!(status.message().chars().count() <= MAX_TEXT + 1, "{}", status.message().len());
        let bad_request = status.get_details_bad_request().expect("BadRequest details");
        let description = &bad_request.field_violations[0].description;
        assert!(description.starts_with("unknown time zone") && description.ends_with('…'), "{description}");
        assert_eq!(description.chars().count(), MAX_TEXT + 1);
    }

    #[test]
    fn field_errors_carry_bad_request_details() {
        let status = Status::from(Error::invalid("status", "must be one of OPEN, RESOLVED"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "invalid request: status: must be one of OPEN, RESOLVED");
        let bad_request = status.get_details_bad_request().expect("BadRequest details");
        assert_eq!(bad_request.field_violations.len(), 1);
        assert_eq!(bad_request.field_violations[0].field, "status");
    }

    #[test]
    fn internal_errors_are_opaque() {
        let status = Status::from(Error::Internal(anyhow::anyhow!("password=hunter2 leaked?")));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}
