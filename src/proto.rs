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
