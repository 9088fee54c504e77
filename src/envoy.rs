//! Renders the Envoy config shipped in `envoy/` for a given set of ports, next to the descriptor
//! set it loads. The template holds `{{NAME}}` placeholders; the service list comes from the
//! descriptor set, so a new service needs no edit to the Envoy config. The REST edge's Lua
//! (`omega.lua`, beside the template) is rendered the same way: it learns from the protos which
//! paths take raw bodies. Routes learn the same way which calls Envoy may send again and which
//! stream (see `proto::method_routes`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

use crate::proto;

#[derive(Debug, Clone)]
pub struct EnvoyParams {
    pub listen_address: String,
    pub listen_port: u16,
    pub admin_port: u16,
    /// The replicas, `host:port` each. A name (not an IP address) is resolved by Envoy, again
    /// every few seconds, and every address it resolves to is a replica (a container service).
    pub upstreams: Vec<String>,
    /// The replicas' `/cable` websocket listeners, `host:port` each (none: `/cable` is a 503).
    pub cable_upstreams: Vec<String>,
    /// Omega's own deadline for a call (`OMEGA_REQUEST_TIMEOUT_SECS`); Envoy waits a second
    /// longer, so that Omega's own answer wins.
    pub request_timeout_secs: u64,
    /// Downstream connections Envoy accepts at once, over all listeners.
    pub max_connections: u64,
    /// `OMEGA_CORS_ALLOWED_ORIGINS`, the same setting Omega's tonic-web honours: `*` (or
    /// nothing) for any origin without credentials, else the origins that may send cookies.
    pub cors_origins: Vec<String>,
}

impl EnvoyParams {
    /// One replica on `upstream`, the defaults otherwise (tests, the benchmark).
    pub fn single(upstream: SocketAddr) -> Self {
        Self::new(vec![upstream.to_string()])
    }

    pub fn new(upstreams: Vec<String>) -> Self {
        Self {
            listen_address: "127.0.0.1".into(),
            listen_port: 0,
            admin_port: 0,
            upstreams,
            cable_upstreams: Vec::new(),
            request_timeout_secs: crate::config::DEFAULT_REQUEST_TIMEOUT_SECS,
            max_connections: crate::config::DEFAULT_ENVOY_MAX_CONNECTIONS,
            cors_origins: vec!["*".into()],
        }
    }
}

/// A replica's address split for Envoy: host (IP or name) and port.
fn split_upstream(upstream: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) =
        upstream.trim().rsplit_once(':').with_context(|| format!("upstream {upstream:?} is not host:port"))?;
    let port: u16 = port.parse().with_context(|| format!("upstream {upstream:?}: bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        bail!("upstream {upstream:?} is not host:port");
    }
    Ok((host.to_owned(), port))
}

/// The cluster's discovery type and its endpoints (a YAML flow list): STATIC when every
/// upstream is an IP address, else STRICT_DNS (an IP address resolves to itself there).
fn endpoints(upstreams: &[String]) -> anyhow::Result<(&'static str, String)> {
    if upstreams.is_empty() {
        bail!("no upstream: give at least one host:port");
    }
    let mut all_ips = true;
    let mut list = Vec::new();
    for upstream in upstreams {
        let (host, port) = split_upstream(upstream)?;
        all_ips &= host.parse::<std::net::IpAddr>().is_ok();
        let address = serde_json::json!({ "socket_address": { "address": host, "port_value": port } });
        list.push(serde_json::json!({ "endpoint": { "address": address } }).to_string());
    }
    Ok((if all_ips { "STATIC" } else { "STRICT_DNS" }, format!("[{}]", list.join(", "))))
}

