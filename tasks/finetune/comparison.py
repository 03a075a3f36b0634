"""Baseline vs fine-tuned on the test set: paired statistics, one headline, the markdown and the plots.

Every place that reports the result (comparison.md, reports/index.html, the Prefect artifact,
the model card, stage 5's promotion gate) reads the one summary built here, so they say the
same thing in the same words.
"""

from __future__ import annotations

import io
from pathlib import Path

from core.files import atomic_write_bytes
from core.naming import checkpoint_step
from core.results import EvaluationReport
from tasks.common.metrics import METRICS
from tasks.common.paired import Paired, paired_difference, paired_differences

NAMES = ["combined", *METRICS]


def summarise(baseline: EvaluationReport, finetuned: EvaluationReport, documents: int, resamples: int, seed: int,
              confidence: float) -> dict:
    """Paired statistics for every metric (fine-tuned − baseline), the headline, the largest gains and losses."""
    ids = [p.id for p in baseline.predictions]
    if ids != [p.id for p in finetuned.predictions]:
        raise ValueError("the baseline and fine-tuned reports were made on different questions: rerun stage 4a")
    stats = paired_differences([p.scores for p in baseline.predictions], [p.scores for p in finetuned.predictions],
                        NAMES, resamples, seed, confidence)
    changes = sorted(({"id": b.id, "question": b.question, "reference": b.reference,
                       "baseline": b.prediction, "fine_tuned": f.prediction,
                       "baseline_score": b.scores["combined"], "fine_tuned_score": f.scores["combined"],
                       "change": f.scores["combined"] - b.scores["combined"]}
                      for b, f in zip(baseline.predictions, finetuned.predictions, strict=True)),
                     key=lambda c: (c["change"], c["id"]))
    summary = {"split": finetuned.split or "test", "examples": len(ids), "documents": documents,
               "resamples": resamples, "seed": seed, "confidence": confidence, "weights": finetuned.weights,
               "metrics": {name: paired.model_dump() for name, paired in stats.items()},
               "largest_gains": [c for c in reversed(changes) if c["change"] > 0][:5],
               "largest_losses": [c for c in changes if c["change"] < 0][:5]}
    return {**summary, "headline": headline(summary)}


def against_version(version: str, previous: EvaluationReport, tuned: EvaluationReport, resamples: int, seed: int,
                    confidence: float) -> dict:
    """The candidate against the version serving now, on the same (current) test questions: the combined score's
    paired change, so the promotion gate holds a retrained adapter to the one it would replace."""
    if [p.id for p in previous.predictions] != [p.id for p in tuned.predictions]:
        raise ValueError("the previous version and the candidate were evaluated on different questions")
    change = paired_difference([p.scores["combined"] for p in previous.predictions],
                               [p.scores["combined"] for p in tuned.predictions], resamples, seed, confidence)
    return {"version": version, "combined": change.model_dump(),
            "headline": f"against {version}: combined {change.before:.4f} → {change.after:.4f} ({change.delta:+.4f}) "
                        f"on {count(change.examples, 'test question')}: {change.describe()}"}


def metric_difference(summary: dict, metric: str = "combined") -> Paired:
    return Paired.model_validate(summary["metrics"][metric])


def headline(summary: dict) -> str:
    """One sentence with the number, its interval and where it was measured."""
    c = metric_difference(summary)
    documents = f" from {count(summary['documents'], 'document')}" if summary.get("documents") else ""
    return (f"Combined score {c.before:.4f} → {c.after:.4f} ({c.delta:+.4f}) on "
            f"{count(c.examples, summary['split'] + ' question')}{documents}: {c.describe()}, p = {c.p_value:.3g}; "
            f"per question {c.wins} better, {c.ties} tied, {c.losses} worse")


