#!/bin/sh
# The edge container's control: HAProxy on LISTEN_PORT in front of the gateway containers.
#   edge.sh start          the container's command (LISTEN_ADDRESS, LISTEN_PORT, UPSTREAM_PORT, PROXY_TIMEOUT_S)
#   edge.sh api COMMAND    one HAProxy runtime API command line (stage 6 switches gateways with these)
#   edge.sh health         exit 0 while the edge answers on the public port (the HEALTHCHECK)
set -eu
export EDGE_DIR=/tmp/edge

case "${1:-}" in
    start)
        : "${UPSTREAM_PORT:?UPSTREAM_PORT: the port of the first gateway}"
        mkdir -p "$EDGE_DIR"
        exec haproxy -db -f /etc/edge/haproxy.cfg
        ;;
    api)
        printf '%s\n' "${2:?usage: edge.sh api COMMAND}" | socat -t 5 stdio "unix-connect:$EDGE_DIR/admin.sock"
        ;;
    health)
        address="${LISTEN_ADDRESS:-0.0.0.0}"
        [ "$address" = 0.0.0.0 ] && address=127.0.0.1
        curl -fsS "http://$address:${LISTEN_PORT:-8000}/edge/health" > /dev/null
        ;;
    *)
        sed -n '2,5p' "$0" >&2
        exit 2
        ;;
esac
