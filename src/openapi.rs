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
        Kind::Uint32 | Kind::Fixed32 => json!({ "type": "integer", "format": "int32", "minimum": 0 }),
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

fn field_schema(field: &FieldDescriptor) -> Value {
    let item = scalar_schema(field);
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
    for field in message.fields() {
        if let Kind::Message(inner) = field.kind() {
            collect_schema(&inner, schemas);
        }
        properties.insert(field.name().to_owned(), field_schema(&field));
    }
    let mut schema = json!({ "type": "object", "properties": properties });
    let text = comment(message.parent_file_descriptor_proto(), message.path());
    if !text.is_empty() {
        schema["description"] = json!(text);
    }
    schemas.insert(message.full_name().to_owned(), schema);
}

fn error_responses() -> Value {
    let error = json!({ "content": { "application/json": { "schema": { "$ref": "#/components/schemas/google.rpc.Status" } } } });
    let with = |description: &str| {
        let mut e = error.clone();
        e["description"] = json!(description);
        e
    };
    json!({
        "400": with("A request Envoy cannot read (a NUL or undecodable byte in the path, an unknown method)"),
        "401": with("Missing or invalid credentials"),
        "403": with("Not allowed (or a provider signature that does not match, or a cookie credential sent from another site)"),
        "404": with("Unknown id or path (including another business's data)"),
        "405": with("A method this path does not have (the `Allow` header lists those it has)"),
        "409": with("Conflicts with the current state"),
        "413": with("A request body over 4 MiB"),
        "415": with("A request body that is not JSON"),
        "422": with("Parameter error: `details[0].field_violations` name the fields"),
        "429": with("Too many failed authentications from this address"),
        "431": with("A URL and headers over 60 KiB"),
        "503": with("The database is unavailable"),
    })
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
                .map(|(name, field)| json!({ "name": name, "in": "path", "required": true, "schema": scalar_schema(&field) }))
                .collect();
            if body.is_empty() {
                for field in input
                    .fields()
                    .filter(|f| !in_path.contains(&f.name().to_owned()) && !matches!(f.kind(), Kind::Message(_)))
                {
                    parameters.push(json!({ "name": field.name(), "in": "query", "required": false, "schema": field_schema(&field) }));
                }
            }
            let mut operation = json!({
                "operationId": format!("{}_{}", service.name(), method.name()),
                "tags": [service.name()],
                "summary": comment(method.parent_file().file_descriptor_proto(), method.path()),
                "parameters": parameters,
                "responses": error_responses(),
            });
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
            },
        },
        "security": [{ "apiKey": [] }, { "apiKeyCookie": [] }, { "bearer": [] }],
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
}
