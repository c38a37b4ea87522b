//! Compiles `proto/` (cluster-autoscaler's gRPC expander and the subset of
//! Kubernetes' protobuf types it carries) with protox, a protobuf compiler
//! written in Rust, so building Spillway needs no system `protoc`.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    #[cfg(feature = "runtime")]
    {
        let files = protox::compile(["proto/expander.proto"], ["proto"])
            .unwrap_or_else(|e| panic!("compiling proto/expander.proto: {e:?}"));
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .build_transport(false)
            .include_file("proto.rs")
            .compile_fds(files)
            .unwrap_or_else(|e| panic!("generating the expander's Rust code: {e}"));
    }
}