/// An RE2 pattern matching exactly the given gRPC paths.
fn paths_regex<'a>(paths: impl Iterator<Item = &'a str>) -> String {
    let alternatives: Vec<String> = paths.map(regex_escape).collect();
    format!("^(?:{})$", alternatives.join("|"))
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Fills every placeholder of `template`; fails if one is left unknown.
pub fn render(template: &str, params: &EnvoyParams, descriptor: &Path, lua: &Path) -> anyhow::Result<String> {
    let services = serde_json::to_string(&proto::service_names())?;
    let (cable_type, cable_endpoints) = match params.cable_upstreams.is_empty() {
        true => ("STATIC", "[]".to_owned()),
        false => endpoints(&params.cable_upstreams)?,
    };
    let (cluster_type, endpoints) = endpoints(&params.upstreams)?;
    let methods = proto::method_routes();
    let safe = paths_regex(methods.iter().filter(|m| m.retry_safe).map(|m| m.grpc_path.as_str()));
    let streams = paths_regex(methods.iter().filter(|m| m.streaming).map(|m| m.grpc_path.as_str()));
    // Strings in the YAML: JSON quoting is YAML's double-quoted style.
    let values = [
        ("LISTEN_ADDRESS", params.listen_address.clone()),
        ("LISTEN_PORT", params.listen_port.to_string()),
        ("ADMIN_PORT", params.admin_port.to_string()),
        ("CLUSTER_TYPE", cluster_type.to_owned()),
        ("UPSTREAM_ENDPOINTS", endpoints),
        ("CABLE_CLUSTER_TYPE", cable_type.to_owned()),
        ("CABLE_ENDPOINTS", cable_endpoints),
        ("RETRY_SAFE_PATHS", serde_json::to_string(&safe)?),
        ("STREAMING_PATHS", serde_json::to_string(&streams)?),
        ("ROUTE_TIMEOUT", format!("{}s", params.request_timeout_secs.max(1) + 1)),
        ("MAX_CONNECTIONS", params.max_connections.to_string()),
        ("DESCRIPTOR_PATH", descriptor.display().to_string()),
        ("LUA_PATH", lua.display().to_string()),
        ("SERVICES", services),
        ("RAW_BODY_PATHS", raw_body_paths()),
        ("ROUTES", routes()),
        ("CORS_ORIGINS", cors_origins(&params.cors_origins)?),
        ("CORS_CREDENTIALS", named_origins(&params.cors_origins).is_some().to_string()),
        ("CORS_METHODS", serde_json::to_string(&cors_methods())?),
    ];
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), &value);
    }
    if let Some(at) = out.find("{{") {
        let rest: String = out[at..].chars().take(40).collect();
        bail!("unknown placeholder in the Envoy template: {rest}");
    }
    Ok(out)
}

/// The named origins of `OMEGA_CORS_ALLOWED_ORIGINS`, or `None` for any origin (`*` or empty).
pub fn named_origins(origins: &[String]) -> Option<Vec<&str>> {
    let origins: Vec<&str> = origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()).collect();
    (!origins.is_empty() && !origins.contains(&"*")).then_some(origins)
}

