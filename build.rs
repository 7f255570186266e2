//! Compiles the agent's local API (proto/) with protoc (Debian's protobuf-compiler, also needed by k8s-cri).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .compile_protos(&["proto/nodeward/agent/v1/agent.proto"], &["proto"])?;
    Ok(())
}
