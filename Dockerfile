# Multi-stage build: compile in the Rust image, run from a slim Debian as an unprivileged user.
#   docker build -t estafeta .
#   docker run --rm -p 8443:8443 -p 9090:9090 \
#     -e ESTAFETA_ADMIN_TOKEN=... -e ESTAFETA_MASTER_KEY=... -e ESTAFETA_REDIS__URL=redis://redis:6379 \
#     -v /etc/estafeta:/etc/estafeta:ro estafeta
FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches/load \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/auth.rs \
    && echo 'fn main() {}' > benches/load/bare_hyper.rs \
    && echo 'fn main() {}' > benches/load/naive_fred.rs \
    && cargo build --release --locked --bin estafeta \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin estafeta

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin estafeta
COPY --from=build /src/target/release/estafeta /usr/local/bin/estafeta
COPY config/production.example.toml /etc/estafeta/estafeta.toml
USER 10001:10001
ENV ESTAFETA_CONFIG=/etc/estafeta/estafeta.toml
EXPOSE 8443 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/estafeta"]
CMD ["serve"]
