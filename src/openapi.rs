//! The OpenAPI 3 document of the REST surface, generated from the descriptor set — the same
//! `google.api.http` annotations Envoy's transcoder serves — so it cannot drift from the API.

use std::collections::BTreeMap;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor, Value as ReflectValue};
use serde_json::{Value, json};

use crate::proto::DESCRIPTOR_SET;

const HTTP_VERBS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// The leading comment of the descriptor at `path` in its file, trimmed.
fn comment(file: &prost_types::FileDescriptorProto, path: &[i32]) -> String {
    file.source_code_info
        .as_ref()
        .and_then(|info| info.location.iter().find(|l| l.path == path))
        .and_then(|l| l.leading_comments.clone())
        .map(|c| c.lines().map(str::trim).collect::<Vec<_>>().join(" ").trim().to_owned())
        .unwrap_or_default()
}

/// The public REST path of an annotation path (`/omega` in front, but for Chatwoot's API).
fn public_path(path: &str) -> String {
    if path.starts_with("/public/") { path.to_owned() } else { format!("/omega{path}") }
}

fn path_params(path: &str) -> Vec<String> {
    path.split('{')
        .skip(1)
        .filter_map(|part| part.split('}').next())
        .map(|p| p.split('=').next().unwrap_or(p).to_owned())
        .collect()
}

fn scalar_schema(field: &FieldDescriptor) -> Value {
    match field.kind() {
        Kind::Double | Kind::Float => json!({ "type": "number" }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({ "type": "integer", "format": "int32" }),
        // int32 would cap ids at 2,147,483,647: the whole unsigned range, as an int64.
        Kind::Uint32 | Kind::Fixed32 => {
            json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX })
        }
        // proto3 JSON writes 64-bit integers as strings.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            json!({ "type": "string", "format": "int64" })
        }
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "format": "byte" }),
        Kind::Enum(e) => {
            json!({ "type": "string", "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>() })
        }
        Kind::Message(m) => message_ref(&m),
    }
}

fn message_ref(message: &MessageDescriptor) -> Value {
    match message.full_name() {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Any" | "google.api.HttpBody" => json!({ "type": "object" }),
        name => json!({ "$ref": format!("#/components/schemas/{name}") }),
    }
}

/// Whether the proto marks the field `(google.api.field_behavior) = REQUIRED`.
fn is_required(field: &FieldDescriptor) -> bool {
    let Some(ext) = field.parent_pool().get_extension_by_name("google.api.field_behavior") else {
        return false;
    };
    let options = field.options();
    if !options.has_extension(&ext) {
        return false;
    }
    match options.get_extension(&ext).as_ref() {
        // REQUIRED is 2 in google.api.FieldBehavior.
        ReflectValue::List(values) => values.iter().any(|v| matches!(v, ReflectValue::EnumNumber(2))),
        ReflectValue::EnumNumber(n) => *n == 2,
        _ => false,
    }
}

/// The `(omega.v1.rules)` of a field (values, bounds, length) as JSON Schema keywords.
fn rules_of(field: &FieldDescriptor) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let Some(ext) = field.parent_pool().get_extension_by_name("omega.v1.rules") else {
        return out;
    };
    let options = field.options();
    if !options.has_extension(&ext) {
        return out;
    }
    let ReflectValue::Message(rules) = options.get_extension(&ext).into_owned() else {
        return out;
    };
    if let Some(ReflectValue::List(values)) = rules.get_field_by_name("values").as_deref()
        && !values.is_empty()
    {
        let values: Vec<Value> = values.iter().filter_map(|v| v.as_str().map(|s| json!(s))).collect();
        out.insert("enum".into(), Value::Array(values));
    }
    for (name, keyword) in [("minimum", "minimum"), ("maximum", "maximum"), ("max_length", "maxLength")] {
        if rules.has_field_by_name(name) {
            match rules.get_field_by_name(name).as_deref() {
                Some(ReflectValue::I64(n)) => out.insert(keyword.into(), json!(n)),
                Some(ReflectValue::U32(n)) => out.insert(keyword.into(), json!(n)),
                _ => None,
            };
        }
    }
    out
}

