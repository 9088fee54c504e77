//! Code generated from `proto/` by build.rs, and the descriptor set it produced.

/// `google.api`: the HTTP annotations and `HttpBody` (raw webhook bodies and TwiML answers).
pub mod google {
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

/// `omega.v1`: the services and messages of Omega's API.
pub mod omega {
    pub mod v1 {
        tonic::include_proto!("omega.v1");
    }
}

/// The encoded FileDescriptorSet of every Omega proto and its imports, with source info and the
/// `google.api.http` annotations: served by gRPC reflection and loaded by Envoy's transcoder.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/omega_descriptor.bin"));

/// Fully qualified names of the services Omega serves from the descriptor set
/// (e.g. `omega.v1.HealthService`): what Envoy's transcoder must list.
pub fn service_names() -> Vec<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(DESCRIPTOR_SET).expect("build.rs embeds a valid descriptor set");
    let mut names: Vec<String> = set
        .file
        .iter()
        .filter(|file| file.package().starts_with("omega."))
        .flat_map(|file| file.service.iter().map(move |svc| format!("{}.{}", file.package(), svc.name())))
        .collect();
    names.sort();
    names
}

/// One `google.api.http` binding of an Omega method.
#[derive(Debug, Clone)]
pub struct HttpBinding {
    /// The gRPC path, e.g. `/omega.v1.ApiKeyService/RevokeApiKey`.
    pub grpc_path: String,
    /// `get`, `post`, `put`, `delete` or `patch`.
    pub verb: &'static str,
    /// The annotation's path template (without the public `/omega` prefix).
    pub template: String,
    /// Whether the request body is passed raw (a `google.api.HttpBody`), not JSON.
    pub raw_body: bool,
    /// The JSON names (proto and lowerCamel) of the repeated fields anywhere in the JSON body,
    /// less any name that is also a singular field there (text alone could not tell them apart).
    pub repeated_body_fields: Vec<String>,
}

/// The names of repeated and of singular fields reachable from `message` (each message once).
fn collect_field_names(
    message: &prost_reflect::MessageDescriptor,
    seen: &mut std::collections::BTreeSet<String>,
    repeated: &mut std::collections::BTreeSet<String>,
    singular: &mut std::collections::BTreeSet<String>,
) {
    use prost_reflect::Kind;
    if !message.full_name().starts_with("omega.") || !seen.insert(message.full_name().to_owned()) {
        return;
    }
    for field in message.fields() {
        let names = if field.is_list() { &mut *repeated } else { &mut *singular };
        names.insert(field.name().to_owned());
        names.insert(field.json_name().to_owned());
        if let Kind::Message(inner) = field.kind() {
            collect_field_names(&inner, seen, repeated, singular);
        }
    }
}

/// Every primary REST binding of the Omega services, read from the descriptor set.
pub fn http_bindings() -> Vec<HttpBinding> {
    use prost_reflect::{DescriptorPool, Kind, Value};
    const VERBS: [&str; 5] = ["get", "post", "put", "delete", "patch"];
    let pool = DescriptorPool::decode(DESCRIPTOR_SET).expect("build.rs embeds a valid descriptor set");
    let http = pool.get_extension_by_name("google.api.http").expect("the descriptor set declares google.api.http");
    let mut bindings = Vec::new();
    for service in pool.services().filter(|s| s.package_name().starts_with("omega.")) {
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&http) {
                continue;
            }
            let Value::Message(rule) = options.get_extension(&http).into_owned() else { continue };
            let Some((verb, template)) = VERBS.iter().find_map(|verb| match rule.get_field_by_name(verb).as_deref() {
                Some(Value::String(path)) if !path.is_empty() => Some((*verb, path.clone())),
                _ => None,
            }) else {
                continue;
            };
            let input = method.input();
            let body = match rule.get_field_by_name("body").as_deref() {
                Some(Value::String(body)) => body.clone(),
                _ => String::new(),
            };
            let body_message = match body.as_str() {
                "" => None,
                "*" => Some(input.clone()),
                field => input.get_field_by_name(field).and_then(|f| match f.kind() {
                    Kind::Message(m) if !f.is_list() => Some(m),
                    _ => None,
                }),
            };
            let mut repeated_body_fields = Vec::new();
            if let Some(message) = body_message {
                let (mut seen, mut repeated, mut singular) = Default::default();
                collect_field_names(&message, &mut seen, &mut repeated, &mut singular);
                repeated_body_fields = repeated.difference(&singular).cloned().collect();
            }
            let raw_body = match rule.get_field_by_name("body").as_deref() {
                Some(Value::String(body)) if body == "*" => input.full_name() == "google.api.HttpBody",
                Some(Value::String(body)) if !body.is_empty() => input
                    .get_field_by_name(body)
                    .is_some_and(|f| matches!(f.kind(), Kind::Message(m) if m.full_name() == "google.api.HttpBody")),
                _ => false,
            };
            bindings.push(HttpBinding {
                grpc_path: format!("/{}/{}", service.full_name(), method.name()),
                verb,
                template,
                raw_body,
                repeated_body_fields,
            });
        }
    }
    bindings
}

/// What Envoy needs to know about one method to route it: may a lost call be sent again, and
/// does it stream (no deadline then).
#[derive(Debug, Clone)]
pub struct MethodRoute {
    /// e.g. `/omega.v1.HealthService/GetHealth`.
    pub grpc_path: String,
    /// Repeating the call changes nothing more than the first did: its REST binding is a GET, PUT
    /// or DELETE, or the proto declares `idempotency_level` NO_SIDE_EFFECTS or IDEMPOTENT. A write
    /// idempotent only with a key in its body (a send) is not: Envoy cannot see the body.
    pub retry_safe: bool,
    /// Client or server streaming (reflection, `grpc.health.v1.Health/Watch`).
    pub streaming: bool,
}

/// Every method the server answers — Omega's own, `grpc.health.v1` and reflection — read from
/// the descriptor sets the server registers.
pub fn method_routes() -> Vec<MethodRoute> {
    use prost_reflect::{DescriptorPool, Value};
    let verbs: std::collections::HashMap<String, &str> =
        http_bindings().into_iter().map(|b| (b.grpc_path, b.verb)).collect();
    let sets = [
        DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut routes = Vec::new();
    for set in sets {
        let pool = DescriptorPool::decode(set).expect("a valid embedded descriptor set");
        for service in pool.services().filter(|s| !s.package_name().starts_with("google.")) {
            for method in service.methods() {
                let grpc_path = format!("/{}/{}", service.full_name(), method.name());
                let streaming = method.is_client_streaming() || method.is_server_streaming();
                // google.protobuf.MethodOptions.IdempotencyLevel: 1 NO_SIDE_EFFECTS, 2 IDEMPOTENT.
                let declared = matches!(
                    method.options().get_field_by_name("idempotency_level").as_deref(),
                    Some(Value::EnumNumber(1 | 2))
                );
                let by_verb = verbs.get(&grpc_path).is_some_and(|verb| matches!(*verb, "get" | "put" | "delete"));
                routes.push(MethodRoute { retry_safe: !streaming && (declared || by_verb), streaming, grpc_path });
            }
        }
    }
    routes.sort_by(|a, b| a.grpc_path.cmp(&b.grpc_path));
    routes.dedup_by(|a, b| a.grpc_path == b.grpc_path);
    routes
}