def count(n: int, noun: str) -> str:
    """"1 test question", "34 test questions"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def selection_line(selection: dict) -> str:
    """Which checkpoint was chosen, on which questions, and by how much it beat the runner-up."""
    chosen = selection["selected"]
    line = (f"{chosen} chosen on {count(selection['eval_examples'], selection.get('split', 'eval') + ' question')} "
            f"(combined {selection['scores'][chosen]:.4f})")
    if margin := selection.get("margin"):
        line += (f"; its margin over {margin['runner_up']}: {margin['delta']:+.4f}, "
                 f"{Paired.model_validate(margin).describe()}")
    return line


def comparison_markdown(summary: dict, selection: dict | None) -> str:
    return f"# Evaluation: baseline vs fine-tuned\n\n{comparison_body(summary, selection)}"


def comparison_body(summary: dict, selection: dict | None) -> str:
    """The headline, where it was measured, the per-metric table with intervals, and how the checkpoint was chosen."""
    rows = [f"| metric | baseline | fine-tuned | change | {summary['confidence'] * 100:g} % CI | p | verdict |",
            "|---|---:|---:|---:|---|---:|---|"]
    for name in NAMES:
        c = metric_difference(summary, name)
        bounds = f"{c.low:+.4f} … {c.high:+.4f}" if c.low is not None else "–"
        rows.append(f"| {name} | {c.before:.4f} | {c.after:.4f} | {c.delta:+.4f} | {bounds} | {c.p_value:.3g} "
                    f"| {c.verdict} |")
    lines = [f"**{summary['headline']}.**", "",
             f"Measured on `{summary['split']}.json`: questions the adapter was not trained on and its checkpoint was "
             f"not chosen on; greedy decoding; paired bootstrap intervals and permutation p-values over "
             f"{summary['resamples']} resamples (seed {summary['seed']}). Combined = "
             + " + ".join(f"{w:.2f}·{k}" for k, w in summary["weights"].items()) + ".", "", *rows]
    if judge := summary.get("judge"):
        c = judge["comparison"]
        lines += ["", f"Correctness graded by {judge['grader']}: {c['before']:.3f} → {c['after']:.3f} of answers correct "
                  f"(partially correct count half), {judge['description']}"
                  + (f"; {judge['failed']} questions got no usable grade" if judge["failed"] else "") + "."]
    if against := summary.get("vs_previous"):
        lines += ["", f"The version it would replace, on the same questions: {against['headline']}."]
    if caveats := summary.get("caveats"):
        lines += ["", "About the data:", *(f"- {caveat}" for caveat in caveats)]
    if selection:
        lines += ["", selection_line(selection) + "."]
    return "\n".join(lines) + "\n"


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def figures(summary: dict, selection: dict | None, train_log: dict | None) -> dict[str, bytes]:
    """The report's plots as PNG bytes, by file name: metric changes with intervals, checkpoint curve, loss."""
    from matplotlib.figure import Figure  # no pyplot: no global figure registry, no GUI backend

    made = {}
    figure = Figure(figsize=(7, 3.2))
    axis = figure.subplots()
    stats = [metric_difference(summary, name) for name in NAMES]
    y = list(range(len(NAMES)))[::-1]
    axis.errorbar([c.delta for c in stats], y, fmt="o", capsize=4,
                  xerr=[[c.delta - (c.low if c.low is not None else c.delta) for c in stats],
                        [(c.high if c.high is not None else c.delta) - c.delta for c in stats]])
    axis.axvline(0, color="grey", linewidth=1, linestyle="--")
    axis.set_yticks(y, NAMES)
    axis.set_xlabel(f"fine-tuned − baseline ({summary['confidence'] * 100:g} % CI, {summary['split']} set)")
    axis.set_title("Change per metric")
    made["metric_changes.png"] = _png(figure)

    if selection:
        figure = Figure(figsize=(6, 3))
        axis = figure.subplots()
        names = sorted(selection["scores"], key=checkpoint_step)
        axis.plot([checkpoint_step(n) for n in names], [selection["scores"][n] for n in names], marker="o",
                  label="checkpoint")
        if selection.get("baseline_score") is not None:
            axis.axhline(selection["baseline_score"], color="grey", linestyle="--", label="base model")
        axis.set_xlabel("training step")
        axis.set_ylabel(f"combined ({selection.get('split', 'eval')})")
        axis.legend()
        axis.set_title("Checkpoints on the validation set")
        made["checkpoint_scores.png"] = _png(figure)

    if train_log and train_log.get("loss_history"):
        figure = Figure(figsize=(6, 3))
        axis = figure.subplots()
        history = train_log["loss_history"]
        axis.plot([h["step"] for h in history], [h["loss"] for h in history], marker="o")
        axis.set_xlabel("step")
        axis.set_ylabel("train loss")
        axis.set_title("Training loss")
        made["train_loss.png"] = _png(figure)
    return made


def write_figures(made: dict[str, bytes], out_dir: Path) -> list[Path]:
    for name, data in made.items():
        atomic_write_bytes(out_dir / name, data)
    return [out_dir / name for name in made]


def selection_margin(scores: dict[str, list[float]], selected: str, resamples: int, seed: int,
                     confidence: float) -> dict | None:
    """The chosen checkpoint against the runner-up on the same validation questions; None with one checkpoint."""
    others = [name for name in scores if name != selected]
    if not others:
        return None
    runner_up = max(others, key=lambda name: (sum(scores[name]), checkpoint_step(name)))
    margin = paired_difference(scores[runner_up], scores[selected], resamples, seed, confidence)
    return {**margin.model_dump(), "runner_up": runner_up}
