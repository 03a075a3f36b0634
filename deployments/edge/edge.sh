#!/bin/sh
# The edge container's control: nginx on LISTEN_PORT in front of one gateway container.
#   edge.sh start          the container's command (LISTEN_ADDRESS, LISTEN_PORT, UPSTREAM_PORT, PROXY_TIMEOUT_S)
#   edge.sh switch PORT    route new requests to the gateway on PORT; requests in flight finish on the old one
#   edge.sh upstream       the port of the gateway being served
#   edge.sh drained        exit 0 once no worker of an older configuration is still finishing requests
#   edge.sh health         exit 0 while nginx answers on the public port (the HEALTHCHECK)
set -eu
DIR=/tmp/edge

write_upstream() {
    printf 'upstream gateway { server 127.0.0.1:%s; }\n' "$1" > "$DIR/upstream.conf.new"
    mv "$DIR/upstream.conf.new" "$DIR/upstream.conf"
}

case "${1:-}" in
    start)
        mkdir -p "$DIR"
        sed -e "s/LISTEN_ADDRESS/${LISTEN_ADDRESS:-0.0.0.0}/" -e "s/LISTEN_PORT/${LISTEN_PORT:-8000}/" \
            -e "s/PROXY_TIMEOUT_S/${PROXY_TIMEOUT_S:-90}/" /etc/edge/nginx.conf > "$DIR/nginx.conf"
        write_upstream "${UPSTREAM_PORT:?UPSTREAM_PORT: the port of the first gateway}"
        exec nginx -c "$DIR/nginx.conf" -g "daemon off;"
        ;;
    switch)
        port="${2:?usage: edge.sh switch PORT}"
        cp "$DIR/upstream.conf" "$DIR/upstream.conf.old"
        write_upstream "$port"
        if ! nginx -t -q -c "$DIR/nginx.conf"; then
            mv "$DIR/upstream.conf.old" "$DIR/upstream.conf"
            echo "edge: the configuration for port $port is invalid; still serving the old one" >&2
            exit 1
        fi
        nginx -s reload -c "$DIR/nginx.conf"
        ;;
    upstream)
        sed -n 's/.*127\.0\.0\.1:\([0-9]*\);.*/\1/p' "$DIR/upstream.conf"
        ;;
    drained)
        # old workers rename themselves "nginx: worker process is shutting down" ([n]: not this grep itself)
        ! grep -qs "shutting dow[n]" /proc/[0-9]*/cmdline
        ;;
    health)
        address="${LISTEN_ADDRESS:-0.0.0.0}"
        [ "$address" = 0.0.0.0 ] && address=127.0.0.1
        curl -fsS "http://$address:${LISTEN_PORT:-8000}/edge/health" > /dev/null
        ;;
    *)
        sed -n '2,7p' "$0" >&2
        exit 2
        ;;
esac
