"""Stage 3 generation through the real Gemini and OpenAI clients against loopback servers with failures."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from core import artifacts
from core.config import DatasetGenerator
from core.prompts import ANSWER_STYLE, GENERATION_SYSTEM, system_prompt
from harness.llm import LLMFaults, fake_llm
from tasks.common.records import Chunk
from tasks.dataset.chat import chat_view
from tasks.dataset.generate import generate_all, group_chunks, judge_one
from tasks.dataset.pairs import QARecord, deduplicate
from tasks.dataset.split import SplitLevel, split_level, split_records
from tasks.dataset.stats import GenerationRun, dataset_stats, pair_shares, shares_off
from tasks.llm.calls import CallPolicy, RateLimitedCaller
from tasks.llm.providers import GeminiProvider, LLMAuthError, OfflineProvider, OpenAICompatibleProvider

KEY = "gemini-test-key"
TEXTS = [
    "Prenatal care is the routine health care a person receives during pregnancy. Regular visits let a midwife "
    "follow the growth of the baby. The first visit is the longest and includes blood tests.",
    "Folic acid lowers the risk of neural tube defects such as spina bifida. Iron is needed to make extra blood. "
    "Vitamin D supports the baby's bones and teeth.",
    "Labour is the process by which the baby is born. An epidural is an injection of local anaesthetic into the "
    "lower back. Gas and air is a mixture of oxygen and nitrous oxide.",
]
FAST = CallPolicy.of(DatasetGenerator(max_concurrent_requests=4, requests_per_minute=6000, max_retries=3, backoff_base_s=0.01,
                                      backoff_max_s=2))


def chunks(n_docs: int = 3) -> list[Chunk]:
    return [Chunk(id=f"c{d}", doc_sha256=f"{d}" * 64, url=f"https://example.org/{d}.pdf", section_path=["S"],
                  text=TEXTS[d % len(TEXTS)] + f" Section {d}.", tokens=60) for d in range(n_docs)]


def run(provider, groups, tmp_path, policy=FAST):
    caller = RateLimitedCaller(provider, policy)

    async def go():
        try:
            return await generate_all(groups, caller, tmp_path, "pregnancy", 3, 0.5)
        finally:
            await provider.aclose()

    return asyncio.run(go()), caller


def gemini(server, key=KEY):
    return GeminiProvider(SecretStr(key), "gemini-2.5-flash", server.url, timeout_s=1)


def test_gemini_structured_output_records_and_usage(tmp_path):
    groups = group_chunks(chunks(), max_tokens=600)
    assert len(groups) == 3  # chunks of different documents never share a group
    with fake_llm("gemini", KEY) as server:
        results, caller = run(gemini(server), groups, tmp_path)
    assert caller.calls == 3 and all(r.status == "ok" and r.pairs for r in results)
    assert all(r.input_tokens > 0 and r.output_tokens > 0 for r in results)
    config = server.bodies[0]["generationConfig"]
    assert config["responseMimeType"] == "application/json" and "responseSchema" in config
    assert ANSWER_STYLE in server.bodies[0]["systemInstruction"]["parts"][0]["text"]
    for group, result in zip(groups, results, strict=True):
        for pair in result.pairs:  # grounded: every sentence of the answer is a sentence of the source
            assert all(sentence in group.text for sentence in re.split(r"(?<=\.) ", pair.answer)), pair


def test_transient_failures_are_retried_and_malformed_replies_repaired(tmp_path):
    groups = group_chunks(chunks(1), max_tokens=600)
    faults = LLMFaults(["429", "500", "timeout", "malformed"])
    with fake_llm("gemini", KEY, faults) as server:
        [result], caller = run(gemini(server), groups, tmp_path)
    assert result.status == "ok" and result.pairs
    assert caller.calls == 5  # 3 transient failures retried, 1 malformed reply repaired, 1 good
    assert "could not be used (invalid json)" in server.prompts[-1]
    hits = [h.at for h in server.hits]
    assert hits[1] - hits[0] >= 0.95  # Retry-After: 1 was honoured


@pytest.mark.parametrize(("faults", "reason"), [
    (["malformed", "malformed"], "invalid_json"),
    (["partial", "partial"], "missing_fields"),
    (["ungrounded", "ungrounded"], "no_valid_pairs"),
])
def test_unusable_twice_is_dropped_and_counted(tmp_path, faults, reason):
    groups = group_chunks(chunks(1), max_tokens=600)
    with fake_llm("openai", None, LLMFaults(faults)) as server:
        [result], _ = run(OpenAICompatibleProvider(server.url + "/v1", "local", timeout_s=2), groups, tmp_path)
    assert result.status == "dropped" and result.dropped[reason] == 1 and not result.pairs
    if reason == "no_valid_pairs":
        assert result.dropped["ungrounded"] == 2
    assert len(list(tmp_path.glob("*.json"))) == 1  # the paid-for outcome is cached all the same


def test_cache_means_a_rerun_makes_no_calls(tmp_path):
    groups = group_chunks(chunks(), max_tokens=600)
    with fake_llm("openai", "sk-local") as server:
        first, _ = run(OpenAICompatibleProvider(server.url + "/v1", "local", SecretStr("sk-local")), groups, tmp_path)
        second, caller = run(OpenAICompatibleProvider(server.url + "/v1", "local", SecretStr("sk-local")), groups, tmp_path)
        assert len(server.prompts) == 3
    assert caller.calls == 0 and second == first
    other_model = artifacts.llm_cache_key("groups", "openai", "another-model", groups[0].key)
    assert not (tmp_path / f"{other_model}.json").exists()  # the key includes provider and model


def test_outage_leaves_failed_groups_uncached_and_a_rerun_does_only_those(tmp_path):
    groups = group_chunks(chunks(), max_tokens=600)
    faults = LLMFaults()
    with fake_llm("gemini", KEY, faults) as server:
        policy = replace(FAST, max_concurrent=1, max_retries=1)
        run(gemini(server), groups[:1], tmp_path, policy)  # one group done before the outage
        faults.outage = True
        results, _ = run(gemini(server), groups, tmp_path, policy)
        assert [r.status for r in results] == ["ok", "failed", "failed"]
        faults.outage = False
        before = len(server.prompts)
        results, caller = run(gemini(server), groups, tmp_path, policy)
    assert [r.status for r in results] == ["ok", "ok", "ok"]
    assert caller.calls == 2 and len(server.prompts) - before == 2
    assert not any(groups[0].text in p for p in server.prompts[before:])  # the finished group was not asked again


def test_bad_key_stops_the_stage_with_a_clear_error(tmp_path):
    groups = group_chunks(chunks(), max_tokens=600)
    with fake_llm("gemini", KEY) as server, pytest.raises(LLMAuthError, match="HTTP 401: API key not valid"):
        run(gemini(server, key="wrong"), groups, tmp_path)


def _record(i: int, question: str, doc: str = "d") -> QARecord:
    return QARecord(id=str(i), question=question, answer="a", type="what", chunk_ids=[f"c{i}"], doc_sha256=doc,
                    url=None, provider="offline", model="m", prompt_version="v")


def test_exact_and_near_duplicate_questions_are_removed():
    question = "Why should a pregnant person who notices reduced fetal movement call the maternity unit the same day?"
    records = [_record(0, question),
               _record(1, question.lower().replace("?", "").replace(" who", ", who")),  # exact after normalising
               _record(2, question.replace("the same day", "on the same day")),          # near (Jaccard ~0.9)
               _record(3, "How long does labour last?")]
    kept, exact, near = deduplicate(records)
    assert [r.id for r in kept] == ["0", "3"] and (exact, near) == (1, 1)


RATIOS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def _docs_records(docs: list[str], per_doc: int = 4) -> list[QARecord]:
    return [_record(i, f"{doc}-{i}", doc=doc) for doc in docs for i in range(per_doc)]


def _documents(split: dict[str, list[QARecord]]) -> dict[str, set[str]]:
    return {side: {r.doc_sha256 for r in records} for side, records in split.items()}


def test_split_is_three_way_by_document_and_stable_when_documents_are_added():
    records = [_record(i, f"q{i}", doc=f"doc{i % 10}") for i in range(100)]
    split, sides = split_records(records, RATIOS, seed=42)
    assert set(sides.values()) == {"train", "validation", "test"} and all(split.values())
    docs = _documents(split)
    assert not (docs["train"] & docs["validation"] or docs["train"] & docs["test"] or docs["validation"] & docs["test"])
    more = records + [_record(100 + i, f"n{i}", doc=f"new{i}") for i in range(20)]
    split2, sides2 = split_records(more, RATIOS, seed=42, assigned=sides)
    assert all({r.id for r in split[side]} <= {r.id for r in split2[side]} for side in RATIOS)
    assert {doc: sides2[doc] for doc in sides} == sides


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 12), st.lists(st.integers(0, 6), max_size=3), st.sampled_from(
    [RATIOS, {"train": 0.5, "validation": 0.2, "test": 0.3}, {"train": 0.9, "validation": 0.05, "test": 0.05}]))
def test_split_properties_hold_for_any_documents_and_refreshes(seed, n_docs, added, ratios):
    """Every question lands on exactly one side; from 3 documents each side has a whole document of its own;
    documents never move on a refresh; with 1 or 2 documents no test question comes from a training document."""
    docs = [f"doc{i}" for i in range(n_docs)]
    split, sides = split_records(_docs_records(docs), ratios, seed)
    assert sorted(r.id + r.doc_sha256 for records in split.values() for r in records) == \
        sorted(r.id + r.doc_sha256 for r in _docs_records(docs))
    if n_docs >= 3:
        assert all(side in sides.values() for side in ("train", "validation", "test")), sides
        assert set(sides.values()) <= {"train", "validation", "test"}
    elif n_docs == 2:
        assert sorted(sides.values()) == ["held-out", "train"]
        assert not _documents(split)["train"] & _documents(split)["test"]
    else:
        assert sides == {"doc0": "chunks"}
    for count in added:
        docs += [f"new{len(docs)}-{i}" for i in range(count)]
        _, later = split_records(_docs_records(docs), ratios, seed, assigned=sides)
        assert {doc: later[doc] for doc in sides} == sides
        sides = later


def test_a_two_way_split_is_migrated_without_moving_a_document_out_of_train():
    old = {"a": "train", "b": "train", "c": "train", "d": "eval", "e": "eval", "f": "eval"}
    split, sides = split_records(_docs_records(list(old)), RATIOS, seed=7, assigned=old)
    assert {doc for doc, side in sides.items() if side == "train"} == {"a", "b", "c"}
    assert {sides[doc] for doc in "def"} == {"validation", "test"}  # the held-out documents, shared out
    lone = {"a": "train", "b": "train", "d": "eval"}
    split, sides = split_records(_docs_records(list(lone), per_doc=40), RATIOS, seed=7, assigned=lone)
    assert sides == {"a": "train", "b": "train", "d": "held-out"}
    assert _documents(split) == {"train": {"a", "b"}, "validation": {"d"}, "test": {"d"}}
    chunked = {"only": "chunks", "b": "eval"}  # a one-document split later given a second document
    _, sides = split_records(_docs_records(list(chunked)), RATIOS, seed=7, assigned=chunked)
    assert sides == {"only": "chunks", "b": "held-out"}


def test_one_document_is_split_by_chunk_and_stays_so():
    lone = [_record(i, f"q{i}", doc="only") for i in range(60)]
    split, sides = split_records(lone, RATIOS, 1)
    assert sides == {"only": "chunks"} and all(split.values())
    more = lone + [_record(100 + i, f"n{i}", doc=f"new{i % 3}") for i in range(12)]
    split2, sides2 = split_records(more, RATIOS, 1, assigned=sides)
    assert sides2["only"] == "chunks"
    assert all({r.id for r in split[side]} <= {r.id for r in split2[side]} for side in RATIOS)


def test_offline_judge_scores_faithfulness(tmp_path):
    source = TEXTS[1]

    async def both():
        caller = RateLimitedCaller(OfflineProvider(), FAST)
        good = await judge_one(source, "What does folic acid do?",
                               "Folic acid lowers the risk of neural tube defects such as spina bifida.", caller,
                               tmp_path / "good.json")
        bad = await judge_one(source, "What is the capital of Mars?", "Olympus City on the red volcanic plains.",
                              caller, tmp_path / "bad.json")
        return good, bad

    good, bad = asyncio.run(both())
    assert good.faithfulness == 1.0 and good.usefulness == 1.0
    assert bad.faithfulness < 0.3
    assert json.loads((tmp_path / "good.json").read_text())["faithfulness"] == 1.0


def test_answer_style_is_one_constant_shared_by_generation_and_evaluation():
    assert ANSWER_STYLE in GENERATION_SYSTEM
    assert ANSWER_STYLE in system_prompt("pregnancy")
    view = chat_view(_record(0, "What is it?"), "pregnancy")
    assert [m["role"] for m in view["messages"]] == ["system", "user", "assistant"]
    assert view["messages"][0]["content"] == system_prompt("pregnancy")


@pytest.mark.parametrize(("question", "answer", "reason"), [
    ("How is there described?", "There is a default for every option.", "vague_reference"),   # seen on real text
    ("Explain these.", "These options set the page margins.", "vague_reference"),
    ("Why is this important?", "It keeps the mesh conforming.", "vague_reference"),
    ("How do you prevent this?", "To prevent this, the GPL assures that patents cannot be used.", "vague_reference"),
    ("What is if u?", "If u is a scalar variable then its value is appended to the file.", "clause_subject"),
    ("What is when the mesh?", "When the mesh is fine, the solver is slow.", "clause_subject"),
    ("What is Gmsh?", "Gmsh.", "answer_in_question"),
    ("What is the abscissa?", "The abscissa is the distance with the beginning point.", None),
    ("How do you kill without confirmation?", "To kill without confirmation, give C-c C-k an argument.", None),
])
def test_question_rules(question, answer, reason):
    from tasks.common.questions import problem

    assert problem(question, answer) == reason


def test_offline_questions_agree_in_number_and_keep_names():
    from tasks.llm.offline import extractive_pairs

    source = ("The default names are important because other stylesheets refer to them. "
              "The Gfem language is small. Gfem is a language for the finite element method. "
              "FreeFEM is an implementation of the Gfem language. Screening tests estimate the chance of a condition. "
              "A urine test screens for protein, sugar and infection.")
    questions = [p["question"] for p in extractive_pairs(source, 10)]
    assert "Why are the default names important?" in questions            # not "Why is the default names …"
    assert "What is Gfem?" in questions and "What is FreeFEM?" in questions  # names keep their capital
    assert "What do screening tests do?" in questions and "What does a urine test do?" in questions


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    "It is a language for meshes.", "There is a default.", "These are the options.", "If the mesh is fine, it is slow.",
    "The mesh is a set of triangles.", "This License is a kind of copyleft.", "When it is used it must come first.",
    "Regular visits let a midwife follow the baby.", "To compile the code, run make in the top folder.",
    "Hence the second is the main routine.", "Naturally if the files contain items, there is a conflict.",
    "// Boolean operations always create new entities.", "The solver is slow because it uses a direct method."]),
    min_size=1, max_size=12))
def test_offline_questions_that_pass_the_rules_read_as_questions(sentences):
    """The offline generator fills its templates; what the rules let through names its subject and is grounded."""
    from tasks.common.questions import CLAUSE_OPENERS, VAGUE, problem
    from tasks.llm.offline import extractive_pairs

    source = " ".join(sentences)
    for pair in extractive_pairs(source, 5):
        assert pair["question"].endswith("?") and all(s in source for s in re.split(r"(?<=\.) ", pair["answer"]))
        if problem(pair["question"], pair["answer"]) is None:
            words = [w.lower() for w in re.findall(r"[\w'/-]+", pair["question"])]
            assert not set(words[1:]) & (VAGUE - {"you"}) and words[2] not in CLAUSE_OPENERS, pair


def test_openai_asks_for_the_schema_strictly_and_bounds_the_reply(tmp_path):
    groups = group_chunks(chunks(2), max_tokens=600)
    with fake_llm("openai") as server:
        results, _ = run(OpenAICompatibleProvider(server.url + "/v1", "local", max_output_tokens=321), groups, tmp_path)
    assert all(r.status == "ok" for r in results)
    body = server.bodies[0]
    assert body["max_tokens"] == 321
    form = body["response_format"]
    assert form["type"] == "json_schema" and form["json_schema"]["strict"] is True
    schema = form["json_schema"]["schema"]
    assert schema["additionalProperties"] is False and schema["required"] == ["pairs"]
    item = schema["$defs"]["QAItem"]
    assert item["additionalProperties"] is False and set(item["required"]) == {"question", "answer", "type"}
    assert item["properties"]["type"]["enum"] == ["what", "why", "how", "compare", "explain"]


def test_a_server_without_json_schema_gets_json_object_said_once(tmp_path, caplog):
    groups = group_chunks(chunks(3), max_tokens=600)
    with fake_llm("openai", None, LLMFaults(refuse_json_schema=True)) as server:
        results, _ = run(OpenAICompatibleProvider(server.url + "/v1", "local"), groups, tmp_path,
                              replace(FAST, max_concurrent=1))
    assert all(r.status == "ok" and r.pairs for r in results)
    kinds = [b["response_format"]["type"] for b in server.bodies]
    assert kinds == ["json_schema", "json_object", "json_object", "json_object"]  # refused once, then never asked again
    warnings = [r.getMessage() for r in caplog.records if "refused response_format json_schema" in r.getMessage()]
    assert len(warnings) == 1 and "HTTP 400" in warnings[0]


def test_the_split_level_is_written_as_found_with_its_warning():
    """A held-out document shared out by question is a question-level split in stats.json (it once read "chunk")."""
    lone = {"a": "train", "b": "train", "d": "eval"}
    split, sides = split_records(_docs_records(list(lone), per_doc=40), RATIOS, seed=7, assigned=lone)
    level = split_level(sides)
    assert level is SplitLevel.QUESTION and "shared out between validation and test" in level.warning
    run = GenerationRun("offline", "offline-extractive-2", ["a", "b", "d"], 3, 0, 3, [], Counter(), 0, 0, 0, 0)
    assert dataset_stats(DatasetGenerator(), run, split, level, {}, {})["split"]["level"] == "question"
    _, one = split_records([_record(i, f"q{i}", doc="only") for i in range(60)], RATIOS, 1)
    assert split_level(one) is SplitLevel.CHUNK and "split by chunk" in SplitLevel.CHUNK.warning
    assert split_level({"a": "train", "b": "validation", "c": "test"}) is SplitLevel.DOCUMENT
    assert SplitLevel.DOCUMENT.warning is None


def test_documents_of_very_different_sizes_give_each_side_close_to_its_share_of_pairs():
    """Six manuals (pairs per document as stage 3 made them from Debian's PDFs) at the local profile's ratios."""
    ratios = {"train": 0.6, "validation": 0.2, "test": 0.2}
    sizes = {"gmsh": 506, "maxima": 150, "freefem": 71, "octave": 48, "tasn1": 40, "refcard": 12}
    records = [_record(i, f"{doc}-{i}", doc=doc) for doc, n in sizes.items() for i in range(n)]
    split, sides = split_records(records, ratios, seed=42)
    shares = pair_shares(split)
    assert all(abs(shares[side] - ratios[side]) <= 0.10 for side in ratios), (shares, sides)
    assert shares_off(shares, ratios) == [] and set(sides.values()) == set(ratios)
    assert split_records(records, ratios, seed=42)[1] == sides  # the same placement every run
    more = records + [_record(1000 + i, f"new-{i}", doc="new") for i in range(30)]
    _, later = split_records(more, ratios, seed=42, assigned=sides)
    assert {doc: later[doc] for doc in sides} == sides  # a refresh places the new document, moves none


def test_a_side_far_off_its_ratio_is_named():
    off = shares_off({"train": 0.31, "validation": 0.6, "test": 0.09}, {"train": 0.6, "validation": 0.2, "test": 0.2})
    assert off == ["train has 31% of the pairs for a ratio of 60%", "validation has 60% of the pairs for a ratio of 20%",
                   "test has 9% of the pairs for a ratio of 20%"]


@pytest.mark.parametrize("decontaminate", [False, True])
def test_held_out_pairs_copying_training_text_are_flagged_or_dropped(tmp_path, decontaminate):
    """A test answer that repeats 13 words of a training chunk is flagged in stats.json (kept), or dropped and listed
    in excluded.json with dataset_generator.decontaminate; a 12-word overlap is neither."""
    from core.config import load_config
    from harness.project import write_profile
    from tasks.dataset.finish import split_and_write

    config = load_config(write_profile(tmp_path, {"dataset_generator": {"decontaminate": decontaminate}}))
    qa = tmp_path / "data/qa_dataset"
    qa.mkdir(parents=True)
    (qa / "split.json").write_text(json.dumps({"A": "train", "B": "validation", "C": "test"}))
    taught = " ".join(f"w{i}" for i in range(30))
    chunks = [Chunk(id=f"c{doc}", doc_sha256=doc, section_path=[], text=text, tokens=30)
              for doc, text in (("A", taught), ("B", "b text"), ("C", "c text"))]

    def record(pair_id: str, doc: str, answer: str) -> QARecord:
        return QARecord(id=pair_id, question=f"What is {pair_id}?", answer=answer, type="what", chunk_ids=[f"c{doc}"],
                        doc_sha256=doc, url=None, provider="offline", model="m", prompt_version="v")

    copied = record("t-copy", "C", " ".join(f"w{i}" for i in range(3, 16)))
    near = record("v-near", "B", " ".join(f"w{i}" for i in range(3, 15)))
    split, _, review, contamination = split_and_write(
        config, [record("a1", "A", "Something else entirely."), near, copied, record("t-ok", "C", "Fine.")], chunks)
    assert review == {"excluded_pairs": 0, "excluded_documents": 0, "corrected": 0}
    assert contamination["flagged"] == {"test": 1, "validation": 0} and contamination["dropped"] is decontaminate
    assert contamination["pairs"] == [{"id": "t-copy", "side": "test", "with_pairs": 2, "with_chunks": 13}]  # "what is"
    test_ids = [r["id"] for r in json.loads((qa / "test.json").read_text())]
    excluded = json.loads((qa / "excluded.json").read_text())
    assert [r.id for r in split["validation"]] == ["v-near"]
    if decontaminate:
        assert test_ids == ["t-ok"] and [(r["id"], r["reason"]) for r in excluded] == [("t-copy", "contamination")]
    else:
        assert test_ids == ["t-copy", "t-ok"] and excluded == []


def test_a_slow_server_that_keeps_writing_is_never_timed_out(tmp_path):
    """Streamed: the timeout is the longest silence, not the whole reply (here ~6 s for a 1 s timeout)."""
    groups = group_chunks(chunks(1), max_tokens=600)
    with fake_llm("openai", token_delay_s=0.05) as server:
        [result], _ = run(OpenAICompatibleProvider(server.url + "/v1", "local", timeout_s=1), groups, tmp_path)
    assert result.status == "ok" and result.pairs and result.output_tokens > 20
    assert server.bodies[0]["stream"] is True and server.bodies[0]["stream_options"] == {"include_usage": True}
    assert server.hits[-1].at - server.hits[0].at < 1  # one request, answered over several seconds


def test_a_saturated_server_gets_fewer_requests_at_once_and_every_group_finishes(tmp_path, caplog):
    """A server that answers two at a time: the rest wait past the timeout; the caller halves its requests in
    flight instead of failing them all again (and says so), and every group ends ok."""
    groups = group_chunks(chunks(12), max_tokens=100)
    policy = replace(FAST, max_concurrent=8, max_retries=3, backoff_base_s=0.05, backoff_max_s=0.2)
    with fake_llm("openai", latency_s=0.6, capacity=2) as server:
        results, caller = run(OpenAICompatibleProvider(server.url + "/v1", "local", timeout_s=1), groups, tmp_path,
                              policy)
    assert [r.status for r in results] == ["ok"] * len(groups)
    assert caller.slots.lowest <= 2 < policy.max_concurrent  # it backed off to what the server serves at once
    assert "the LLM server is saturated" in caplog.text and "4 requests in flight from now on" in caplog.text


@pytest.mark.parametrize(("server", "says"), [
    ("slow", "wrote no token for dataset_generator.request_timeout_s (1 s) even with 1 request(s) in flight: "
             "raise request_timeout_s"),
    ("down", "nothing answers at dataset_generator.base_url"),
    ("rate_limited", "lower dataset_generator.requests_per_minute"),
    ("broken", "rerun to retry only the failed ones"),
])
def test_a_failure_that_will_recur_names_the_setting_to_change_not_a_rerun(tmp_path, server, says):
    from core.config import load_config
    from harness.loopback import free_port
    from harness.project import write_profile
    from tasks.dataset.asking import StageIncomplete, generate_groups

    faults = {"slow": LLMFaults(["timeout"] * 20), "rate_limited": LLMFaults(["429"] * 20),
              "broken": LLMFaults(["500"] * 20), "down": LLMFaults()}[server]
    with fake_llm("openai", faults=faults) as llm:
        url = f"http://127.0.0.1:{free_port()}/v1" if server == "down" else llm.url + "/v1"
        write_profile(tmp_path, {"dataset_generator": {"provider": "openai", "base_url": url, "model": "local",
                                                       "request_timeout_s": 1, "max_retries": 1,
                                                       "backoff_base_s": 0.01, "backoff_max_s": 0.05}})
        config = load_config(tmp_path / "config.yaml")
        g = config.dataset_generator
        caller = RateLimitedCaller(OpenAICompatibleProvider(g.base_url, g.model, timeout_s=g.request_timeout_s),
                                   CallPolicy.of(g))
        with pytest.raises(StageIncomplete) as failed:
            asyncio.run(generate_groups.fn(group_chunks(chunks(2), max_tokens=600), caller, config))
    assert "2 of 2 groups failed" in str(failed.value) and says in str(failed.value)


@pytest.mark.parametrize(("kind", "provider", "model", "subject", "name"), [
    ("groups", "gemini", "gemini-2.5-flash", "abc", "897262d027499b7b710e6d236ec2eca51cc199f1797d000ed7caa1f3675ce786"),
    ("judge", "openai", "org/model", "rec1", "rec1-openai-org_model-qa-v1"),
    ("grades", "offline", "extractive", "the prompt", "e8cf4ccfb9e193322af51fb17acbe5b6"),
])
def test_cached_llm_calls_keep_the_names_earlier_versions_gave_them(kind, provider, model, subject, name):
    """A renamed cache entry is a call paid for twice: the names are the ones stage 3 and 4d have always written."""
    assert artifacts.llm_cache_key(kind, provider, model, subject) == name
