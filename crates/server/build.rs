//! Compiles `proto/*.proto` (Centrifugo's gRPC contract) into a descriptor set with protox,
//! a protobuf compiler in pure Rust: building needs no `protoc` on the machine. The server
//! reads messages through these descriptors (`src/grpc.rs`), so nothing else is generated.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = ["proto/api.proto", "proto/proxy.proto", "proto/unistream.proto"];
    let set = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("centrifugo_descriptors.bin");
    std::fs::write(out, prost::Message::encode_to_vec(&set))?;
    Ok(())
}
