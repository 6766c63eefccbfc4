//! Build script: compiles the gRPC API under `proto/` into Rust.
//!
//! The `.proto` files are parsed with `protox`, a pure-Rust protobuf compiler,
//! so building authzd needs no `protoc` on the machine. The resulting file
//! descriptor set (with source comments, and the imported well-known types so
//! reflection clients can resolve every dependency) is
//! - written to `$OUT_DIR/authzd_descriptor.bin`, served by gRPC reflection
//!   (`crate::proto::FILE_DESCRIPTOR_SET`), and
//! - handed to `tonic-prost-build`, which generates the messages, clients and
//!   servers included by `src/proto.rs`, and
//! - turned into the OpenAPI 3 document of the HTTP/JSON gateway,
//!   `$OUT_DIR/openapi.json` (`build/openapi.rs`; served at `GET /openapi.json`).
//!
//! Errors (a syntax error in a `.proto`, an unresolved import) are returned
//! from `main`, so cargo prints them instead of a panic.

//!
//! Only builds with the generated API (features `follower` and `server`) run
//! any of this; the lean library (model, presets, engine) needs no protobuf.

#[cfg(feature = "follower")]
use std::error::Error;
#[cfg(feature = "follower")]
use std::path::{Path, PathBuf};

#[cfg(feature = "follower")]
#[path = "build/openapi.rs"]
mod openapi;

#[cfg(not(feature = "follower"))]
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}

/// Where the API definitions live, relative to the crate root; also the
/// protobuf include root (files import `authzd/v1/types.proto`).
#[cfg(feature = "follower")]
const PROTO_ROOT: &str = "proto";

/// File name (without `.bin`) of the descriptor set in `OUT_DIR`, as named by
/// `tonic::include_file_descriptor_set!("authzd_descriptor")`.
#[cfg(feature = "follower")]
const DESCRIPTOR_NAME: &str = "authzd_descriptor";

#[cfg(feature = "follower")]
fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/openapi.rs");

    let mut protos = Vec::new();
    collect_protos(Path::new(PROTO_ROOT), &mut protos)?;
    if protos.is_empty() {
        return Err(format!("no .proto files found under `{PROTO_ROOT}/`").into());
    }
    protos.sort();

    let mut compiler =
        protox::Compiler::new([PROTO_ROOT]).map_err(|e| format!("cannot set up the protobuf compiler: {e}"))?;
    compiler.include_source_info(true).include_imports(true);
    for file in &protos {
        compiler.open_file(file).map_err(|e| format!("cannot compile `{}`: {e:?}", file.display()))?;
    }

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set (run through cargo)")?);
    let descriptor_path = out_dir.join(format!("{DESCRIPTOR_NAME}.bin"));
    // `compile_fds` does not write the set itself (its `file_descriptor_set_path`
    // only applies when it runs protoc), so write it here.
    std::fs::write(&descriptor_path, compiler.encode_file_descriptor_set())
        .map_err(|e| format!("cannot write `{}`: {e}", descriptor_path.display()))?;

    let openapi_path = out_dir.join("openapi.json");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    std::fs::write(&openapi_path, openapi::document(&compiler.file_descriptor_set(), &version))
        .map_err(|e| format!("cannot write `{}`: {e}", openapi_path.display()))?;

    // The server's services only with the server; the follower needs the clients.
    let server = std::env::var_os("CARGO_FEATURE_SERVER").is_some();
    let mut builder = tonic_prost_build::configure()
        .build_server(server)
        .build_client(true)
        // Ordered maps: stable iteration, and the model's maps are BTreeMaps too.
        .btree_map(".");
    if server {
        // prost's codec, but an undecodable message is INVALID_ARGUMENT (src/service/wire.rs).
        builder = builder.codec_path("crate::service::wire::Codec");
    }
    builder
        .compile_fds(compiler.file_descriptor_set())
        .map_err(|e| format!("cannot generate Rust code from `{PROTO_ROOT}/`: {e}"))?;
    Ok(())
}

/// Appends every `.proto` file under `dir` (recursively) to `out`.
#[cfg(feature = "follower")]
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
