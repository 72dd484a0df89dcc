# One image for the three services and the operator tool; the compose file and the Kubernetes manifests
# choose the binary with `command`.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# librdkafka is compiled from the bundled sources (make + gcc from the base image).
RUN cargo build --release --locked \
        -p eventgate-ingest-api -p eventgate-db-writer -p eventgate-stats-api -p eventgate-cli \
    && mkdir /out \
    && cp target/release/eventgate-ingest-api target/release/eventgate-db-writer \
          target/release/eventgate-stats-api target/release/eventgate /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 eventgate
COPY --from=build /out/ /usr/local/bin/
COPY config /etc/eventgate/config
WORKDIR /etc/eventgate
ENV EVENTGATE_CONFIG=/etc/eventgate/config/eventgate.toml \
    EVENTGATE_TELEMETRY__LOG_FORMAT=json
USER eventgate
EXPOSE 8080 8081 8082
CMD ["eventgate-ingest-api"]
