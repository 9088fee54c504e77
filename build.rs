//! Compiles `proto/` with protox (pure Rust, no protoc) into
//! - the Rust types and tonic services/clients (tonic-prost-build), and
//! - `omega_descriptor.bin`, the FileDescriptorSet (imports + source info) that Envoy's
//!   gRPC-JSON transcoder and gRPC reflection both serve. The REST paths live only in the
//!   `google.api.http` annotations inside it.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");

    let mut roots: Vec<PathBuf> =
        fs::read_dir("proto/omega/v1")?.map(|entry| entry.map(|e| e.path())).collect::<Result<_, _>>()?;
    roots.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    roots.sort();
    let mut files: Vec<PathBuf> =
        roots.iter().map(|p| p.strip_prefix("proto").expect("under proto/").to_path_buf()).collect();
    // Error details are never imported by an omega file, yet Envoy needs them in the set to
    // render `google.rpc.BadRequest` as JSON.
    files.push("google/rpc/status.proto".into());
    files.push("google/rpc/error_details.proto".into());

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // Encoded by protox itself: decoding into prost-types and re-encoding would drop the
    // `google.api.http` extension options that Envoy needs.
    fs::write(out_dir.join("omega_descriptor.bin"), compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // google.rpc types come from tonic-types, which tonic's error details use.
        .extern_path(".google.rpc", "::tonic_types::pb")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
