#!/usr/bin/env bash
# Seed-compatible entry point: sets up the environment if needed, then runs pipeline.py.
#   scripts/run_pipeline.sh --config configs/local.yaml            # every available stage
#   scripts/run_pipeline.sh --config configs/local.yaml --stage 2
#   scripts/run_pipeline.sh --start 1 --end 2 --config config.yaml
#   scripts/run_pipeline.sh --list
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --stage|--start|--end|--config)
            [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }
            args+=("$1" "$2"); shift 2 ;;
        --list|--preview|--verbose)
            args+=("$1"); shift ;;
        -h|--help)
            sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *)
            echo "error: unknown option '$1' (supported: --stage, --start, --end, --config, --list, --preview, --verbose)" >&2
            exit 2 ;;
    esac
done

bash scripts/setup.sh
exec "${VENV_DIR:-.venv}/bin/python" pipeline.py "${args[@]}"
