#!/usr/bin/env bash
# A private Docker engine for building and running the project's images on a machine that has
# only the Docker client (and no registry access): install the engine (and compose) if missing, run our own
# dockerd (own socket, data root, exec root, pid file; host networking only, no bridge), and
# make a local Python base image with debootstrap, cached between runs. The base trusts this
# machine's CA bundle (PIP_CERT points at it), so pip inside builds reaches the package index.
#   eval "$(scripts/docker_engine.sh start)"    # prints: export DOCKER_HOST=unix://...
#   scripts/docker_engine.sh base               # local/python:3.11-bookworm (cached)
#   scripts/docker_engine.sh stop
# Needs root (apt, dockerd). Every container must use --network host: traffic stays on 127.0.0.1.
set -euo pipefail

CACHE="${DOCKER_ENGINE_CACHE:-$HOME/.cache/domain-llm-pipeline/docker}"
RUN_DIR="${DOCKER_ENGINE_RUN:-/tmp/domain-llm-docker}"
SOCK="$RUN_DIR/docker.sock"
PIDFILE="$RUN_DIR/dockerd.pid"
BASE_IMAGE=local/python:3.11-bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates,curl

say() { echo "docker-engine: $*" >&2; }

install_engine() {
    local packages=()
    command -v dockerd > /dev/null || packages+=(docker.io)
    command -v debootstrap > /dev/null || packages+=(debootstrap)
    docker compose version > /dev/null 2>&1 || command -v docker-compose > /dev/null || packages+=(docker-compose)
    [ ${#packages[@]} -eq 0 ] && return 0
    say "installing ${packages[*]} (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get update -q > /dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}" > /dev/null
}

start() {
    install_engine
    mkdir -p "$CACHE/data" "$RUN_DIR/exec"
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2> /dev/null; then
        echo "export DOCKER_HOST=unix://$SOCK"; return 0
    fi
    dockerd --host "unix://$SOCK" --data-root "$CACHE/data" --exec-root "$RUN_DIR/exec" --pidfile "$PIDFILE" \
        --bridge=none --iptables=false --ip-masq=false > "$RUN_DIR/dockerd.log" 2>&1 &
    for _ in $(seq 1 60); do
        DOCKER_HOST="unix://$SOCK" docker info > /dev/null 2>&1 && { echo "export DOCKER_HOST=unix://$SOCK"; return 0; }
        sleep 0.5
    done
    say "dockerd did not start; its log:"; tail -20 "$RUN_DIR/dockerd.log" >&2; exit 1
}

base() {
    export DOCKER_HOST="unix://$SOCK"
    ca=/etc/ssl/certs/ca-certificates.crt
    key="$( (echo "bookworm minbase $BASE_PACKAGES"; cat "$ca") | sha256sum | cut -c1-12)"
    if docker image inspect "$BASE_IMAGE" --format '{{index .Config.Labels "rootfs.key"}}' 2> /dev/null | grep -qx "$key"; then
        say "$BASE_IMAGE is up to date"; return 0
    fi
    tarball="$CACHE/rootfs-$key.tar"
    if [ ! -f "$tarball" ]; then
        root="$(mktemp -d)"
        say "debootstrap bookworm ($BASE_PACKAGES): about a minute"
        debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$root" http://deb.debian.org/debian > /dev/null
        cp "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
        tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$root"
    fi
    docker import --change "LABEL rootfs.key=$key" --change 'CMD ["python3"]' \
        --change "ENV PIP_CERT=$ca PIP_DEFAULT_TIMEOUT=180" "$tarball" "$BASE_IMAGE" > /dev/null
    say "$BASE_IMAGE imported"
}

stop() {
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2> /dev/null; then
        pid="$(cat "$PIDFILE")"
        kill "$pid"
        for _ in $(seq 1 40); do kill -0 "$pid" 2> /dev/null || break; sleep 0.25; done
        say "dockerd stopped"
    fi
}

case "${1:-}" in
    start) start ;;
    base) base ;;
    stop) stop ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