/// Envoy's origin matchers: every origin, or exactly the named ones.
fn cors_origins(origins: &[String]) -> anyhow::Result<String> {
    let Some(named) = named_origins(origins) else {
        return Ok(r#"[{ safe_regex: { regex: ".*" } }]"#.to_owned());
    };
    let mut matchers = Vec::new();
    for origin in named {
        if origin.chars().any(|c| c.is_control() || c == ',') {
            bail!("invalid CORS origin {origin:?}");
        }
        matchers.push(format!("{{ exact: {} }}", serde_json::to_string(origin)?));
    }
    Ok(format!("[{}]", matchers.join(", ")))
}

/// The methods a browser may use: the verbs of the REST bindings, POST (gRPC-Web) and OPTIONS.
fn cors_methods() -> String {
    let mut verbs: Vec<String> = proto::http_bindings().iter().map(|b| b.verb.to_ascii_uppercase()).collect();
    verbs.extend(["POST".to_owned(), "OPTIONS".to_owned()]);
    verbs.sort();
    verbs.dedup();
    verbs.join(", ")
}

/// A Lua table of patterns matching the `/omega` REST paths (without `/omega`) whose body is a
/// raw `google.api.HttpBody` (webhooks) rather than JSON.
fn raw_body_paths() -> String {
    let patterns: Vec<String> = proto::http_bindings()
        .into_iter()
        .filter(|b| b.raw_body && !b.template.starts_with("/public/"))
        .map(|b| lua_string(&lua_pattern(&b.template, "[^/]+")))
        .collect();
    format!("{{ {} }}", patterns.join(", "))
}

/// A Lua table of every REST binding: `{ pattern, METHOD, { repeated body field names } }`. The
/// edge answers 405 with `Allow` for a known path called with another method, and refuses a
/// single value where a repeated field needs a list (the transcoder would take it as a list of
/// one). A variable matches an empty segment too: `/businesses//clients` is the same route, and
/// the backend names the missing id.
fn routes() -> String {
    let rows: Vec<String> = proto::http_bindings()
        .into_iter()
        .map(|b| {
            let repeated: Vec<String> = b.repeated_body_fields.iter().map(|n| lua_string(n)).collect();
            format!(
                "{{ {}, {}, {{ {} }} }}",
                lua_string(&lua_pattern(&b.template, "[^/]*")),
                lua_string(&b.verb.to_uppercase()),
                repeated.join(", ")
            )
        })
        .collect();
    format!("{{\n  {}\n}}", rows.join(",\n  "))
}

/// A Lua string literal (JSON's escapes are a subset of Lua's).
fn lua_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string")
}

/// The Lua pattern of a path template: `{var}` matches one segment (`segment`), `{var=**}` any
/// rest.
fn lua_pattern(template: &str, segment: &str) -> String {
    let mut out = String::from("^");
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        for c in rest[..open].chars() {
            if "^$()%.[]*+-?".contains(c) {
                out.push('%');
            }
            out.push(c);
        }
        let close = rest[open..].find('}').map_or(rest.len(), |i| open + i);
        out.push_str(if rest[open..close].contains("**") { ".+" } else { segment });
        rest = rest.get(close + 1..).unwrap_or("");
    }
    for c in rest.chars() {
        if "^$()%.[]*+-?".contains(c) {
            out.push('%');
        }
        out.push(c);
    }
    out.push('$');
    out
}