fn field_schema(field: &FieldDescriptor) -> Value {
    let mut item = scalar_schema(field);
    if let Value::Object(schema) = &mut item {
        schema.extend(rules_of(field));
    }
    let mut schema = if field.is_list() { json!({ "type": "array", "items": item }) } else { item };
    let text = comment(field.parent_file().file_descriptor_proto(), field.path());
    if !text.is_empty() && schema.get("$ref").is_none() {
        schema["description"] = json!(text);
    }
    schema
}

/// Adds the schema of `message` (and of every message it uses) to `schemas`.
fn collect_schema(message: &MessageDescriptor, schemas: &mut BTreeMap<String, Value>) {
    if schemas.contains_key(message.full_name()) || message_ref(message).get("$ref").is_none() {
        return;
    }
    schemas.insert(message.full_name().to_owned(), Value::Null);
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for field in message.fields() {
        if let Kind::Message(inner) = field.kind() {
            collect_schema(&inner, schemas);
        }
        properties.insert(field.name().to_owned(), field_schema(&field));
        if is_required(&field) {
            required.push(field.name().to_owned());
        }
    }
    let mut schema = json!({ "type": "object", "properties": properties });
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    let text = comment(message.parent_file_descriptor_proto(), message.path());
    if !text.is_empty() {
        schema["description"] = json!(text);
    }
    schemas.insert(message.full_name().to_owned(), schema);
}

/// How an operation authenticates its caller.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone (`GET /health`).
    Open,
    /// A provider webhook: the provider's own signature, checked before anything is used.
    Signature,
    /// Chatwoot's public client API: the inbox identifier and the contact's source id (and
    /// `identifier_hash` on inboxes that require it), in the path.
    Inbox,
    /// An API key or an access token.
    Key,
}

/// Who may call a binding; mirrors `api/` (and the README's endpoint table).
fn access(grpc_path: &str, raw_body: bool, template: &str) -> Access {
    if grpc_path == "/omega.v1.HealthService/GetHealth" || grpc_path == "/omega.v1.DocsService/GetOpenApi" {
        Access::Open
    } else if template.starts_with("/public/") {
        Access::Inbox
    } else if raw_body || grpc_path.starts_with("/omega.v1.WebhookService/") {
        Access::Signature
    } else {
        Access::Key
    }
}

/// The 4xx and 5xx answers an operation can give: Envoy's own refusals for any path, and those
/// that follow from its access, its inputs and whether it writes.
fn error_responses(access: Access, has_input: bool, json_body: bool, any_body: bool, writes: bool) -> Value {
    let error = json!({ "content": { "application/json": { "schema": { "$ref": "#/components/schemas/google.rpc.Status" } } } });
    let with = |description: &str| {
        let mut e = error.clone();
        e["description"] = json!(description);
        e
    };
    let mut out = serde_json::Map::new();
    out.insert(
        "400".into(),
        with("A request Envoy cannot read (a NUL or undecodable byte in the path, an unknown method)"),
    );
    match access {
        Access::Key => {
            out.insert("401".into(), with("Missing or invalid credentials"));
            out.insert(
                "403".into(),
                with("Not allowed for this key (or a cookie credential sent from another site for a change)"),
            );
            out.insert("429".into(), with("Too many failed authentications from this address"));
        }
        Access::Signature => {
            out.insert("403".into(), with("The provider's signature does not match"));
        }
        Access::Inbox => {
            out.insert("401".into(), with("A missing or wrong identifier_hash on an inbox that requires it"));
        }
        Access::Open => {}
    }
    out.insert("404".into(), with("Unknown id or path (including another business's data)"));
    out.insert("405".into(), with("A method this path does not have (the `Allow` header lists those it has)"));
    if writes {
        out.insert("409".into(), with("Conflicts with the current state"));
    }
    if any_body {
        out.insert("413".into(), with("A request body over 4 MiB"));
    }
    if json_body {
        out.insert("415".into(), with("A request body that is not JSON"));
    }
    if has_input {
        out.insert("422".into(), with("Parameter error: `details[0].field_violations` name the fields"));
    }
    out.insert("431".into(), with("A URL and headers over 60 KiB"));
    if access != Access::Open {
        out.insert("503".into(), with("The database is unavailable"));
    }
    Value::Object(out)
}

