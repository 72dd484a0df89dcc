# syntax=docker/dockerfile:1
# One image for the three services and the operator tool; docker-compose.yml and the Kubernetes manifests
# (deploy/kubernetes) choose the binary with `command`. Build: `docker build -t eventgate:local .`

# --- build -----------------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# librdkafka is compiled from its bundled sources (cmake is not needed: rdkafka builds it with make), with
# TLS and SASL SCRAM against the system OpenSSL: libssl-dev and pkg-config, both in rust:bookworm already.
COPY . .
# Cache mounts keep the registry and the target directory between builds (BuildKit); the binaries are
# copied out of the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p eventgate-ingest-api -p eventgate-db-writer -p eventgate-stats-api -p eventgate-cli \
    && mkdir /out \
    && cp target/release/eventgate-ingest-api target/release/eventgate-db-writer \
          target/release/eventgate-stats-api target/release/eventgate /out/

# --- run -------------------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# libssl3: librdkafka's TLS (linked dynamically); ca-certificates: the trust store for TLS to Kafka (when
# kafka.ssl_ca_location is unset), SMTP, JWKS and OTLP endpoints; curl: the compose health checks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home eventgate
COPY --from=build /out/ /usr/local/bin/
# Topics, access rules and defaults; mount another directory over it (or set EVENTGATE_* variables).
COPY config /etc/eventgate/config
WORKDIR /etc/eventgate
ENV EVENTGATE_CONFIG=/etc/eventgate/config/eventgate.toml \
    EVENTGATE_TELEMETRY__LOG_FORMAT=json
USER 10001
# ingest-api, stats-api, db-writer (health and metrics).
EXPOSE 8080 8081 8082
# SIGTERM starts the graceful stop (readiness 503, drain, in-flight work finished); the services are PID 1
# and handle it themselves.
STOPSIGNAL SIGTERM
CMD ["eventgate-ingest-api"]