/// Writes `omega.pb`, `omega.lua` and `envoy.yaml` into `out_dir` (the Lua rendered from beside
/// the template). Answers the path of the config file.
pub fn write_config(template_path: &Path, out_dir: &Path, params: &EnvoyParams) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out_dir = out_dir.canonicalize()?;
    let template = std::fs::read_to_string(template_path)
        .with_context(|| format!("reading the Envoy template {}", template_path.display()))?;
    let lua_template = template_path.parent().unwrap_or(Path::new(".")).join("omega.lua");
    let lua_source = std::fs::read_to_string(&lua_template)
        .with_context(|| format!("reading omega.lua beside the Envoy template ({})", lua_template.display()))?;
    let descriptor = out_dir.join("omega.pb");
    std::fs::write(&descriptor, proto::DESCRIPTOR_SET)?;
    let lua = out_dir.join("omega.lua");
    std::fs::write(&lua, render(&lua_source, params, &descriptor, &lua)?)?;
    let config = out_dir.join("envoy.yaml");
    std::fs::write(&config, render(&template, params, &descriptor, &lua)?)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled_and_unknown_ones_fail() {
        let params = EnvoyParams::single("127.0.0.1:50051".parse().unwrap());
        let out = render(
            "{{ADMIN_PORT}} {{UPSTREAM_ENDPOINTS}} {{SERVICES}}",
            &params,
            Path::new("/d.pb"),
            Path::new("/o.lua"),
        )
        .unwrap();
        assert!(out.starts_with("0 [{\"endpoint\""), "{out}");
        assert!(out.contains("\"port_value\":50051"), "{out}");
        assert!(out.contains("\"omega.v1.HealthService\""), "{out}");
        assert!(render("{{NOPE}}", &params, Path::new("/d"), Path::new("/l")).is_err());
    }

    #[test]
    fn upstreams_are_addresses_or_names_resolved_by_envoy() {
        let (kind, list) = endpoints(&["127.0.0.1:1".into(), "[::1]:2".into()]).unwrap();
        assert_eq!(kind, "STATIC");
        assert!(list.contains("\"address\":\"::1\"") && list.contains("\"port_value\":2"), "{list}");
        let (kind, list) = endpoints(&["127.0.0.1:1".into(), "omega:50051".into()]).unwrap();
        assert_eq!(kind, "STRICT_DNS");
        assert!(list.contains("\"address\":\"omega\""), "{list}");
        for bad in ["omega", "omega:", ":50051", "omega:0", "omega:x"] {
            assert!(endpoints(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(endpoints(&[]).is_err());
    }

    #[test]
    fn only_reads_and_declared_idempotent_calls_are_retry_safe() {
        let methods = proto::method_routes();
        let safe = |path: &str| methods.iter().find(|m| m.grpc_path == path).map(|m| m.retry_safe);
        // GET and PUT bindings, and a POST the proto declares IDEMPOTENT.
        for path in [
            "/omega.v1.HealthService/GetHealth",
            "/omega.v1.ClientService/ListClients",
            "/omega.v1.ProviderService/SetTwilioCredentials",
            "/omega.v1.ClientService/UpsertClient",
        ] {
            assert_eq!(safe(path), Some(true), "{path}");
        }
        // Sends, ingestion keyed only by the body, and other writes.
        for path in [
            "/omega.v1.SmsService/QueueSms",
            "/omega.v1.EmailService/QueueEmail",
            "/omega.v1.MessageService/ProcessMessage",
            "/omega.v1.MessageService/RetryFailedMessages",
            "/omega.v1.ConversationService/AddNote",
            "/omega.v1.ChatService/CreateMessage",
        ] {
            assert_eq!(safe(path), Some(false), "{path}");
        }
        let streams: Vec<&str> = methods.iter().filter(|m| m.streaming).map(|m| m.grpc_path.as_str()).collect();
        assert!(streams.contains(&"/grpc.health.v1.Health/Watch"), "{streams:?}");
        assert!(streams.contains(&"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), "{streams:?}");
        assert_eq!(safe("/grpc.health.v1.Health/Watch"), Some(false));
        assert_eq!(paths_regex(["/a.B/C", "/d/E"].into_iter()), r"^(?:/a\.B/C|/d/E)$");
    }

    #[test]
    fn raw_body_paths_are_the_webhooks() {
        assert_eq!(lua_pattern("/email/webhooks/{provider}", "[^/]+"), "^/email/webhooks/[^/]+$");
        assert_eq!(lua_pattern("/voice-calls/twiml", "[^/]+"), "^/voice%-calls/twiml$");
        let table = raw_body_paths();
        for path in ["^/twilio/sms/incoming$", "^/twilio/sms/status$", "^/email/webhooks/[^/]+$"] {
            assert!(table.contains(&format!("\"{path}\"")), "{table}");
        }
        assert!(!table.contains("api-keys") && !table.contains("public"), "{table}");
    }

    #[test]
    fn routes_name_every_binding_with_its_method_and_lists() {
        let table = routes();
        assert_eq!(table.matches("\n  {").count(), proto::http_bindings().len(), "{table}");
        assert!(table.contains(r#"{ "^/health$", "GET", {  } }"#), "{table}");
        let send = table.lines().find(|l| l.contains(r#""^/sms/queue$", "POST""#)).expect("SMS queue is a route");
        assert!(send.contains(r#""client_ids""#) && send.contains(r#""clientIds""#), "{send}");
        // Inside a body list of inputs: onboarding's locations carry phone numbers.
        let onboard = table.lines().find(|l| l.contains(r#""^/business/onboard$""#)).expect("onboarding is a route");
        assert!(onboard.contains(r#""phone_numbers""#), "{onboard}");
        assert!(table.contains(r#""^/businesses/[^/]*/clients$""#), "{table}");
    }
}
