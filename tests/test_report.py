"""What the UI shows of a run: stage tables with nested values one row each, the pipeline summary."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tasks.report.console import Said, recording, say, say_skipped, summary_markdown, table_rows

leaves = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=8), st.booleans(), st.none(),
                   st.lists(st.integers(), max_size=3))
keys = st.text(alphabet="abcdefgh_", min_size=1, max_size=6)
nested = st.recursive(leaves, lambda inner: st.dictionaries(keys, inner, min_size=1, max_size=4), max_leaves=20)


def leaf_paths(values: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        paths += leaf_paths(value, f"{prefix}{key}.") if isinstance(value, dict) and value else [f"{prefix}{key}"]
    return paths


@given(st.dictionaries(keys, nested, max_size=6))
def test_every_nested_value_is_one_row_and_no_cell_holds_a_mapping(values):
    rows = table_rows(values)
    assert [row["metric"] for row in rows] == leaf_paths(values)
    assert not any(isinstance(row["value"], dict) and row["value"] for row in rows)


def test_nested_statistics_read_as_rows():
    rows = table_rows({"pairs": 139, "split": {"level": "document", "train_pairs": 80}, "by_type": {"fact": 3},
                       "source_documents": ["a", "b"]})
    assert rows == [{"metric": "pairs", "value": 139}, {"metric": "split.level", "value": "document"},
                    {"metric": "split.train_pairs", "value": 80}, {"metric": "by_type.fact", "value": 3},
                    {"metric": "source_documents", "value": "a, b"}]


def test_the_summary_names_the_failed_stage_and_what_each_stage_said(capsys):
    with recording() as said:
        say("collect: 12 sources, 12 ok")
    markdown = summary_markdown({"1": ("completed", said), "2": ("completed", Said(["process: 12 | 0 failed"])),
                                 "3": ("failed: StageIncomplete: 3 of 17 groups failed", Said()),
                                 "4a": ("not run", Said())}, ui=None)
    assert "**Stage 3 failed**" in markdown
    assert "| 1 collect | completed | `collect-summary` |" in markdown
    assert "| 3 generate | failed | `generate-summary` |" in markdown  # the message is below: cells stay short
    assert "| 4a baseline-eval | not run |  |" in markdown
    assert "- **1 collect** completed: collect: 12 sources, 12 ok\n" in markdown
    assert "- **2 process** completed: process: 12 | 0 failed\n" in markdown
    assert "- **3 generate** failed: StageIncomplete: 3 of 17 groups failed" in markdown
    assert "4a baseline-eval** not run" not in markdown
    assert capsys.readouterr().out == "collect: 12 sources, 12 ok\n"  # say still prints


def test_with_the_ui_address_known_each_stage_links_its_artifact():
    markdown = summary_markdown({"4d": ("completed", Said(["4d: Combined score …"]))}, ui="http://127.0.0.1:4200/")
    assert "[eval-comparison](http://127.0.0.1:4200/artifacts/key/eval-comparison)" in markdown
    assert "**Every stage completed.**" in markdown and "left out" not in markdown


def test_documents_left_out_are_counted_in_the_headline_and_listed_below_the_table(capsys):
    with recording() as said:
        say("process: 8 documents, 6 converted, 2 failed")
        say_skipped("process: skipped 75e85187889b (a.pdf) at conversion: truncated or damaged PDF: it cannot be opened",
                    "ConversionError: Conversion failed for: /data/raw/75e8…pdf with status: failure")
        say_skipped("process: skipped 0b1c2d3e4f5a (login.html) at cleaning: 6 words of main content")
    markdown = summary_markdown({"1": ("completed", Said(["collect: 8 ok"])), "2": ("completed", said)}, ui=None)
    assert "**Every stage completed.** 2 documents left out (below)." in markdown
    assert "| 2 process | completed | `process-summary` |" in markdown
    assert "- **2 process** completed: process: 8 documents, 6 converted, 2 failed\n" in markdown
    assert markdown.endswith("## Documents left out\n\n"
                             "- stage 2: process: skipped 75e85187889b (a.pdf) at conversion: truncated or damaged PDF: "
                             "it cannot be opened\n- stage 2: process: skipped 0b1c2d3e4f5a (login.html) at cleaning: "
                             "6 words of main content")
    assert "ConversionError" not in capsys.readouterr().out  # the details go to the run log only
