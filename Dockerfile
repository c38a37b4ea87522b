# The image the manifests in deploy/ run: `spillway` (serve, controller,
# scaler, expander, explain, crd) on a distroless base, as user 65532.
#
#   docker build -t ghcr.io/spillway-sched/spillway:0.1.0 .
#
# The tag's version is the crate's (Cargo.toml); deploy/base/deployment.yaml
# names the same tag, and `.ci/image` builds and checks it where Docker runs.

# Build stage: the toolchain Spillway is tested with. The cargo registry and
# target/ are cache mounts, so a rebuild after a source change compiles only
# Spillway's own crates.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p spillway --bin spillway \
 && install -D -m 0755 target/release/spillway /out/spillway

# Run stage: glibc and libgcc only (the binary links nothing else: TLS is
# rustls on ring, the allocator is mimalloc, built in); no shell, no package
# manager; the `nonroot` user (65532:65532), as the Deployment's
# securityContext requires.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/spillway /usr/local/bin/spillway
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/spillway"]
CMD ["--help"]
