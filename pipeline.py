#!/usr/bin/env python
"""Command line: run pipeline stages in-process (Prefect's ephemeral mode, no server needed).

  python pipeline.py --list
  python pipeline.py --config configs/local.yaml              # every stage
  python pipeline.py --config configs/local.yaml --stage 2
  python pipeline.py --config configs/local.yaml --start 1 --end 3
  python pipeline.py --config config.yaml --stage 3 --preview

  python pipeline.py --config my.yaml --check               # validate; show each value and its origin
  python pipeline.py --config configs/local.yaml --review   # review the dataset in a browser (loopback)

Exit codes: 0 done, 1 a stage failed (or an earlier stage's output is missing), 2 bad arguments or
configuration (before any work), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import warnings
from pathlib import Path

# The CLI prints our summary lines and our progress bars; --verbose shows everything else too.
# Hushed without it: Prefect's console logs (a developer's view; the UI keeps them), the temporary
# server's shutdown noise, Hugging Face libraries' notices and load bars, tqdm bars (the GGUF
# conversion's, the trainer's: 4b draws its own, with the loss), and W&B's banner lines.
# Every one can still be set from the environment.
_QUIET = {
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
    "WANDB_SILENT": "true",
}
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# the temporary server's start-up migrates its database: on a busy 2-core machine (a training run or an engine
# beside it) that took over Prefect's 20 s, and the whole command failed with a time-out before doing any work
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _quiet() -> None:
    for name, value in _QUIET.items():
        os.environ.setdefault(name, value)
    logging.getLogger("EventsWorker").setLevel(logging.ERROR)
    # bitsandbytes' CPU backend suggests the `kernels` package (a Hub download) for faster 4-bit matmuls
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    # on CPU bitsandbytes runs a paged optimizer unpaged: the same updates (paging only saves GPU memory)
    warnings.filterwarnings("ignore", message="Paged optimizers are not supported on CPU")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline.py", description="Domain LLM fine-tuning pipeline (Prefect).")
    parser.add_argument("--config", type=Path, default=Path("config.yaml"),
                        help="configuration file (default: config.yaml; offline profile: configs/local.yaml)")
    parser.add_argument("--stage", help="run one stage: 1, 2, 3, 4 (= 4a-4d), 4a, 4b, 4c, 4d, 5, 6")
    parser.add_argument("--start", help="first stage of a range (default: 1)")
    parser.add_argument("--end", help="last stage of a range (default: 6)")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    parser.add_argument("--check", action="store_true",
                        help="validate the config, print every resolved value and where it came from, and exit")
    parser.add_argument("--preview", action="store_true",
                        help="stage 3: generate from a few groups, print pairs and the full-run cost estimate, write no dataset")
    parser.add_argument("--verbose", action="store_true", help="show Prefect's own logs and full tracebacks")
    parser.add_argument("--review", action="store_true",
                        help="serve the dataset review page (stage 3's pairs beside their sources) until Ctrl+C")
    parser.add_argument("--review-host", default="127.0.0.1",
                        help="--review: address to listen on (default 127.0.0.1; any other gets a token)")
    parser.add_argument("--review-port", type=int, default=8790, help="--review: port (default 8790)")
    return parser


def _configured_paths(config: Path):
    """The config's ``paths`` for --list; the defaults when it cannot be read (listing needs no valid config)."""
    from core.config import ConfigError, Paths, load_config

    try:
        return load_config(config).paths
    except (ConfigError, OSError):
        return Paths()


def _hide_engine_tracebacks() -> None:
    """Prefect logs a failed run's traceback to the console; the CLI prints one line instead.

    Only the console handler is filtered: the run's logs in the Prefect API/UI keep the traceback.
    The CLI also leaves out what it printed itself already (a skipped document's warning) and other
    libraries' warnings (docling's about a document it could not read: the stage's own line says why).
    """
    from tasks.report.console import PRINTED

    def keep(record: logging.LogRecord) -> bool:
        if getattr(record, PRINTED, False):
            return False
        if not record.name.startswith("prefect"):
            return record.levelno >= logging.ERROR
        return not (record.levelno >= logging.ERROR and record.name.startswith(("prefect.flow_runs", "prefect.task_runs")))

    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler":
            handler.addFilter(keep)


def _review(args: argparse.Namespace) -> int:
    from core.artifacts import MissingStageOutput
    from core.config import ConfigError, load_config
    from flows.review import serve_review

    try:
        serve_review(load_config(args.config), args.review_host, args.review_port)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except MissingStageOutput as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.verbose:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "INFO"
    else:
        _quiet()

    from core.stages import STAGES, StageSelectionError, select_stages  # no flow imported yet: these answer at once

    if args.list:
        paths = _configured_paths(args.config)
        for stage in STAGES:
            print(f"{stage.key:<3} {stage.name:<14} {stage.summary(paths)}")
        print("4   = 4a, 4b, 4c, 4d")
        return 0
    try:
        stages, explicit = select_stages(args.stage, args.start, args.end)
        if args.preview and [s.key for s in stages] != ["3"]:
            raise StageSelectionError("--preview applies to stage 3 alone: use --stage 3 --preview")
    except StageSelectionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from core.config import ConfigError, describe, load_config, resolve_config

    if args.check:
        try:
            resolved = resolve_config(args.config)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print("\n".join([*(f"notice: {n}" for n in resolved.notices), *describe(resolved),
                         f"{args.config}: valid"]))
        return 0

    if args.review:
        return _review(args)

    from flows.pipeline import pipeline, preflight  # torch, docling, Prefect: seconds

    if not args.verbose:
        _hide_engine_tracebacks()
    try:
        config = load_config(args.config)
        preflight(config, [s.key for s in stages])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(pipeline(config, [s.key for s in stages], preview=args.preview, explicit=explicit,
                             config_path=str(args.config.resolve())))  # absolute: a deployment's worker runs elsewhere
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1  # MissingStageOutput is not one: exit 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
