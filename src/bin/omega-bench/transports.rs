//! P5 transports: the same unary call over gRPC, gRPC-Web (direct and through Envoy) and REST
//! through Envoy, beside gRPC direct and Envoy's own floor (a route Envoy answers itself). Every
//! case goes through one HTTP client implementation (hyper: HTTP/2 for gRPC, HTTP/1.1 for the
//! rest) on a connection of its own, and the cases are timed alternately, one call each in turn.

use std::{net::SocketAddr, time::Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use omega::proto::omega::v1::{GetHealthRequest, ListConversationsRequest};
use prost::Message as _;

use crate::{
    Settings,
    dataset::Dataset,
    harness::{Backend, ENVOY_FLOOR_PATH, KEY},
    report::Report,
    stats::Samples,
};

/// One keep-alive connection: HTTP/2 (prior knowledge, as gRPC clients speak it) or HTTP/1.1.
enum Connection {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

/// What a call answers: status, headers, body and trailers.
struct Answer {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
    trailers: Option<http::HeaderMap>,
}

impl Connection {
    async fn open(addr: SocketAddr, http2: bool) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let io = TokioIo::new(stream);
        if http2 {
            let (send, connection) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            Ok(Self::Http2(send))
        } else {
            let (send, connection) = http1::handshake(io).await?;
            tokio::spawn(connection);
            Ok(Self::Http1(send))
        }
    }

    async fn call(&mut self, request: http::Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        let response = match self {
            Self::Http1(send) => {
                send.ready().await?;
                send.send_request(request).await?
            }
            Self::Http2(send) => {
                send.ready().await?;
                send.send_request(request).await?
            }
        };
        let (parts, body) = response.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok(Answer { status: parts.status, headers: parts.headers, body: collected.to_bytes(), trailers })
    }
}

/// One case: how to build its request and what a good answer looks like.
struct Case {
    name: &'static str,
    connection: Connection,
    request: Box<dyn Fn() -> http::Request<Full<Bytes>> + Send>,
    check: fn(&Answer) -> anyhow::Result<()>,
    samples: Samples,
}

fn grpc_ok(answer: &Answer) -> anyhow::Result<()> {
    let status = answer
        .trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| answer.headers.get("grpc-status"))
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    anyhow::ensure!(
        answer.status.is_success() && status.as_deref() == Some("0"),
        "gRPC answered {} grpc-status {status:?}",
        answer.status
    );
    Ok(())
}

/// gRPC-Web carries its status in the headers (trailers-only) or in a trailer frame (flag 0x80)
/// at the end of the body.
fn grpc_web_ok(answer: &Answer) -> anyhow::Result<()> {
    let in_headers = answer.headers.get("grpc-status").map(|v| v.as_bytes() == b"0");
    let in_body = || {
        let body = &answer.body;
        let mut at = 0;
        while at + 5 <= body.len() {
            let length = u32::from_be_bytes([body[at + 1], body[at + 2], body[at + 3], body[at + 4]]) as usize;
            let frame = body.get(at + 5..at + 5 + length)?;
            if body[at] & 0x80 != 0 {
                let text = String::from_utf8_lossy(frame).to_ascii_lowercase();
                return Some(text.lines().any(|l| l.trim() == "grpc-status:0"));
            }
            at += 5 + length;
        }
        None
    };
    let ok = answer.status.is_success() && in_headers.or_else(in_body) == Some(true);
    anyhow::ensure!(ok, "gRPC-Web answered {} without grpc-status 0", answer.status);
    Ok(())
}

fn http_ok(answer: &Answer) -> anyhow::Result<()> {
    anyhow::ensure!(answer.status.is_success(), "answered {}", answer.status);
    Ok(())
}

fn post(
    uri: String,
    content_type: &'static str,
    body: &[u8],
) -> impl Fn() -> http::Request<Full<Bytes>> + Send + use<> {
    let body = Bytes::copy_from_slice(body);
    move || {
        let mut request = http::Request::post(uri.as_str())
            .header("content-type", content_type)
            .header("x-api-key", KEY)
            .body(Full::new(body.clone()))
            .expect("request");
        if content_type == "application/grpc" {
            request.headers_mut().insert("te", http::HeaderValue::from_static("trailers"));
        } else {
            request.headers_mut().insert("x-grpc-web", http::HeaderValue::from_static("1"));
        }
        request
    }
}

fn get(addr: SocketAddr, path: String) -> impl Fn() -> http::Request<Full<Bytes>> + Send {
    move || {
        http::Request::get(path.as_str())
            .header("host", addr.to_string())
            .header("x-api-key", KEY)
            .body(Full::new(Bytes::new()))
            .expect("request")
    }
}

