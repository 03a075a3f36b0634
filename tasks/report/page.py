"""reports/index.html: the evaluation as one page a person reads, with nothing to fetch.

One self-contained file (inline CSS, plots embedded as PNG data URIs) so it opens from disk,
from a CI artifact or an e-mail attachment the same way. It shows what the numbers are
(headline with its interval, per-metric table), how they came about (checkpoint curve on
validation, training loss) and what changed in the answers (largest gains and losses side by
side): the reader should not need to open a JSON file.
"""

from __future__ import annotations

import base64
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from core import artifacts
from core.config import PipelineConfig
from core.files import atomic_write_text
from tasks.common.paired import Paired
from tasks.finetune.comparison import (
    NAMES,
    comparison_markdown,
    count,
    figures,
    metric_difference,
    selection_line,
    write_figures,
)

_TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                         autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)


def report_title(domain: str, use_case: str) -> str:
    return f"{domain} {use_case}: fine-tuned vs base"


def render_report(summary: dict, selection: dict | None, figures: dict[str, bytes], title: str,
                  rollout: dict | None = None) -> str:
    images = {name: "data:image/png;base64," + base64.b64encode(data).decode("ascii") for name, data in figures.items()}
    return _TEMPLATES.get_template("report.html.j2").render(
        title=title, summary=summary, rows=[(name, metric_difference(summary, name)) for name in NAMES],
        selection=selection, selection_line=selection_line(selection) if selection else None, judge=summary.get("judge"),
        images=images, count=count, rollout=rollout,
        parity=Paired.model_validate(rollout["parity"]["combined"]) if rollout and "parity" in rollout else None)


def write_report(path: Path, summary: dict, selection: dict | None, train_log: dict | None, title: str,
                 rollout: dict | None = None) -> dict[str, bytes]:
    """The page (4d writes it; stage 6 again with the served parity); returns its figures, for the PNG files."""
    made = figures(summary, selection, train_log)
    atomic_write_text(path, render_report(summary, selection, made, title, rollout))
    return made


def write_project_report(config: PipelineConfig, summary: dict, rollout: dict | None = None) -> dict[str, bytes]:
    """The project's page from its stage-4 files (4d writes it; stage 6 again with the served parity)."""
    return write_report(artifacts.report_page(config), summary, artifacts.load_if_present(config, "checkpoint_selection"),
                        artifacts.load_if_present(config, "train_log"), report_title(config.domain, config.use_case),
                        rollout)


def publish_comparison(config: PipelineConfig, summary: dict) -> tuple[str, list[Path]]:
    """4d's reports: the figures, comparison.md and the page; returns the markdown and the files (the page last)."""
    made = write_project_report(config, summary)
    markdown = comparison_markdown(summary, artifacts.load_if_present(config, "checkpoint_selection"))
    atomic_write_text(artifacts.comparison_markdown(config), markdown)
    return markdown, [*write_figures(made, config.path(config.paths.reports)), artifacts.comparison_markdown(config),
                      artifacts.report_page(config)]
