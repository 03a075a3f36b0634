#!/usr/bin/env bash
# Seed-compatible entry point: sets up the environment if needed, then runs pipeline.py and serving.
#   scripts/run_pipeline.sh --config configs/local.yaml            # every stage (rollout only if a gateway runs)
#   scripts/run_pipeline.sh --config configs/local.yaml --stage 2
#   scripts/run_pipeline.sh --start 1 --end 2 --config config.yaml
#   scripts/run_pipeline.sh --list
#   scripts/run_pipeline.sh --review --config configs/local.yaml   # review the QA pairs in a browser (127.0.0.1:8790)
#   scripts/run_pipeline.sh --serve-local --config configs/local.yaml   # gateway with the in-process model (CPU)
#   scripts/run_pipeline.sh --serve-local --config configs/local-vllm.yaml  # the CPU build of vLLM, then the gateway
#   scripts/run_pipeline.sh --serve-local --config configs/local-llamacpp.yaml  # llama.cpp's llama-server (CPU), gateway
#   scripts/run_pipeline.sh --build                                     # docker images: gateway, edge, GPU trainer
#   scripts/run_pipeline.sh --serve --config config.yaml                # compose: vLLM + Prometheus; stage 6: edge + gateway
#   scripts/run_pipeline.sh --test --config configs/local.yaml          # live checks against the running gateway
#   scripts/run_pipeline.sh --stop                                      # stop what --serve / --serve-local started
#   scripts/run_pipeline.sh --all --config configs/local.yaml           # pipeline, serve locally, roll out, test
set -euo pipefail
cd "$(dirname "$0")/.."

args=() config="configs/local.yaml" build=0 serve=0 serve_local=0 live_test=0 stop=0 all=0 run=0
while [ $# -gt 0 ]; do
    case "$1" in
        --config)
            [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }
            config="$2"; args+=("$1" "$2"); shift 2 ;;
        --stage|--start|--end)
            [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }
            args+=("$1" "$2"); run=1; shift 2 ;;
        --list|--preview|--verbose|--review)
            args+=("$1"); run=1; shift ;;
        --review-host|--review-port)
            [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }
            args+=("$1" "$2"); run=1; shift 2 ;;
        --build) build=1; shift ;;
        --serve) serve=1; shift ;;
        --serve-local) serve_local=1; shift ;;
        --test) live_test=1; shift ;;
        --stop) stop=1; shift ;;
        --all) all=1; shift ;;
        -h|--help)
            sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *)
            echo "error: unknown option '$1' (supported: --stage --start --end --config --list --preview --verbose --review" \
                 "--build --serve --serve-local --test --stop --all)" >&2
            exit 2 ;;
    esac
done
serving_flags=$((build + serve + serve_local + live_test + stop + all))
[ "$serving_flags" -eq 0 ] && run=1

PY="${VENV_DIR:-.venv}/bin/python"
PIDFILE=logs/gateway.pid VLLM_PIDFILE=logs/vllm.pid

setting() {  # setting <python expression on the loaded config `c`>
    "$PY" -c "from core.config import load_config; c = load_config('$config'); print($1)"
}

need_docker() {
    command -v docker > /dev/null || { echo "error: $1 needs Docker (docker CLI and a running engine)" >&2; exit 2; }
    docker info > /dev/null 2>&1 || { echo "error: $1: the Docker engine is not reachable (docker info failed)" >&2; exit 2; }
}

compose() {  # COMPOSE_FILES: extra -f options (the GPU file)
    local files=(-p domain-llm -f deployments/docker-compose.yml ${COMPOSE_FILES:-})
    if docker compose version > /dev/null 2>&1; then docker compose "${files[@]}" "$@"
    elif command -v docker-compose > /dev/null; then docker-compose "${files[@]}" "$@"
    else echo "error: docker compose is not installed (the compose plugin or docker-compose)" >&2; exit 2; fi
}

wait_ready() {  # wait_ready <url> <seconds>: model loaded and warmed up
    for _ in $(seq 1 "$2"); do
        curl -fsS "$1/ready" > /dev/null 2>&1 && return 0
        kill -0 "$(cat "$PIDFILE")" 2> /dev/null || { echo "error: the gateway exited (see logs/gateway.out)" >&2; exit 1; }
        sleep 1
    done
    echo "error: the gateway at $1 is not ready after $2 s (see logs/gateway.out and logs/api.log)" >&2; exit 1
}