/// The OpenAPI 3.0 document of every REST binding in the descriptor set.
pub fn document() -> Value {
    let pool = DescriptorPool::decode(DESCRIPTOR_SET).expect("build.rs embeds a valid descriptor set");
    let http = pool.get_extension_by_name("google.api.http").expect("the descriptor set declares google.api.http");
    let mut paths: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    let mut schemas = BTreeMap::new();
    let mut tags = Vec::new();
    for service in pool.services().filter(|s| s.package_name().starts_with("omega.")) {
        tags.push(json!({ "name": service.name(), "description": comment(service.parent_file_descriptor_proto(), service.path()) }));
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&http) {
                continue;
            }
            let ReflectValue::Message(rule) = options.get_extension(&http).into_owned() else { continue };
            let Some((verb, template)) =
                HTTP_VERBS.iter().find_map(|verb| match rule.get_field_by_name(verb).as_deref() {
                    Some(ReflectValue::String(path)) if !path.is_empty() => Some((*verb, path.clone())),
                    _ => None,
                })
            else {
                continue;
            };
            let body = match rule.get_field_by_name("body").as_deref() {
                Some(ReflectValue::String(body)) => body.clone(),
                _ => String::new(),
            };
            let input = method.input();
            let output = method.output();
            collect_schema(&input, &mut schemas);
            collect_schema(&output, &mut schemas);
            let in_path = path_params(&template);
            let mut parameters: Vec<Value> = in_path
                .iter()
                .filter_map(|name| input.get_field_by_name(name).map(|f| (name, f)))
                .map(|(name, field)| json!({ "name": name, "in": "path", "required": true, "schema": field_schema(&field) }))
                .collect();
            if body.is_empty() {
                for field in input
                    .fields()
                    .filter(|f| !in_path.contains(&f.name().to_owned()) && !matches!(f.kind(), Kind::Message(_)))
                {
                    parameters.push(json!({ "name": field.name(), "in": "query", "required": is_required(&field), "schema": field_schema(&field) }));
                }
            }
            let grpc_path = format!("/{}/{}", service.full_name(), method.name());
            let raw_body = input.full_name() == "google.api.HttpBody"
                || (body != "*"
                    && !body.is_empty()
                    && input.get_field_by_name(&body).is_some_and(
                        |f| matches!(f.kind(), Kind::Message(m) if m.full_name() == "google.api.HttpBody"),
                    ));
            let access = access(&grpc_path, raw_body, &template);
            let writes = verb != "get";
            let responses = error_responses(
                access,
                input.fields().len() > 0,
                !body.is_empty() && !raw_body,
                !body.is_empty(),
                writes,
            );
            let mut operation = json!({
                "operationId": format!("{}_{}", service.name(), method.name()),
                "tags": [service.name()],
                "summary": comment(method.parent_file().file_descriptor_proto(), method.path()),
                "parameters": parameters,
                "responses": responses,
            });
            // Only key-authenticated operations name a scheme; the others carry their own proof.
            if access != Access::Key {
                operation["security"] = json!([]);
            }
            operation["responses"]["200"] = if output.full_name() == "google.api.HttpBody" {
                json!({ "description": "A raw body (JSON, TwiML…)", "content": { "*/*": {} } })
            } else {
                json!({ "description": "OK", "content": { "application/json": { "schema": message_ref(&output) } } })
            };
            let body_schema = match body.as_str() {
                "" => None,
                "*" => Some(message_ref(&input)),
                field => input.get_field_by_name(field).map(|f| scalar_schema(&f)),
            };
            if let Some(schema) = body_schema {
                let raw = schema.get("$ref").is_none() && schema["type"] == "object";
                let content =
                    if raw { json!({ "*/*": {} }) } else { json!({ "application/json": { "schema": schema } }) };
                operation["requestBody"] = json!({ "required": false, "content": content });
            }
            paths.entry(public_path(&template)).or_default().insert(verb.to_owned(), operation);
        }
    }
    if let Some(status) = pool.get_message_by_name("google.rpc.Status") {
        collect_schema(&status, &mut schemas);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Omega",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Omnichannel messaging backend. Generated from proto/omega/v1 (the google.api.http annotations Envoy serves).",
        },
        "servers": [{ "url": "/" }],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": { "type": "apiKey", "in": "header", "name": "X-API-KEY" },
                "apiKeyCookie": { "type": "apiKey", "in": "cookie", "name": "X-API-KEY" },
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "sessionCookie": { "type": "apiKey", "in": "cookie", "name": "omega_session" },
            },
        },
        // The default for every operation that does not say otherwise (`security: []`).
        "security": [{ "apiKey": [] }, { "bearer": [] }, { "apiKeyCookie": [] }, { "sessionCookie": [] }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rest_binding_is_documented() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let note =
            &paths["/omega/businesses/{business_id}/clients/{client_id}/conversations/{conversation_id}/note"]["post"];
        assert_eq!(note["operationId"], "ConversationService_AddNote");
        assert_eq!(
            note["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/omega.v1.AddNoteRequest"
        );
        let status = &paths["/omega/businesses/{business_id}/clients/{client_id}/conversations/{conversation_id}/status"]
            ["post"];
        let names: Vec<&str> =
            status["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"status") && names.contains(&"conversation_id"), "{names:?}");
        assert!(
            paths.contains_key("/public/api/v1/inboxes/{inbox_identifier}/contacts/{contact_identifier}/conversations")
        );
        assert!(paths.contains_key("/omega/health"));
        assert_eq!(doc["components"]["schemas"]["omega.v1.AddNoteRequest"]["properties"]["sent_by"]["type"], "integer");
        // One operation per annotated method: no binding lost, none colliding with another.
        let pool = DescriptorPool::decode(DESCRIPTOR_SET).unwrap();
        let http = pool.get_extension_by_name("google.api.http").unwrap();
        let annotated = pool
            .services()
            .flat_map(|s| s.methods().collect::<Vec<_>>())
            .filter(|m| m.options().has_extension(&http))
            .count();
        let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(operations, annotated);
        assert!(operations > 60, "{operations} operations");
    }

    #[test]
    fn types_requirements_and_security_come_from_the_protos() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        // uint32 ids cover the whole unsigned range.
        let sent_by = &schemas["omega.v1.AddNoteRequest"]["properties"]["sent_by"];
        assert_eq!(sent_by["format"], "int64");
        assert_eq!(sent_by["maximum"], u32::MAX);
        assert!(!doc.to_string().contains(r#""format":"int32","minimum""#));
        // field_behavior REQUIRED and (omega.v1.rules).
        assert_eq!(schemas["omega.v1.AddNoteRequest"]["required"], json!(["content", "sender_type"]));
        assert_eq!(schemas["omega.v1.AddNoteRequest"]["properties"]["content"]["maxLength"], 10_000);
        assert_eq!(schemas["omega.v1.OnboardBusinessRequest"]["required"], json!(["name", "time_zone"]));
        let paths = &doc["paths"];
        let status = &paths["/omega/businesses/{business_id}/clients/{client_id}/conversations/{conversation_id}/status"]
            ["post"];
        let param = status["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "status").unwrap();
        assert_eq!(param["required"], true);
        assert_eq!(param["schema"]["enum"], json!(["OPEN", "ACTIVE", "PENDING", "SNOOZED", "RESOLVED"]));
        let list = &paths["/omega/businesses/{business_id}/conversations"]["get"];
        let size = list["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "page_size").unwrap();
        assert_eq!((size["schema"]["minimum"].clone(), size["schema"]["maximum"].clone()), (json!(0), json!(200)));
        // Security per operation: none for health, webhooks and the public chat API.
        assert_eq!(paths["/omega/health"]["get"]["security"], json!([]));
        assert_eq!(paths["/omega/twilio/sms/incoming"]["post"]["security"], json!([]));
        assert_eq!(paths["/public/api/v1/inboxes/{inbox_identifier}/contacts"]["post"]["security"], json!([]));
        assert!(paths["/omega/health/db"]["get"].get("security").is_none(), "the document's default: a key");
        // The answers each operation gives.
        let codes = |op: &Value| op["responses"].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert!(!codes(&paths["/omega/health"]["get"]).contains(&"401".to_owned()));
        assert!(codes(&paths["/omega/health/db"]["get"]).contains(&"401".to_owned()));
        assert!(!codes(&paths["/omega/twilio/sms/incoming"]["post"]).contains(&"415".to_owned()));
        assert!(codes(&paths["/omega/twilio/sms/incoming"]["post"]).contains(&"403".to_owned()));
        assert!(codes(&paths["/omega/api-keys"]["post"]).contains(&"415".to_owned()));
        assert!(!codes(&paths["/omega/api-keys"]["get"]).contains(&"409".to_owned()));
    }
}
