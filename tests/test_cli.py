"""The command line as a user meets it: listing, argument errors, configuration errors."""

from __future__ import annotations

import subprocess
import sys

from harness.project import REPO, run_pipeline, without_prefect_server, write_profile


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "pipeline.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_list_shows_every_stage():
    result = cli("--list")
    assert result.returncode == 0
    keys = [line.split()[0] for line in result.stdout.splitlines()]
    assert keys == ["1", "2", "3", "4a", "4b", "4c", "4d", "5", "6", "4"]
    assert "download PDFs → data/raw" in result.stdout


def test_list_names_the_configured_folders(tmp_path):
    profile = write_profile(tmp_path, {"paths": {"raw": "/srv/corpus/raw", "reports": "out/reports"}})
    listed = cli("--list", "--config", str(profile)).stdout
    assert "download PDFs → /srv/corpus/raw" in listed and "evaluate the base model → out/reports/eval_baseline.json" in listed


def test_bad_stage_and_range_are_one_line_errors():
    for args, message in [
        (("--stage", "7"), "unknown stage '7': choose one of 1, 2, 3, 4, 4a, 4b, 4c, 4d, 5, 6"),
        (("--start", "5", "--end", "2"), "--start 5 comes after --end 2"),
        (("--stage", "2", "--start", "1"), "use --stage, or --start/--end, not both"),
        (("--stage", "1", "--preview", "--config", "configs/local.yaml"), "--preview applies to stage 3 alone"),
    ]:
        result = cli(*args)
        assert result.returncode == 2, args
        assert result.stderr.strip() == f"error: {message}" or message in result.stderr.strip().splitlines()[0]
        assert "Traceback" not in result.stderr


def test_config_errors_exit_2_before_any_work(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"inherit: {REPO / 'configs' / 'local.yaml'}\ndata_collector:\n  max_per_hots: 3\n")
    result = cli("--config", str(bad), "--stage", "1")
    assert result.returncode == 2
    assert "data_collector.max_per_hots: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_serpapi_without_key_is_one_clear_line(tmp_path):
    config = write_profile(tmp_path, inherit=REPO / "config.yaml")
    env = {k: v for k, v in __import__("os").environ.items() if k != "SERP_API_KEY"}
    result = run_pipeline(config, "--stage", "1", env=env, timeout=180)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: SERP_API_KEY is not set")
    assert "Traceback" not in result.stderr


def test_the_cli_prints_its_own_lines_and_verbose_shows_prefects_too(tmp_path, sample_pdf_dir):
    """On Prefect's temporary server, as a first run with none configured: its start and stop stay off the screen."""
    config = write_profile(tmp_path, {"data_collector": {"local": {"dir": str(sample_pdf_dir)}}})
    quiet = run_pipeline(config, "--stage", "1", env=without_prefect_server(), timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.splitlines() == [quiet.stdout.splitlines()[0]] and quiet.stdout.startswith("collect: ")
    assert quiet.stderr == ""
    verbose = run_pipeline(config, "--stage", "1", "--verbose", env=without_prefect_server(), timeout=300)
    assert verbose.returncode == 0, verbose.stderr
    assert "collect: " in verbose.stdout and "Finished in state Completed()" in verbose.stdout + verbose.stderr
