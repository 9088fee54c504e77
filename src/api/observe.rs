//! One log line and one set of metrics per call: method, gRPC status, latency, request id and,
//! once authenticated, the key and business.
//!
//! It sits inside tonic-web, where every call (gRPC, gRPC-Web, REST through Envoy) is plain gRPC
//! and its status is in the `grpc-status` header (an error without a body) or the trailers. The
//! status is read when the body ends, or when it is dropped unfinished (the client went away:
//! CANCELLED), so that every call is counted once.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower::{Layer, Service};
use tracing::{Instrument, Span};

use super::error::http_status;
use crate::metrics::{REQUEST_DURATION, REQUESTS};

const REQUEST_ID: &str = "x-request-id";

#[derive(Clone)]
pub struct ObserveLayer {
    known: std::sync::Arc<std::collections::HashSet<String>>,
}

impl ObserveLayer {
    /// `services`: the fully qualified services whose methods are metric labels; a path outside
    /// them is labelled `other`, so that a scanner's made-up paths cannot grow the label set.
    pub fn new(services: impl IntoIterator<Item = String>) -> Self {
        Self { known: std::sync::Arc::new(services.into_iter().collect()) }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner, known: self.known.clone() }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    known: std::sync::Arc<std::collections::HashSet<String>>,
}

impl<S, B, RB> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = Response<Observed<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        let known = path.strip_prefix('/').and_then(|p| p.split_once('/')).is_some_and(|(service, method)| {
            !method.is_empty() && !method.contains('/') && self.known.contains(service)
        });
        let method = if known { path.trim_start_matches('/').to_owned() } else { "other".to_owned() };
        let request_id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        // `key_id` and `business_id` are filled in by authentication (api::auth::caller).
        let span = tracing::info_span!(
            "request",
            method = %method,
            request_id = %request_id,
            key_id = tracing::field::Empty,
            business_id = tracing::field::Empty,
        );
        let start = Instant::now();
        let future = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        let span_for_body = span.clone();
        Box::pin(
            async move {
                match future.await {
                    Ok(response) => {
                        let status = grpc_status(response.headers());
                        let mut observer = Observer { method, start, span: span_for_body, status, done: false };
                        // An answer with no body to come (trailers-only) is complete now.
                        if observer.status.is_some() {
                            observer.finish();
                        }
                        Ok(response.map(|body| Observed { body, observer }))
                    }
                    Err(err) => {
                        let mut observer =
                            Observer { method, start, span: span_for_body, status: Some(Code::Internal), done: false };
                        tracing::error!(error = %err, "call failed below the request layer");
                        observer.finish();
                        Err(err)
                    }
                }
            }
            .instrument(span),
        )
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok()).map(Code::from)
}

/// What is known of a call until its last byte.
struct Observer {
    method: String,
    start: Instant,
    span: Span,
    status: Option<Code>,
    done: bool,
}

impl Observer {
    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let code = self.status.unwrap_or(Code::Cancelled);
        let elapsed = self.start.elapsed();
        let status = code_name(code);
        metrics::counter!(REQUESTS, "method" => self.method.clone(), "status" => status).increment(1);
        metrics::histogram!(REQUEST_DURATION, "method" => self.method.clone(), "status" => status)
            .record(elapsed.as_secs_f64());
        let latency_ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        let http = http_status(code);
        let _entered = self.span.enter();
        // Envoy's and the orchestrator's health checks call every second: only their failures
        // are worth a line at the default level.
        let health_check = self.method.starts_with("grpc.health.v1.");
        match code {
            Code::Ok if health_check => tracing::debug!(status, http, latency_ms, "call"),
            Code::Ok => tracing::info!(status, http, latency_ms, "call"),
            _ if http >= 500 => tracing::error!(status, http, latency_ms, "call failed"),
            // A refused credential or a throttled caller is what an operator watches for.
            Code::Unauthenticated | Code::PermissionDenied | Code::ResourceExhausted => {
                tracing::warn!(status, http, latency_ms, "call refused")
            }
            _ => tracing::info!(status, http, latency_ms, "call refused"),
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.finish();
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports the call when its trailers arrive or it is dropped.
    pub struct Observed<B> {
        #[pin]
        body: B,
        observer: Observer,
    }
}

impl<B: Body> Body for Observed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.observer.status = grpc_status(trailers).or(this.observer.status);
                    this.observer.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.observer.status = this.observer.status.or(Some(Code::Internal));
                this.observer.finish();
            }
            // A body that ends without trailers carried no status: Unknown, as a client reads it.
            Poll::Ready(None) => {
                this.observer.status = this.observer.status.or(Some(Code::Unknown));
                this.observer.finish();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
