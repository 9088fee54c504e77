//! Renders the Envoy config shipped in `envoy/` for a given set of ports, next to the descriptor
//! set it loads. The template holds `{{NAME}}` placeholders; the service list comes from the
//! descriptor set, so a new service needs no edit to the Envoy config. The REST edge's Lua
//! (`omega.lua`, beside the template) is rendered the same way: it learns from the protos which
//! paths take raw bodies.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

use crate::proto;

pub struct EnvoyParams {
    pub listen_address: String,
    pub listen_port: u16,
    pub admin_port: u16,
    pub upstream: SocketAddr,
}

/// Fills every placeholder of `template`; fails if one is left unknown.
pub fn render(template: &str, params: &EnvoyParams, descriptor: &Path, lua: &Path) -> anyhow::Result<String> {
    let services = serde_json::to_string(&proto::service_names())?;
    let values = [
        ("LISTEN_ADDRESS", params.listen_address.clone()),
        ("LISTEN_PORT", params.listen_port.to_string()),
        ("ADMIN_PORT", params.admin_port.to_string()),
        ("UPSTREAM_HOST", params.upstream.ip().to_string()),
        ("UPSTREAM_PORT", params.upstream.port().to_string()),
        ("DESCRIPTOR_PATH", descriptor.display().to_string()),
        ("LUA_PATH", lua.display().to_string()),
        ("SERVICES", services),
        ("RAW_BODY_PATHS", raw_body_paths()),
        ("ROUTES", routes()),
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
        let params = EnvoyParams {
            listen_address: "0.0.0.0".into(),
            listen_port: 8080,
            admin_port: 9901,
            upstream: "127.0.0.1:50051".parse().unwrap(),
        };
        let out =
            render("{{LISTEN_PORT}} {{UPSTREAM_PORT}} {{SERVICES}}", &params, Path::new("/d.pb"), Path::new("/o.lua"))
                .unwrap();
        assert!(out.starts_with("8080 50051 [\"omega.v1."), "{out}");
        assert!(out.contains("\"omega.v1.HealthService\""), "{out}");
        assert!(render("{{NOPE}}", &params, Path::new("/d"), Path::new("/l")).is_err());
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
