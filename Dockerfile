# syntax=docker/dockerfile:1
# The two images of a release, built per architecture (linux/amd64, linux/arm64) by
# .github/workflows/release.yaml:
#   docker buildx build --target flaggit            -t ghcr.io/flaggit/flaggit:<version> .
#   docker buildx build --target flaggit-loadtester -t ghcr.io/flaggit/flaggit-loadtester:<version> .
# Both run as the non-root user 65532 and need no writable root filesystem (the manifests
# mount an emptyDir at /tmp and set readOnlyRootFilesystem). Without a container engine,
# scripts/image.sh builds equivalent images with umoci.

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

# Linted with hadolint 2.15 (clean). The Debian packages are not pinned to versions (DL3008):
# a bookworm point release removes the old versions from the mirrors, which would break the
# build; the base images' tags and Cargo.lock fix what goes in.

# --- build: the release binaries, linked against this Debian's glibc -------------------------
FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN} AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config perl make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY tests tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=private \
    cargo build --release --locked --bin flaggit --bin flaggit-loadtester \
 && install -D -m 0755 target/release/flaggit /out/flaggit \
 && install -D -m 0755 target/release/flaggit-loadtester /out/flaggit-loadtester

# --- tools of the load tester: hey from Debian, kubectl and helm from their releases ---------
FROM docker.io/library/debian:${DEBIAN}-slim AS tools
ARG TARGETARCH
ARG KUBECTL_VERSION=v1.33.4
ARG HELM_VERSION=v3.18.6
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl hey \
 && rm -rf /var/lib/apt/lists/*
RUN curl -fsSLo /usr/local/bin/kubectl "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl" \
 && curl -fsSL "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl.sha256" \
    | sed 's#$#  /usr/local/bin/kubectl#' | sha256sum -c - \
 && chmod 0755 /usr/local/bin/kubectl \
 && curl -fsSLo /tmp/helm.tgz "https://get.helm.sh/helm-${HELM_VERSION}-linux-${TARGETARCH}.tar.gz" \
 && curl -fsSL "https://get.helm.sh/helm-${HELM_VERSION}-linux-${TARGETARCH}.tar.gz.sha256sum" \
    | sed 's#  .*$#  /tmp/helm.tgz#' | sha256sum -c - \
 && tar -xzf /tmp/helm.tgz -C /tmp \
 && install -m 0755 "/tmp/linux-${TARGETARCH}/helm" /usr/local/bin/helm

# --- flaggit: the controller and CLI on distroless (glibc, CA certificates, no shell) --------
FROM gcr.io/distroless/cc-debian12:nonroot AS flaggit
COPY --from=build /out/flaggit /usr/local/bin/flaggit
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/flaggit"]
CMD ["run"]

# --- flaggit-loadtester: Flagger's load tester tools (bash, curl, hey, kubectl, helm) --------
FROM docker.io/library/debian:${DEBIAN}-slim AS flaggit-loadtester
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends bash ca-certificates curl hey \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --home-dir /home/nonroot --create-home --shell /usr/sbin/nologin nonroot
COPY --from=tools /usr/local/bin/kubectl /usr/local/bin/helm /usr/local/bin/
COPY --from=build /out/flaggit-loadtester /usr/local/bin/flaggit-loadtester
USER 65532:65532
WORKDIR /home/nonroot
ENTRYPOINT ["/usr/local/bin/flaggit-loadtester"]