start_engine() {  # the CPU build of vLLM for serving.backend: vllm (scripts/vllm_engine.sh installs it on first use)
    local url; url="$(setting c.serving.vllm_url)"
    if curl -fsS "$url/health" > /dev/null 2>&1; then
        echo "serve-local: vLLM already answers at $url"; return 0
    fi
    local engine_python command
    engine_python="$(bash scripts/vllm_engine.sh)"
    command="$("$PY" -m core.engine --config "$config" --python "$engine_python")"
    mkdir -p logs
    nohup bash -c "exec $command" > logs/vllm.out 2>&1 &
    echo $! > "$VLLM_PIDFILE"
    echo "serve-local: starting vLLM (CPU build) at $url, pid $(cat "$VLLM_PIDFILE"); up to ${VLLM_START_TIMEOUT_S:=900} s"
    for _ in $(seq 1 "$VLLM_START_TIMEOUT_S"); do
        curl -fsS "$url/health" > /dev/null 2>&1 && return 0
        kill -0 "$(cat "$VLLM_PIDFILE")" 2> /dev/null || {
            echo "error: vLLM exited while starting (its log: logs/vllm.out)" >&2; tail -5 logs/vllm.out >&2; exit 1; }
        sleep 1
    done
    echo "error: vLLM is not up after $VLLM_START_TIMEOUT_S s (its log: logs/vllm.out)" >&2; exit 1
}

serve_local() {
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2> /dev/null; then
        echo "serve-local: the gateway is already running (pid $(cat "$PIDFILE"))"; return 0
    fi
    local backend; backend="$(setting c.serving.backend)"
    [ "$backend" = vllm ] && start_engine
    if [ "$backend" = llamacpp ]; then  # llama-server (built once) and the base model's GGUF (converted once)
        bash scripts/llamacpp.sh > /dev/null
        echo "serve-local: llama.cpp serves $("$PY" -m tasks.release.exports --config "$config")"
    fi
    mkdir -p logs
    nohup "$PY" -m serving --config "$config" > logs/gateway.out 2>&1 &
    echo $! > "$PIDFILE"
    url="$(setting c.serving.gateway_url)"
    wait_ready "$url" 300
    echo "serve-local: gateway ($backend backend) at $url, pid $(cat "$PIDFILE"); docs at $url/docs; stop with --stop"
}

serve_containers() {
    need_docker --serve
    [ "$(setting c.serving.rollout)" = containers ] || {
        echo "error: --serve runs gateway containers: set serving.rollout: containers in $config (config.yaml does)," \
             "or use --serve-local" >&2; exit 2; }
    eval "$(setting "'\n'.join(f'export {k}={v}' for k, v in {
        'BASE_MODEL': c.finetuning.base_model, 'VLLM_PORT': c.serving.vllm_port,
        'MAX_LORA_RANK': c.serving.max_lora_rank, 'MAX_LORAS': c.serving.max_loras, 'MAX_MODEL_LEN': c.serving.max_model_len, 'VLLM_DTYPE': c.serving.dtype,
        'GPU_MEMORY_UTILIZATION': c.serving.gpu_memory_utilization, 'GATEWAY_PORT': c.serving.port,
        'PROMETHEUS_PORT': c.serving.prometheus_port, 'VLLM_GPUS': c.serving.vllm_gpus,
        'LOGS_DIR': c.path(c.paths.logs).resolve(), 'REGISTRY_DIR': c.path(c.paths.registry).resolve()}.items())")"
    registration="$(setting "c.path(c.paths.reports) / 'registration.json'")"
    [ -f "$registration" ] || { echo "error: --serve needs a registered adapter ($registration): run stage 5 first" >&2; exit 2; }
    mkdir -p "$REGISTRY_DIR" "$LOGS_DIR"
    # Prometheus scrapes the configured ports (the edge in front of the gateways, and vLLM)
    export PROMETHEUS_CONFIG="$LOGS_DIR/prometheus.yml"
    sed -e "s/localhost:8000/localhost:$GATEWAY_PORT/" -e "s/localhost:8001/localhost:$VLLM_PORT/" \
        deployments/prometheus.yml > "$PROMETHEUS_CONFIG"
    [ "$VLLM_GPUS" = all ] && export COMPOSE_FILES="-f deployments/docker-compose.gpu.yml"
    compose up -d
    vllm_url="$(setting c.serving.vllm_url)"
    echo "serve: waiting for vLLM at $vllm_url (up to ${VLLM_START_TIMEOUT_S:=1800} s: it may download the base model)"
    for _ in $(seq 1 "$VLLM_START_TIMEOUT_S"); do
        curl -fsS "$vllm_url/health" > /dev/null 2>&1 && break
        sleep 1
    done
    curl -fsS "$vllm_url/health" > /dev/null 2>&1 || {
        echo "error: vLLM is not up after $VLLM_START_TIMEOUT_S s (its log: docker logs domain-llm_vllm_1, or" \
             "docker compose -p domain-llm logs vllm)" >&2; exit 1; }
    "$PY" pipeline.py --config "$config" --stage 6   # starts the edge and the adapter's gateway container
    echo "serve: gateway at $(setting c.serving.gateway_url) (edge → gateway container), vLLM on :$VLLM_PORT," \
         "Prometheus on :$PROMETHEUS_PORT; stop with --stop"
}

