//! Compiles `vendor/centrifugo/*.proto` (Centrifugo's gRPC contract, vendored unchanged) into a descriptor set with protox,
//! a protobuf compiler in pure Rust: building needs no `protoc` on the machine. The server
//! reads messages through these descriptors (`src/grpc.rs`), so nothing else is generated.

use std::path::PathBuf;

/// Under `vendor/` because the files are Centrifugo's, kept byte-identical (see its NOTICE).
const PROTO_DIR: &str = "vendor/centrifugo";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    let files = ["api.proto", "proxy.proto", "unistream.proto"].map(|f| format!("{PROTO_DIR}/{f}"));
    let set = protox::compile(files, [PROTO_DIR])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("centrifugo_descriptors.bin");
    std::fs::write(out, prost::Message::encode_to_vec(&set))?;
    Ok(())
}