pub async fn transports(
    backend: Backend,
    direct: SocketAddr,
    envoy: SocketAddr,
    data: &Dataset,
    settings: &Settings,
    report: &mut Report,
) -> anyhow::Result<()> {
    let samples = settings.samples.max(50) * 2;
    let business_id = data.small.id;
    let list = ListConversationsRequest { business_id, page_size: 10, ..Default::default() };
    let calls = [("GetHealth (no database)", false), ("ListConversations, 10 rows", true)];
    for (call, is_list) in calls {
        let (path, message) = if is_list {
            ("/omega.v1.ConversationService/ListConversations", list.encode_to_vec())
        } else {
            ("/omega.v1.HealthService/GetHealth", GetHealthRequest {}.encode_to_vec())
        };
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        let rest_path = if is_list {
            format!("/omega/businesses/{business_id}/conversations?page_size=10")
        } else {
            "/omega/health".into()
        };
        // HTTP/2 wants the full URI (scheme and authority); HTTP/1.1 the path and a Host header.
        let web = |addr: SocketAddr| {
            let request = post(path.to_owned(), "application/grpc-web+proto", &framed);
            move || {
                let mut request = request();
                request.headers_mut().insert("host", addr.to_string().parse().expect("host"));
                request
            }
        };
        let mut cases = [
            Case {
                name: "gRPC direct",
                connection: Connection::open(direct, true).await?,
                request: Box::new(post(format!("http://{direct}{path}"), "application/grpc", &framed)),
                check: grpc_ok,
                samples: Samples::default(),
            },
            Case {
                name: "gRPC-Web direct (tonic-web)",
                connection: Connection::open(direct, false).await?,
                request: Box::new(web(direct)),
                check: grpc_web_ok,
                samples: Samples::default(),
            },
            Case {
                name: "gRPC-Web through Envoy",
                connection: Connection::open(envoy, false).await?,
                request: Box::new(web(envoy)),
                check: grpc_web_ok,
                samples: Samples::default(),
            },
            Case {
                name: "REST through Envoy",
                connection: Connection::open(envoy, false).await?,
                request: Box::new(get(envoy, rest_path)),
                check: http_ok,
                samples: Samples::default(),
            },
            Case {
                name: "Envoy's floor",
                connection: Connection::open(envoy, false).await?,
                request: Box::new(get(envoy, ENVOY_FLOOR_PATH.to_owned())),
                check: http_ok,
                samples: Samples::default(),
            },
        ];
        // One call of each case in turn, starting from a different case each round, so that
        // neither the machine's noise nor the order favours any of them.
        let warmup = 20;
        for round in 0..warmup + samples {
            for k in 0..cases.len() {
                let at = (round + k) % cases.len();
                let case = &mut cases[at];
                let request = (case.request)();
                let started = Instant::now();
                let answer = case.connection.call(request).await?;
                let elapsed = started.elapsed();
                (case.check)(&answer).map_err(|e| anyhow::anyhow!("P5 {call}, {}: {e}", case.name))?;
                if round >= warmup {
                    case.samples.push(elapsed);
                }
            }
        }
        let p50 = |name: &str| cases.iter().find(|c| c.name == name).expect("case").samples.p50();
        let grpc = p50("gRPC direct");
        let base = ("gRPC direct p50", grpc);
        for (figure, target, limit) in [
            ("gRPC-Web direct (tonic-web)", "≤ 1.2 × gRPC", 1.2),
            ("gRPC-Web through Envoy", "≤ 1.2 × gRPC", 1.2),
            ("REST through Envoy", "≤ 1.3 × gRPC", 1.3),
        ] {
            let value = p50(figure);
            report.add(
                "P5",
                backend,
                format!("{call}: {figure} p50"),
                (value, "ms"),
                base,
                target,
                Some(value <= limit * grpc),
            );
        }
        let floor = p50("Envoy's floor");
        report.add(
            "P5",
            backend,
            format!("{call}: Envoy's floor (a direct_response route: HTTP/1.1 in and out, no upstream) p50"),
            (floor, "ms"),
            base,
            "",
            None,
        );
        // What a call through Envoy costs beyond Envoy's floor: its filters (Lua, transcoding),
        // the HTTP/2 hop to Omega and Omega's own work, against the whole of a direct gRPC call.
        for figure in ["gRPC-Web through Envoy", "REST through Envoy"] {
            report.add(
                "P5",
                backend,
                format!("{call}: {figure} less Envoy's floor, p50"),
                (p50(figure) - floor, "ms"),
                base,
                "",
                None,
            );
        }
    }
    Ok(())
}
