# codeexec container image: the server plus the thirteen languages and the data-science
# stack, installed by scripts/install-deps.sh from scripts/packages.txt and
# scripts/npm-packages.txt: the same script and lists a Debian host uses (one list, not two).
#
#   docker build -t codeexec .
#   docker run --rm -p 8080:8080 -e CODEEXEC_API_KEY=... \
#     --cap-drop ALL --cap-add SYS_ADMIN --cap-add SETUID --cap-add SETGID \
#     --cap-add CHOWN --cap-add DAC_OVERRIDE \
#     --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
#     --security-opt no-new-privileges:true --ulimit memlock=8388608 codeexec
#
# The sandbox needs those privileges to build its own namespaces and cgroups inside the
# container; docs/integration.md ("Privileges") says why each one is there. The memlock
# limit is not a privilege: it lets the warm templates pin the pages every run writes.
#
# Stages:
#   gomod    go.mod reduced to its `go` line, so dependency bumps do not invalidate `deps`.
#   deps     debian:bookworm-slim + install-deps.sh: Debian packages, Go (toolchain zip from
#            the Go module proxy), npm tools, Go's read-only build cache for the sandbox.
#   build    FROM deps (Go, gcc and libseccomp-dev are already there: no second install,
#            no second list), compiles cmd/codeexec with cgo. Not shipped.
#   runtime  FROM deps + the binary.
# Only plain Dockerfile instructions are used, so both BuildKit and the legacy builder (and
# Cloud Build) build it. Build with `--network host` where the daemon has no bridge.

ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS gomod
COPY go.mod /src/go.mod.full
RUN sed -n '/^go [0-9]/p' /src/go.mod.full > /src/go.mod

FROM ${BASE_IMAGE} AS deps
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PATH=/usr/local/go/bin:/usr/local/lib/codeexec/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Optional overrides of install-deps.sh (a mirror of the Go module proxy, another Go).
ARG CODEEXEC_GOPROXY=https://proxy.golang.org
ARG CODEEXEC_GO_VERSION=
ARG CODEEXEC_GO_SHA256=
COPY --from=gomod /src/go.mod /src/go.mod
COPY scripts/install-deps.sh scripts/packages.txt scripts/npm-packages.txt /src/scripts/
# EXTRA_CA_CERTS: PEM certificates to trust in addition to Debian's (a TLS-intercepting
# proxy between the build and the Go module proxy or npm). They stay trusted in the image.
ARG EXTRA_CA_CERTS=
# mkdir: the slim image has no man directories, and openjdk's postinst needs man1 for
# its update-alternatives links. NPM_CONFIG_CAFILE: npm trusts the system bundle (with
# EXTRA_CA_CERTS) instead of node's built-in list.
RUN mkdir -p /usr/share/man/man1 /usr/local/share/ca-certificates \
 && if [[ -n $EXTRA_CA_CERTS ]]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/codeexec-extra.crt; \
        if command -v update-ca-certificates >/dev/null; then update-ca-certificates; fi; \
    fi \
 && NPM_CONFIG_CAFILE=/etc/ssl/certs/ca-certificates.crt bash /src/scripts/install-deps.sh \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /root/.npm /root/.cache /tmp/* /var/tmp/* \
 && go version && node --version && python3 --version

FROM deps AS build
ENV CGO_ENABLED=1 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local \
    GOPATH=/go GOCACHE=/root/.cache/go-build
WORKDIR /src
ARG CODEEXEC_GOPROXY=https://proxy.golang.org
COPY go.mod go.sum ./
RUN GOPROXY=$CODEEXEC_GOPROXY go mod download
COPY cmd ./cmd
COPY internal ./internal
RUN go build -trimpath -ldflags='-s -w' -o /out/codeexec ./cmd/codeexec \
 && /out/codeexec serve --help >/dev/null

FROM deps AS runtime
COPY --from=build /out/codeexec /usr/local/bin/codeexec
COPY infra/codeexec/entrypoint.sh /usr/local/bin/codeexec-entrypoint
# Defaults the Compose snippet and the Helm chart also use. The port is left unset so that
# PORT (Cloud Run) works: the server listens on CODEEXEC_PORT, else PORT, else 8080.
ENV CODEEXEC_STORAGE_DIR=/tmp/codeexec \
    CODEEXEC_RUN_DIR=/run/codeexec
RUN mkdir -p /tmp/codeexec /run/codeexec && chmod 0711 /run/codeexec
WORKDIR /tmp
EXPOSE 8080
# The server runs as root *inside the container* on purpose: it mounts a tmpfs per run,
# maps each sandbox to its own uid range (uid_map for foreign uids needs CAP_SETUID) and
# creates cgroups. The untrusted code itself never runs as root: it runs as an unprivileged
# uid in its own user namespace with no capabilities, no_new_privs and a seccomp filter.
# Give the container only the capabilities listed above (cap_drop: ALL first).
USER 0:0
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${CODEEXEC_PORT:-${PORT:-8080}}/health" || exit 1
STOPSIGNAL SIGTERM
# The entrypoint removes the runtime's masks over /proc (the sandbox mounts a fresh /proc
# per run), makes the container's own cgroup writable for the per-run cgroups (v1 and v2),
# then execs `codeexec serve`.
ENTRYPOINT ["/usr/local/bin/codeexec-entrypoint"]
CMD ["serve"]
