"""Stage 4–6 files through their models (core/results.py): an older file is read, a newer one or a malformed one is
refused naming the file and the stage to rerun, and what a writer put in comes out with the same keys and values."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import results
from core.results import CheckpointSelection, Registration, Rollout, TrainingRun, UnreadableResult
from harness.project import rollout_project

REGISTERED = {"status": "registered", "name": "pregnancy-qa-lora-v1.2", "target": "local",
              "location": "/srv/models/registry/pregnancy-qa-lora-v1.2", "adapter_sha256": "ab" * 32,
              "previous_versions": ["pregnancy-qa-lora-v1.1"], "metrics": {"baseline": {"combined": 0.31}},
              "promotion": {"rule": "significant", "headline": "Combined score 0.31 → 0.38"}, "exports": {},
              "registered_at": "2026-12-07T10:00:00+00:00"}


@pytest.fixture
def project(tmp_path):
    return rollout_project(tmp_path, "pregnancy-qa-lora-v1.2", {})


def test_a_file_written_before_schema_version_is_read_as_version_1(project):
    from core.config import load_config

    (project / "reports/registration.json").write_text(json.dumps(REGISTERED))
    record = results.read(load_config(project / "config.yaml"), Registration, "6")
    assert record.name == "pregnancy-qa-lora-v1.2" and record.schema_version == 1 and record.target == "local"


def test_a_newer_file_is_refused_with_the_file_and_the_fix(project):
    from core.config import load_config

    (project / "reports/registration.json").write_text(json.dumps({**REGISTERED, "schema_version": 2}))
    with pytest.raises(UnreadableResult) as refused:
        results.read(load_config(project / "config.yaml"), Registration, "6")
    message = str(refused.value)
    assert str(project / "reports/registration.json") in message and "schema_version 2" in message
    assert "upgrade the pipeline, or run stage 5 again" in message


def test_a_file_that_does_not_fit_names_what_is_wrong_and_the_stage_to_rerun(project):
    from core.config import load_config

    (project / "reports/registration.json").write_text(json.dumps({**REGISTERED, "target": "s3", "name": None}))
    with pytest.raises(UnreadableResult) as refused:
        results.read(load_config(project / "config.yaml"), Registration, "6")
    assert "name: Input should be a valid string" in str(refused.value) and "target:" in str(refused.value)
    assert "run stage 5 again" in str(refused.value)


def test_stage_6_fails_with_that_message_not_a_traceback(project):
    from harness.project import run_pipeline

    (project / "reports/registration.json").write_text(json.dumps({**REGISTERED, "schema_version": 9}))
    result = run_pipeline(project / "config.yaml", "--stage", "6", timeout=300)
    assert result.returncode == 1 and "schema_version 9, newer than this pipeline reads" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_writer_leaves_out_what_it_did_not_set():
    """An unchanged registration has no previous_versions, metrics or exports: its file says so by leaving them out."""
    record = Registration(status="unchanged", name="x-v1.0", target="local", location="/r/x-v1.0", adapter_sha256="0" * 64,
                          checked_at="2026-12-07T10:00:00+00:00")
    assert set(results.dump(record)) == {"schema_version", "status", "name", "target", "location", "adapter_sha256",
                                         "checked_at"}


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=10)
names = st.text(st.characters(whitelist_categories=("Ll", "Nd")), min_size=1, max_size=20)


@given(extra=st.dictionaries(st.text(st.characters(whitelist_categories=("Ll",)), min_size=1, max_size=10)
                             .filter(lambda k: k not in Rollout.model_fields), json_values, max_size=4),
       adapter=names, status=st.sampled_from(["switched", "already_active", "rolled_back", "parity_failed"]))
def test_a_rollout_record_comes_back_with_every_key_and_value_it_was_written_with(extra, adapter, status):
    """Detail a stage writes for people (timings, ports, images) is kept, not dropped, by the model."""
    written = {"adapter": adapter, "mode": "in_gateway", "gateway": "http://127.0.0.1:8000",
               "started_at": "2026-12-07T10:00:00+00:00", "status": status, **extra}
    assert results.dump(results.parse(Rollout, written, "rollout.json", "6")) == {"schema_version": 1, **written}


@pytest.mark.parametrize(("model", "raw"), [
    (TrainingRun, {"fingerprint": "f" * 64, "base": "models/base", "completed": True}),
    (CheckpointSelection, {"selected": "checkpoint-30", "scores": {"checkpoint-30": 0.4}, "metric": "combined",
                           "split": "validation", "eval_examples": 6, "answers_changed_vs_base": 4,
                           "adapter_sha256": {"adapter_model.safetensors": "a" * 64}}),
])
def test_files_of_earlier_versions_still_read(model, raw):
    """run.json and a selection from before validation_total and selection_key were recorded."""
    assert results.dump(results.parse(model, raw, "f.json", "4")) == {"schema_version": 1, **raw}
