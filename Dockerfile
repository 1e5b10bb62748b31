# One image for every Herald binary (herald-ingest, herald-dispatch, herald-retry, ...);
# compose/docker-compose.yml picks the program with `command:`.
#   docker build -t herald .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in a layer of their own: a change to Herald's code does not rebuild
# librdkafka and the crates. The stub sources are replaced below.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin \
    && echo '' > src/lib.rs \
    && echo 'fn main() {}' > src/bin/stub.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/deps/herald-* target/release/deps/libherald-* target/release/.fingerprint/herald-*
COPY src ./src
COPY config ./config
RUN cargo build --release --locked --bins \
    && mkdir -p /out \
    && find target/release -maxdepth 1 -type f -executable -name 'herald*' -exec cp {} /out/ \;

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home herald \
    && mkdir -p /run/herald/redis-acl && chown herald /run/herald/redis-acl
COPY --from=build /out/ /usr/local/bin/
COPY config /etc/herald/
USER herald
ENV HERALD_LOG_FORMAT=json
CMD ["herald", "--help"]
