"""Stage 4 — fine-tune: baseline eval (4a), LoRA SFT (4b), checkpoint selection (4c), final eval (4d).

Each step is a subflow that can run alone (``--stage 4b``) and reads/writes only files, so
the whole stage can be dispatched to a GPU work pool: nothing here assumes this machine.
"""

from __future__ import annotations

import json

from prefect.artifacts import create_markdown_artifact

from core import artifacts
from core.artifacts import MissingStageOutput
from core.config import PipelineConfig
from core.files import atomic_write_json, atomic_write_text
from core.naming import checkpoint_step
from core.stages import artifact_key
from flows.threaded import threaded_flow
from tasks.dataset.finish import reviewed_train_chat
from tasks.dataset.stats import dataset_caveats
from tasks.finetune import resume
from tasks.finetune.comparison import comparison_markdown, selection_line, summarise, write_figures
from tasks.finetune.evaluate import base_model, evaluate_side, stage_questions
from tasks.finetune.grade import grade_test_answers
from tasks.finetune.select import (
    choose_checkpoint,
    cleanup_checkpoints,
    install_adapter,
    selection_key,
    standing_selection,
)
from tasks.finetune.tracking import log_results, tracking_group, wandb_run, where
from tasks.finetune.train import checkpoints, total_steps, train_lora
from tasks.report.console import progress_bar, say
from tasks.report.page import report_title, write_report


def _cached_note(cached: bool) -> str:
    return " (cached: the same weights, questions and settings were evaluated before)" if cached else ""


@threaded_flow("baseline-eval")
def baseline_eval(config: PipelineConfig) -> dict:
    report, cached = evaluate_side(config, base_model(config), None, stage_questions(config, "test"), "test")
    atomic_write_json(artifacts.path(config, "eval_baseline"), report)
    say(f"4a baseline: combined {report['metrics']['combined']:.4f} on {report['examples']} test questions"
        f"{_cached_note(cached)}")
    return report["metrics"]


@threaded_flow("train")
def train(config: PipelineConfig) -> dict:
    """LoRA SFT; resumes an interrupted run, starts afresh when the data or settings changed."""
    base = base_model(config)
    train_chat, changed = reviewed_train_chat(config)
    if changed:
        say(f"4b: {changed}")
    output_dir, settings = config.path(config.paths.checkpoints), config.finetuning
    chat = train_chat.read_bytes()
    fingerprint = resume.fingerprint(base, chat, settings)
    record, log_path = artifacts.path(config, "training_run"), artifacts.path(config, "train_log")
    decision = resume.decide(record, fingerprint, log_path)
    if decision == "done":
        say(f"4b train: already done for this data and these settings (delete {output_dir} to train again)")
        return json.loads(log_path.read_text())
    if resume.begin(record, output_dir, fingerprint, base, decision):
        say(f"4b: {output_dir} holds checkpoints of other data or settings: starting afresh")
    examples = sum(1 for line in chat.splitlines() if line.strip())
    with (wandb_run(config, "train", tracking_group(config)) as run,  # the trainer's W&B callback logs into this run
          progress_bar("4b train", total_steps(examples, settings)) as advance):
        summary = train_lora(base, train_chat, output_dir, settings, log_path, lambda step, steps, loss: advance(
            completed=step, total=steps, note=None if loss is None else f"loss {loss:.3f}"))
        if not summary:
            d = settings.distributed
            say(f"4b train: machine {d.machine_rank} of {d.num_machines} trained its share; machine 0 holds the "
                "checkpoints and the log (run 4c and 4d there)")
            return summary
        if run is not None and summary["processes"] > 1:  # the processes did not log into this run: the history
            for row in summary["loss_history"]:
                run.log({"train/loss": row["loss"]}, step=row["step"])
    resume.finish(record, fingerprint, base)
    losses = [h["loss"] for h in summary["loss_history"]]
    say(f"4b train: {summary['steps']} steps, loss {losses[0]:.3f} → {losses[-1]:.3f}, "
        f"checkpoints {', '.join(summary['checkpoints'])}"
        + (f" (resumed from {summary['resumed_from']})" if summary["resumed_from"] else "")
        + (f"; {summary['examples_too_long']} examples over max_seq_length left out" if summary["examples_too_long"] else "")
        + (f"; W&B run {where(run)}" if run else "")
        + (f"; {summary['processes']} processes ({settings.distributed.strategy})" if summary["processes"] > 1 else ""))
    return summary


