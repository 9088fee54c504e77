//! The API's edge check on every text a request carries, before any handler runs: a string
//! field that is not UTF-8 (REST query parameters arrive as raw bytes through the transcoder) or
//! holds a NUL character (PostgreSQL cannot store one, SQLite's full-text syntax chokes on it) is
//! INVALID_ARGUMENT naming the field — never a decoding failure answered as INTERNAL.
//!
//! It reads the method's input type from the same descriptor set Envoy and reflection serve, so a
//! new field is covered without being listed anywhere. Per-field rules (lengths, formats) stay
//! with the domain.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full, Limited};
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, Value};
use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::domain::{Error, FieldViolation};

/// The largest request message accepted (tonic's own decoding limit).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone)]
pub struct RequestCheckLayer {
    inputs: Arc<HashMap<String, MessageDescriptor>>,
}

impl RequestCheckLayer {
    /// Indexes the unary-input methods of `descriptor_set` by their gRPC path.
    pub fn new(descriptor_set: &[u8]) -> anyhow::Result<Self> {
        let pool = DescriptorPool::decode(descriptor_set)?;
        let mut inputs = HashMap::new();
        for service in pool.services() {
            for method in service.methods().filter(|m| !m.is_client_streaming()) {
                inputs.insert(format!("/{}/{}", service.full_name(), method.name()), method.input());
            }
        }
        Ok(Self { inputs: Arc::new(inputs) })
    }
}

impl<S> Layer<S> for RequestCheckLayer {
    type Service = RequestCheck<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestCheck { inner, inputs: self.inputs.clone() }
    }
}

#[derive(Clone)]
pub struct RequestCheck<S> {
    inner: S,
    inputs: Arc<HashMap<String, MessageDescriptor>>,
}

impl<S> Service<http::Request<Body>> for RequestCheck<S>
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
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let Some(input) = self.inputs.get(request.uri().path()).filter(|_| grpc).cloned() else {
            return Box::pin(self.inner.call(request));
        };
        // The service that was polled ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = match Limited::new(body, MAX_REQUEST_BYTES + 5).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => {
                    let status = Status::from(Error::ResourceExhausted(format!(
                        "the request is larger than {MAX_REQUEST_BYTES} bytes, or was cut off"
                    )));
                    return Ok(status.into_http());
                }
            };
            if let Err(status) = check_frames(&input, bytes.clone()) {
                return Ok(status.into_http());
            }
            inner.call(http::Request::from_parts(parts, Body::new(Full::new(bytes)))).await
        })
    }
}

/// Checks each uncompressed gRPC frame of a request body as a message of type `input`.
fn check_frames(input: &MessageDescriptor, mut body: Bytes) -> Result<(), Status> {
    while body.remaining() >= 5 {
        let compressed = body.get_u8() != 0;
        let len = body.get_u32() as usize;
        if len > body.remaining() {
            // A truncated frame is tonic's to refuse.
            return Ok(());
        }
        let frame = body.split_to(len);
        if compressed {
            continue;
        }
        let message = DynamicMessage::decode(input.clone(), frame.clone())
            .map_err(|_| undecodable(not_utf8(input, frame, "").as_deref()))?;
        let mut violations = Vec::new();
        check_message(&message, "", &mut violations);
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
    }
    Ok(())
}

/// A message that does not decode: INVALID_ARGUMENT naming the string field that is not UTF-8
/// when there is one (the decoder does not say which), the body otherwise.
fn undecodable(not_utf8: Option<&str>) -> Status {
    let violation = match not_utf8 {
        Some(field) => FieldViolation::new(field, "must be valid UTF-8 text"),
        None => FieldViolation::new("body", "is not a valid request message"),
    };
    Error::InvalidArgument(vec![violation]).into()
}

/// The path of the first string field in `buf` (a `message`) whose bytes are not UTF-8, read
/// straight off the wire format.
fn not_utf8(message: &MessageDescriptor, mut buf: Bytes, prefix: &str) -> Option<String> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    while buf.has_remaining() {
        let (number, wire_type) = decode_key(&mut buf).ok()?;
        let len = match wire_type {
            WireType::Varint => {
                decode_varint(&mut buf).ok()?;
                continue;
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => decode_varint(&mut buf).ok()? as usize,
            WireType::StartGroup | WireType::EndGroup => return None,
        };
        if len > buf.remaining() {
            return None;
        }
        let value = buf.split_to(len);
        let Some(field) = message.get_field(number) else { continue };
        let path = if prefix.is_empty() { field.name().to_owned() } else { format!("{prefix}.{}", field.name()) };
        match field.kind() {
            prost_reflect::Kind::String if std::str::from_utf8(&value).is_err() => return Some(path),
            prost_reflect::Kind::Message(inner) if wire_type == WireType::LengthDelimited => {
                if let Some(found) = not_utf8(&inner, value, &path) {
                    return Some(found);
                }
            }
            _ => {}
        }
    }
    None
}

fn check_message(message: &DynamicMessage, prefix: &str, violations: &mut Vec<FieldViolation>) {
    for (field, value) in message.fields() {
        let path = if prefix.is_empty() { field.name().to_owned() } else { format!("{prefix}.{}", field.name()) };
        check_value(value, &path, violations);
    }
}

fn check_value(value: &Value, path: &str, violations: &mut Vec<FieldViolation>) {
    match value {
        Value::String(text) if text.contains('\0') => {
            violations.push(FieldViolation::new(path, "must not contain NUL characters"));
        }
        Value::Message(message) => check_message(message, path, violations),
        Value::List(items) => items.iter().for_each(|item| check_value(item, path, violations)),
        Value::Map(entries) => {
            for (key, item) in entries {
                if let MapKey::String(key) = key
                    && key.contains('\0')
                {
                    violations.push(FieldViolation::new(path, "must not contain NUL characters"));
                }
                check_value(item, path, violations);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto::{self, omega::v1::ListClientsRequest};

    fn layer() -> RequestCheckLayer {
        RequestCheckLayer::new(proto::DESCRIPTOR_SET).unwrap()
    }

    fn frame(payload: &[u8]) -> Bytes {
        let mut out = vec![0];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out.into()
    }

    fn input(path: &str) -> MessageDescriptor {
        layer().inputs.get(path).unwrap().clone()
    }

    #[test]
    fn clean_text_passes_and_nul_is_named() {
        let input = input("/omega.v1.ClientService/ListClients");
        let clean = ListClientsRequest { business_id: 1, query: "carla".into(), ..Default::default() };
        assert!(check_frames(&input, frame(&clean.encode_to_vec())).is_ok());
        let nul = ListClientsRequest { business_id: 1, query: "a\0b".into(), ..Default::default() };
        let status = check_frames(&input, frame(&nul.encode_to_vec())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("query"), "{}", status.message());
    }

    #[test]
    fn invalid_utf8_is_invalid_argument_naming_the_field() {
        let input = input("/omega.v1.ClientService/ListClients");
        let mut bytes = ListClientsRequest { business_id: 1, query: "ab".into(), ..Default::default() }.encode_to_vec();
        let at = bytes.len() - 2;
        bytes[at] = 0xFF;
        bytes[at + 1] = 0xFE;
        let status = check_frames(&input, frame(&bytes)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("query: must be valid UTF-8"), "{}", status.message());
    }
}
