"""The baseline-vs-fine-tuned comparison: a markdown table and PNG plots, for reports and Prefect artifacts."""

from __future__ import annotations

from pathlib import Path

from tasks.files import atomic_write_text, atomic_writer
from tasks.metrics import METRICS

NAMES = [*METRICS, "combined"]


def comparison_markdown(baseline: dict, finetuned: dict, selection: dict | None) -> str:
    rows = ["| metric | baseline | fine-tuned | change |", "|---|---:|---:|---:|"]
    for name in NAMES:
        before, after = baseline["metrics"][name], finetuned["metrics"][name]
        rows.append(f"| {name} | {before:.4f} | {after:.4f} | {after - before:+.4f} |")
    verdict = "better" if finetuned["metrics"]["combined"] > baseline["metrics"]["combined"] else "not better"
    lines = ["# Evaluation: baseline vs fine-tuned", "",
             f"{finetuned['examples']} eval questions, greedy decoding. Combined score is {verdict} after fine-tuning.", "",
             *rows]
    if selection:
        lines += ["", f"Selected checkpoint: {selection['selected']} (combined {selection['scores'][selection['selected']]:.4f})"]
    return "\n".join(lines) + "\n"


def _save(figure, path: Path) -> None:
    with atomic_writer(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=110, bbox_inches="tight")


def write_comparison(baseline: dict, finetuned: dict, selection: dict | None, train_log: dict | None,
                     out_dir: Path) -> list[Path]:
    """Write ``comparison.md`` and the plots; returns the files written."""
    from matplotlib.figure import Figure  # no pyplot: no global figure registry, no GUI backend

    def plot(size: tuple[float, float]):
        figure = Figure(figsize=size)
        return figure, figure.subplots()

    written = [out_dir / "comparison.md"]
    atomic_write_text(written[0], comparison_markdown(baseline, finetuned, selection))

    figure, axis = plot((7, 3.5))
    x = range(len(NAMES))
    axis.bar([i - 0.2 for i in x], [baseline["metrics"][n] for n in NAMES], width=0.4, label="baseline")
    axis.bar([i + 0.2 for i in x], [finetuned["metrics"][n] for n in NAMES], width=0.4, label="fine-tuned")
    axis.set_xticks(list(x), NAMES, rotation=20)
    axis.set_ylim(0, 1)
    axis.legend()
    axis.set_title("Metrics: baseline vs fine-tuned")
    written.append(out_dir / "metrics_comparison.png")
    _save(figure, written[-1])

    if train_log and train_log.get("loss_history"):
        figure, axis = plot((6, 3))
        history = train_log["loss_history"]
        axis.plot([h["step"] for h in history], [h["loss"] for h in history], marker="o")
        axis.set_xlabel("step")
        axis.set_ylabel("train loss")
        axis.set_title("Training loss")
        written.append(out_dir / "train_loss.png")
        _save(figure, written[-1])

    if selection:
        figure, axis = plot((6, 3))
        names = sorted(selection["scores"], key=lambda n: int(n.split("-")[-1]))
        axis.plot([int(n.split("-")[-1]) for n in names], [selection["scores"][n] for n in names], marker="o")
        axis.set_xlabel("checkpoint step")
        axis.set_ylabel("combined score")
        axis.set_title("Combined score per checkpoint")
        written.append(out_dir / "checkpoint_scores.png")
        _save(figure, written[-1])
    return written
