# One image for every Herald program (herald-ingest, herald-dispatch, herald-retry, ...);
# compose/docker-compose.yml and the Helm chart pick the program with `command:`.
#   docker build -t herald .                      the production image (no development tools)
#   docker build --target dev -t herald-dev .     with the development tools (herald-dev, the
#                                                 simulated provider, the local broker)
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
# The production programs without the `dev` feature: no development tool is even compiled
# into them. Then the development tools, for the dev stage only.
RUN cargo build --release --locked --no-default-features --features otlp --bins \
    && mkdir -p /out/prod /out/dev \
    && find target/release -maxdepth 1 -type f -executable -name 'herald*' -exec cp {} /out/prod/ \; \
    && cargo build --release --locked --bin herald-dev --bin herald-provider --bin herald-broker \
    && cp target/release/herald-dev target/release/herald-provider target/release/herald-broker /out/dev/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home herald \
    && mkdir -p /run/herald/redis-acl && chown herald /run/herald/redis-acl
COPY config /etc/herald/
USER herald
ENV HERALD_LOG_FORMAT=json
CMD ["herald", "--help"]

# The development tools beside the programs: the simulated provider (compose's `provider`),
# the local Kafka-protocol broker and `herald-dev`. `docker build --target dev -t herald-dev .`
FROM runtime AS dev
COPY --from=build /out/prod/ /out/dev/ /usr/local/bin/

# The production image (the default target, what the Helm chart runs): Herald's programs and
# the operators' CLI, built without the `dev` feature.
FROM runtime AS production
COPY --from=build /out/prod/ /usr/local/bin/