@threaded_flow("select-checkpoint")
def select_checkpoint(config: PipelineConfig) -> dict:
    """Evaluate every checkpoint on the validation set and install the best; a selection already made stands.

    Only validation questions are read here: the test set, which 4a and 4d report on, never takes part in a
    choice. Cleanup leaves only the chosen checkpoint, so selecting again after it would compare one checkpoint
    with itself and lose the others' scores from the report.
    """
    records = stage_questions(config, "validation", config.evaluation.max_validation_questions)
    key, target = selection_key(config, records), config.path(config.paths.lora_weights)
    if previous := standing_selection(config, key, target):
        say(f"4c select: already done for this training run: {previous['selected']} installed in {target}")
        return previous
    base, found = base_model(config), checkpoints(config.path(config.paths.checkpoints))
    if not found:
        raise MissingStageOutput("4c", config.path(config.paths.checkpoints) / "checkpoint-*", "4b")
    reports = {ckpt.name: evaluate_side(config, base, ckpt, records, "validation")[0] for ckpt in found}
    e = config.evaluation
    selection = choose_checkpoint(reports, evaluate_side(config, base, None, records, "validation")[0], e.resamples, e.seed,
                                  e.confidence)
    chosen = next(c for c in found if c.name == selection["selected"])
    total = len(stage_questions(config, "validation"))
    selection |= {"validation_total": total,  # eval_examples of them were asked (evaluation.max_validation_questions)
                  "installed_to": str(target), "adapter_sha256": install_adapter(chosen, target),
                  "removed_checkpoints": cleanup_checkpoints(found, chosen, target)
                  if config.finetuning.cleanup_checkpoints else [], "selection_key": key}
    atomic_write_json(artifacts.path(config, "checkpoint_selection"), selection)
    log_results(config, "select", tracking_group(config),
                {"selected": selection["selected"], "validation/baseline_combined": selection["baseline_score"],
                 "validation/margin": (selection["margin"] or {}).get("delta"),
                 "validation/answers_changed": selection["answers_changed_vs_base"]},
                [{"checkpoint_step": checkpoint_step(name), "validation/combined": score}
                 for name, score in selection["scores"].items()])
    say(f"4c select: {selection_line(selection)}; all: " + ", ".join(f"{n} {s:.4f}" for n, s in selection["scores"].items())
        + f"; {selection['answers_changed_vs_base']}/{len(records)} answers differ from base"
        + (f" ({len(records)} of {total} validation questions, a seeded sample)" if len(records) < total else ""))
    return selection


def _publish_comparison(config: PipelineConfig, summary: dict) -> None:
    """comparison.md, index.html and the figures in the reports folder, and the eval-comparison artifact."""
    reports_dir = config.path(config.paths.reports)
    selection = artifacts.load_if_present(config, "checkpoint_selection")
    page = artifacts.report_page(config)
    made = write_report(page, summary, selection, artifacts.load_if_present(config, "train_log"),
                        report_title(config.domain, config.use_case))
    written = [*write_figures(made, reports_dir), artifacts.comparison_markdown(config), page]
    markdown = comparison_markdown(summary, selection)
    atomic_write_text(written[-2], markdown)
    create_markdown_artifact(_sync=True, key=artifact_key("4d"), markdown=markdown,
                             description="Stage 4: baseline vs fine-tuned on the test set")
    say(f"4d: {summary['headline']}")
    say(f"4d: wrote {', '.join(p.name for p in written)} (open {written[-1]})")


@threaded_flow("final-eval")
def final_eval(config: PipelineConfig) -> dict:
    """The adapter on the test set, compared question by question with 4a's baseline on the same questions."""
    adapter = config.path(config.paths.lora_weights)
    if not (adapter / "adapter_model.safetensors").exists():
        raise MissingStageOutput("4d", adapter / "adapter_model.safetensors", "4c")
    records = stage_questions(config, "test")
    report, cached = evaluate_side(config, base_model(config), adapter, records, "test")
    atomic_write_json(artifacts.path(config, "eval_finetuned"), report)
    say(f"4d final: combined {report['metrics']['combined']:.4f} on {report['examples']} test questions"
        f"{_cached_note(cached)}")
    baseline = artifacts.load_if_present(config, "eval_baseline")
    if baseline is None:
        say("4d: no baseline report (run stage 4a): no comparison written")
        return report["metrics"]
    e = config.evaluation
    summary = summarise(baseline, report, len({r["doc_sha256"] for r in records}), e.resamples, e.seed, e.confidence)
    summary["caveats"] = dataset_caveats(artifacts.load_if_present(config, "stats", {}))
    if e.judge:
        summary["judge"] = judge = grade_test_answers(config, baseline, report)
        say(f"4d grade: {judge['graded']}/{judge['graded'] + judge['failed']} questions graded by {judge['grader']}")
    atomic_write_json(artifacts.path(config, "comparison"), summary)
    log_results(config, "final-eval", tracking_group(config),
                {f"test/{side}/{name}": stats[key] for name, stats in summary["metrics"].items()
                 for side, key in (("baseline", "before"), ("fine_tuned", "after"), ("delta", "delta"))}
                | {f"test/delta/combined_{bound}": summary["metrics"]["combined"][bound] for bound in ("low", "high")})
    _publish_comparison(config, summary)
    return report["metrics"]