stop_all() {
    if [ -f "$PIDFILE" ]; then
        kill "$(cat "$PIDFILE")" 2> /dev/null && echo "stop: local gateway stopped" || true
        rm -f "$PIDFILE"
    fi
    if [ -f "$VLLM_PIDFILE" ]; then  # SIGTERM: vLLM shuts its engine process down too
        pid="$(cat "$VLLM_PIDFILE")"
        if kill "$pid" 2> /dev/null; then
            for _ in $(seq 1 30); do kill -0 "$pid" 2> /dev/null || break; sleep 1; done
            kill -9 "$pid" 2> /dev/null || true
            echo "stop: vLLM stopped"
        fi
        rm -f "$VLLM_PIDFILE"
    fi
    if command -v docker > /dev/null && docker info > /dev/null 2>&1; then
        # the edge and gateway containers of stage 6, then the compose services (by label: no need to parse the file)
        for label in domain-llm.role com.docker.compose.project=domain-llm; do
            ids="$(docker ps -aq --filter "label=$label")"
            [ -z "$ids" ] && continue
            # shellcheck disable=SC2086
            docker stop -t 30 $ids > /dev/null && docker rm $ids > /dev/null
            echo "stop: removed $(echo "$ids" | wc -l) container(s) labelled $label"
        done
    fi
}

live_checks() {
    GATEWAY_URL="$(setting c.serving.gateway_url)" "$PY" -m pytest -q -p no:cacheprovider tests/live
}

bash scripts/setup.sh
[ "$stop" -eq 1 ] && stop_all
if [ "$build" -eq 1 ]; then
    # GATEWAY_BASE_IMAGE, EDGE_BASE_IMAGE, GPU_BASE_IMAGE: other bases; DOCKER_BUILD_NETWORK: e.g. host;
    # PIP_EXTRA_INDEX_URL / PIP_FIND_LINKS: where the training image finds torch (e.g. the CPU build)
    need_docker --build
    network=(${DOCKER_BUILD_NETWORK:+--network "$DOCKER_BUILD_NETWORK"})
    docker build "${network[@]}" -f Dockerfile.api -t domain-llm-gateway:latest \
        --build-arg "BASE_IMAGE=${GATEWAY_BASE_IMAGE:-python:3.11-slim}" .
    docker build "${network[@]}" -f Dockerfile.edge -t domain-llm-edge:latest \
        --build-arg "BASE_IMAGE=${EDGE_BASE_IMAGE:-debian:bookworm-slim}" .
    docker build "${network[@]}" -f Dockerfile.gpu -t domain-llm-train:latest \
        ${GPU_BASE_IMAGE:+--build-arg "BASE_IMAGE=$GPU_BASE_IMAGE"} \
        ${PIP_EXTRA_INDEX_URL:+--build-arg "PIP_EXTRA_INDEX_URL=$PIP_EXTRA_INDEX_URL"} \
        ${PIP_FIND_LINKS:+--build-arg "PIP_FIND_LINKS=$PIP_FIND_LINKS"} .
    echo "build: domain-llm-gateway:latest, domain-llm-edge:latest, domain-llm-train:latest"
fi
if [ "$all" -eq 1 ]; then
    "$PY" pipeline.py --config "$config" --end 5
    serve_local
    "$PY" pipeline.py --config "$config" --stage 6
    live_checks
    exit 0
fi
[ "$serve" -eq 1 ] && serve_containers
[ "$serve_local" -eq 1 ] && serve_local
[ "$run" -eq 1 ] && "$PY" pipeline.py "${args[@]}"
[ "$live_test" -eq 1 ] && live_checks
exit 0
