# formatdata: release build, then a minimal non-root runtime image with the two binaries.
#   docker build -t formatdata .
#   docker run --rm -p 8080:8080 formatdata
# The build needs no protoc (build.rs uses protox) and no cmake or nasm: a C compiler for ring,
# zstd and mimalloc, which the rust image has.

FROM rust:1.89-bookworm AS build
WORKDIR /src
# Dependencies first, so code changes do not refetch the registry.
COPY Cargo.toml Cargo.lock ./
COPY build.rs ./
COPY proto proto
COPY src src
COPY benches benches
# The test-support crate is a workspace member: cargo reads its manifest even to build the bins.
COPY tests/support tests/support
RUN cargo build --release --locked --bins

# distroless "cc": glibc and libgcc (for the C parts), no shell, no package manager; "nonroot"
# runs as uid 65532, as deploy/kubernetes expects.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/server /usr/local/bin/server
COPY --from=build /src/target/release/client /usr/local/bin/client
USER 65532:65532
# Inside a container the server must listen beyond loopback.
ENV FORMATDATA_ADDR=0.0.0.0:8080 \
    FORMATDATA_LOG_FORMAT=json
EXPOSE 8080
# Exec form: there is no shell. `client health` exits 0 only when the server reports SERVING.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/client", "--addr", "127.0.0.1:8080", "--timeout", "2", "--retries", "0", "health"]
ENTRYPOINT ["/usr/local/bin/server"]
