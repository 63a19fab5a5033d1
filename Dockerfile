# syntax=docker/dockerfile:1
#
# pgha image: the `pgha` binary and PostgreSQL 15 on Debian 12 (bookworm),
# running as the unprivileged user `pgha` (uid 10001). The entry point is
# `pgha` itself: every container of docker-compose.yml runs a pgha
# subcommand (agent, proxy, secrets init) and nothing else.
#
#   docker build -t pgha .
#   docker run --rm pgha --help

# --- build -----------------------------------------------------------------
# Rust on Debian bookworm, so the binary links against the runtime's glibc.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
# pg_query (the proxy's SQL classifier) needs libclang for bindgen and a C
# compiler; etcd-client needs protoc. Debian versions are not pinned: the
# release (bookworm) is, and old point versions vanish from the mirrors.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libclang-dev clang protobuf-compiler pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the crate registry and target/ across builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pgha \
 && install -m 0755 target/release/pgha /usr/local/bin/pgha

# --- runtime ---------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# The PostgreSQL major version is pinned: data directories are not portable
# across majors. Debian 12 ships PostgreSQL 15.
ARG PG_MAJOR=15
ENV PG_MAJOR=${PG_MAJOR} \
    LANG=C.UTF-8 \
    PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The service user first, with a fixed uid/gid (volumes keep numeric owners).
# postgresql-common is told not to create the packaged "main" cluster: pgha
# runs initdb itself. postgresql-15 pins the major version; the point release
# is Debian's current one (old ones vanish from the mirrors).
# hadolint ignore=DL3008
RUN set -eux; \
    groupadd --system --gid 10001 pgha; \
    useradd --system --uid 10001 --gid pgha --home-dir /var/lib/pgha \
      --no-create-home --shell /bin/bash pgha; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-common; \
    sed -ri 's/^#?\s*create_main_cluster\s*=.*$/create_main_cluster = false/' \
      /etc/postgresql-common/createcluster.conf; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      "postgresql-${PG_MAJOR}" "postgresql-client-${PG_MAJOR}"; \
    rm -rf /var/lib/apt/lists/*; \
    test -x "/usr/lib/postgresql/${PG_MAJOR}/bin/initdb"; \
    test ! -d "/var/lib/postgresql/${PG_MAJOR}/main"
# Mount points of docker-compose.yml's volumes. They exist in the image and
# belong to pgha, so a new named volume starts with that owner and mode.
RUN install -d -o pgha -g pgha -m 0755 /var/lib/pgha \
 && install -d -o pgha -g pgha -m 0700 /var/lib/pgha/members /var/lib/pgha/secrets \
 && install -d -o pgha -g pgha -m 0750 /var/lib/pgha/archive \
 && install -d -m 0755 /etc/pgha
COPY --from=build /usr/local/bin/pgha /usr/local/bin/pgha
# Health probe used by docker-compose.yml (bash /dev/tcp; no curl needed).
COPY docker/pgha-check /usr/local/bin/pgha-check
USER 10001:10001
WORKDIR /var/lib/pgha
# Agent REST API, PostgreSQL, proxy rw / ro / primary.
EXPOSE 8008 5432 6432 6433 6434
ENTRYPOINT ["/usr/local/bin/pgha"]
CMD ["--help"]
