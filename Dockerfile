# syntax=docker/dockerfile:1
#
# dgf container image.
#   docker build -t dgf .
#   docker run --rm -v $PWD/dgf.toml:/etc/dgf/dgf.toml:ro -p 6432:6432 -p 9930:9930 dgf
# The config must make the admin endpoint listen on 0.0.0.0:9930 (or at least on
# 127.0.0.1:9930) for the HEALTHCHECK below; see config/examples/docker.toml.

# ---- build -----------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the crates.io registry and compiled dependencies
# between builds, so a source change only recompiles the workspace crates.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p dgf --bin dgf \
 && install -D -m 0755 target/release/dgf /out/dgf

# ---- runtime ---------------------------------------------------------------
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 dgf \
 && useradd --system --uid 10001 --gid dgf --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin dgf \
 && install -d -o dgf -g dgf -m 0750 /etc/dgf /var/lib/dgf
COPY --from=builder /out/dgf /usr/local/bin/dgf
# user dgf, numeric so that runAsNonRoot-style checks can verify it
USER 10001:10001
WORKDIR /var/lib/dgf
EXPOSE 6432 9930
# No curl in the slim image: speak HTTP/1.0 to the admin endpoint with bash.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9930 && printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["dgf"]
CMD ["run", "--config", "/etc/dgf/dgf.toml"]
