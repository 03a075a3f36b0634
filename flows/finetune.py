"""Stage 4 — fine-tune: baseline eval (4a), LoRA SFT (4b), checkpoint selection (4c), final eval (4d).

Each step is a subflow that can run alone (``--stage 4b``) and reads/writes only files, so
the whole stage can be dispatched to a GPU work pool: nothing here assumes this machine.
"""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact

from core import artifacts, results
from core.artifacts import MissingStageOutput
from core.config import PipelineConfig
from core.results import Comparison, EvaluationReport, dump
from core.stages import artifact_key
from flows.threaded import threaded_flow
from tasks.dataset.finish import reviewed_train_chat
from tasks.dataset.stats import dataset_caveats
from tasks.finetune import resume
from tasks.finetune.comparison import against_version, summarise
from tasks.finetune.evaluate import base_model, evaluate_side, stage_questions
from tasks.finetune.grade import grade_test_answers
from tasks.finetune.retraining import test_set_fingerprint, train_pairs
from tasks.finetune.select import ADAPTER_FILES, select_and_install, selection_said
from tasks.finetune.tracking import log_comparison, log_loss_history, log_selection, tracking_group, wandb_run, where
from tasks.finetune.train import total_steps, train_lora, trained_said
from tasks.release.registry import serving_version
from tasks.report.console import progress_bar, say
from tasks.report.page import publish_comparison


def _cached_note(cached: bool) -> str:
    return " (cached: the same weights, questions and settings were evaluated before)" if cached else ""


@threaded_flow("baseline-eval")
def baseline_eval(config: PipelineConfig) -> dict:
    report, cached = evaluate_side(config, base_model(config), None, stage_questions(config, "test"), "test")
    results.write(config, report, "eval_baseline")
    say(f"4a baseline: combined {report.metrics['combined']:.4f} on {report.examples} test questions"
        f"{_cached_note(cached)}")
    return report.metrics


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
        return artifacts.load(config, "train_log", "4b")
    if resume.begin(record, output_dir, fingerprint, base, decision):
        say(f"4b: {output_dir} holds checkpoints of other data or settings: starting afresh")
    examples = train_pairs(config)  # as the retraining policy counts them
    with (wandb_run(config, "train", tracking_group(config)) as run,  # the trainer's W&B callback logs into this run
          progress_bar("4b train", total_steps(examples, settings)) as advance):
        summary = train_lora(base, train_chat, output_dir, settings, log_path, lambda step, steps, loss: advance(
            completed=step, total=steps, note=None if loss is None else f"loss {loss:.3f}"))
        log_loss_history(run, summary)
    if summary:  # this machine holds the checkpoints
        resume.finish(record, fingerprint, base, examples, test_set_fingerprint(config))
    say(trained_said(summary, settings, where(run) if run else None))
    return summary


@threaded_flow("select-checkpoint")
def select_checkpoint(config: PipelineConfig) -> dict:
    """Evaluate every checkpoint on the validation set and install the best; a selection already made stands.

    Only validation questions are read here: the test set, which 4a and 4d report on, never takes part in a
    choice. Cleanup leaves only the chosen checkpoint, so selecting again after it would compare one checkpoint
    with itself and lose the others' scores from the report.
    """
    selection, standing = select_and_install(config)
    if standing:
        say(f"4c select: already done for this training run: {selection.selected} installed in "
            f"{config.path(config.paths.lora_weights)}")
    else:
        log_selection(config, selection)
        say(selection_said(selection))
    return dump(selection)


@threaded_flow("final-eval")
def final_eval(config: PipelineConfig) -> dict:
    """The adapter on the test set, compared question by question with 4a's baseline on the same questions."""
    adapter = config.path(config.paths.lora_weights)
    if not (adapter / "adapter_model.safetensors").exists():
        raise MissingStageOutput("4d", adapter / "adapter_model.safetensors", "4c")
    records = stage_questions(config, "test")
    report, cached = evaluate_side(config, base_model(config), adapter, records, "test")
    results.write(config, report, "eval_finetuned")
    say(f"4d final: combined {report.metrics['combined']:.4f} on {report.examples} test questions"
        f"{_cached_note(cached)}")
    baseline = results.read_if_present(config, EvaluationReport, "eval_baseline")
    if baseline is None:
        say("4d: no baseline report (run stage 4a): no comparison written")
        return report.metrics
    e = config.evaluation
    summary = summarise(baseline, report, len({r["doc_sha256"] for r in records}), e.resamples, e.seed, e.confidence)
    summary["caveats"] = dataset_caveats(artifacts.load_if_present(config, "stats", {}))
    if serving := serving_version(config, adapter, ADAPTER_FILES):  # a retrained candidate is held to the version serving
        previous, _ = evaluate_side(config, report.model, serving[1], records, "test")
        summary["vs_previous"] = against_version(serving[0], previous, report, e.resamples, e.seed, e.confidence)
        say(f"4d {summary['vs_previous']['headline']}")
    if e.judge:
        summary["judge"] = judge = grade_test_answers(config, baseline, report)
        say(f"4d grade: {judge['graded']}/{judge['graded'] + judge['failed']} questions graded by {judge['grader']}")
    results.write(config, Comparison.model_validate(summary))
    log_comparison(config, summary)
    markdown, written = publish_comparison(config, summary)
    create_markdown_artifact(_sync=True, key=artifact_key("4d"), markdown=markdown,
                             description="Stage 4: baseline vs fine-tuned on the test set")
    say(f"4d: {summary['headline']}")
    say(f"4d: wrote {', '.join(p.name for p in written)} (open {written[-1]})")
    return report.metrics
