"""Loaders: HH-RLHF, TL;DR, generic paired/unpaired files, to_unpaired, AlpacaEval prompts."""
from __future__ import annotations

import gzip
import json
import warnings
from collections import Counter
from pathlib import Path

import pytest

from rpo_tutorial.data import preferences as data
from rpo_tutorial.data import (
    load_alpaca_eval_prompts,
    load_hh,
    load_preferences,
    load_tldr,
    to_unpaired,
)
from rpo_tutorial.paths import shared_data_dir

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = shared_data_dir()
HH_TEST_FILE = SHARED / "hh-rlhf" / "harmless-base-test.jsonl.gz" if SHARED else None
ALPACA_FILE = SHARED / "alpaca_eval" / "alpaca_eval_prompts.json" if SHARED else None
needs_hh = pytest.mark.skipif(HH_TEST_FILE is None or not HH_TEST_FILE.exists(), reason="../shared/data absent")
needs_alpaca = pytest.mark.skipif(ALPACA_FILE is None or not ALPACA_FILE.exists(), reason="../shared/data absent")


def quiet(function, *args, **kwargs):
    """Call a loader, returning (result, warning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(*args, **kwargs)
    return result, [str(w.message) for w in caught]


# ---------------------------------------------------------------- an independent HH parse
MARKERS = {"\n\nHuman:": "user", "\n\nAssistant:": "assistant"}


def reference_messages(text: str) -> list[dict]:
    """Scan for markers with str.find (no regex), strip contents, merge same-speaker turns."""
    positions = []
    for marker, role in MARKERS.items():
        start = text.find(marker)
        while start >= 0:
            positions.append((start, marker, role))
            start = text.find(marker, start + 1)
    positions.sort()
    messages = []
    for number, (start, marker, role) in enumerate(positions):
        end = positions[number + 1][0] if number + 1 < len(positions) else len(text)
        content = text[start + len(marker):end].strip()
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + content
        else:
            messages.append({"role": role, "content": content})
    return messages


def reference_hh(chosen: str, rejected: str):
    """(row, None) or (None, reason) using rfind on both transcripts."""
    marker = "\n\nAssistant:"
    cut_chosen, cut_rejected = chosen.rfind(marker), rejected.rfind(marker)
    if cut_chosen < 0 or cut_rejected < 0:
        return None, "no Assistant turn"
    prompt = chosen[:cut_chosen]
    if prompt != rejected[:cut_rejected]:
        return None, "prompts differ"
    good, bad = chosen[cut_chosen + len(marker):].strip(), rejected[cut_rejected + len(marker):].strip()
    if not good or not bad:
        return None, "empty response"
    if good == bad:
        return None, "identical responses"
    messages = reference_messages(prompt)
    if messages[-1]["role"] != "user":
        return None, "prompt does not end with a Human turn"
    return {"prompt": messages, "chosen": good, "rejected": bad}, None


@needs_hh
def test_load_hh_real_file_matches_independent_parse():
    rows, messages = quiet(load_hh, path=HH_TEST_FILE)
    with gzip.open(HH_TEST_FILE, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    expected, reasons = [], {}
    for index, record in enumerate(records):
        row, reason = reference_hh(record["chosen"], record["rejected"])
        if row is None:
            reasons[index] = reason
        else:
            expected.append(row)
    assert len(records) == 2312 and len(expected) == 2303 and len(reasons) == 9
    assert len(rows) == 2303 and rows.report.total == 2312 and rows.report.kept == 2303
    assert [{key: row[key] for key in ("prompt", "chosen", "rejected")} for row in rows] == expected
    assert {bad.index: bad.reason for bad in rows.report.invalid} == reasons
    assert rows.report.counts() == dict(Counter(reasons.values()))
    assert all(row["prompt"][-1]["role"] == "user" and row["source"] == "hh-rlhf/harmless-base" for row in rows)
    assert len(messages) == 1 and "skipped 9 of 2312" in messages[0] and str(min(reasons)) in messages[0]


@needs_hh
def test_load_hh_strict_raises_on_first_invalid_row_of_real_file():
    with pytest.raises(ValueError, match=r"harmless-base-test\.jsonl\.gz: row 86: empty response"):
        load_hh(path=HH_TEST_FILE, strict=True)


def test_load_hh_fixture_counts_every_reason_and_keeps_valid_rows():
    rows, messages = quiet(load_hh, path=FIXTURES / "hh_small.jsonl")
    assert [row["id"] for row in rows] == ["hh_small.jsonl:0", "hh_small.jsonl:1", "hh_small.jsonl:2", "hh_small.jsonl:9"]
    assert rows.report.counts() == {reason: 1 for reason in (
        "prompts differ", "empty response", "identical responses", "no Assistant turn", "missing field", "not a string")}
    assert rows.report.first_indexes(limit=10) == [3, 4, 5, 6, 7, 8]
    assert len(messages) == 1 and "skipped 6 of 10" in messages[0]
    assert rows[1]["prompt"] == [
        {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is the capital of France?"}]
    assert (rows[1]["chosen"], rows[1]["rejected"]) == ("Paris.", "I am not sure.")
    merged = rows[2]["prompt"]  # two Assistant turns in a row become one message
    assert [m["role"] for m in merged] == ["user", "assistant", "user"]
    assert merged[1]["content"] == "Here is one:\n\nWhy did the chicken cross the road?"


@pytest.mark.parametrize("line, reason", [(3, "prompts differ"), (6, "no Assistant turn"), (7, "missing field"),
                                          (8, "not a string"), (5, "identical responses")])
def test_load_hh_strict_names_file_row_and_reason(tmp_path, line, reason):
    source = (FIXTURES / "hh_small.jsonl").read_text().splitlines()
    path = tmp_path / "one.jsonl"
    path.write_text(source[0] + "\n" + source[line] + "\n")
    with pytest.raises(ValueError, match=rf"one\.jsonl: row 1: {reason}"):
        load_hh(path=path, strict=True)


def test_load_hh_hub_reads_each_subset_with_data_dir(monkeypatch):
    import datasets

    records = [json.loads(line) for line in (FIXTURES / "hh_small.jsonl").read_text().splitlines()]
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return records

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows, _ = quiet(load_hh, split="test", subsets=["helpful-base", "harmless-base"])
    assert calls == [(("Anthropic/hh-rlhf",), {"data_dir": "helpful-base", "split": "test"}),
                     (("Anthropic/hh-rlhf",), {"data_dir": "harmless-base", "split": "test"})]
    assert [row["source"] for row in rows] == ["hh-rlhf/helpful-base"] * 4 + ["hh-rlhf/harmless-base"] * 4
    assert rows[0]["id"] == "hh-rlhf/helpful-base/test:0" and rows[-1]["id"] == "hh-rlhf/harmless-base/test:9"
    assert rows.report.total == 20 and rows.report.skipped == 12
    quiet(load_hh)
    assert [kwargs["data_dir"] for _, kwargs in calls[2:]] == list(data.HH_SUBSETS)


def test_load_hh_rejects_unknown_subset_and_path_with_subsets():
    with pytest.raises(ValueError, match="subsets"):
        load_hh(subsets=["harmless"])
    with pytest.raises(ValueError, match="not both"):
        load_hh(path=FIXTURES / "hh_small.jsonl", subsets=["helpful-base"])


# ---------------------------------------------------------------- TL;DR
def test_load_tldr_fixture_builds_prompt_and_orders_by_choice():
    rows, messages = quiet(load_tldr, path=FIXTURES / "tldr_comparisons.jsonl")
    records = [json.loads(line) for line in (FIXTURES / "tldr_comparisons.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows.report.total == 5
    for row, record in zip(rows, records[:2]):
        info, choice = record["info"], record["choice"]
        assert row["prompt"] == f"SUBREDDIT: r/{info['subreddit']}\nTITLE: {info['title']}\nPOST: {info['post']}\nTL;DR:"
        assert row["chosen"] == record["summaries"][choice]["text"].strip()
        assert row["rejected"] == record["summaries"][1 - choice]["text"].strip()
        assert row["id"] == info["id"] and row["source"] == "tldr"
    assert rows.report.counts() == {"identical responses": 1, "no Reddit post": 1, "bad choice": 1}
    assert len(messages) == 1 and "skipped 3 of 5" in messages[0]
    with pytest.raises(ValueError, match=r"tldr_comparisons\.jsonl: row 2: identical responses"):
        load_tldr(path=FIXTURES / "tldr_comparisons.jsonl", strict=True)


def test_load_tldr_hub_uses_comparisons_config_and_falls_back_to_parquet_export(monkeypatch):
    import datasets

    records = [json.loads(line) for line in (FIXTURES / "tldr_comparisons.jsonl").read_text().splitlines()]
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        if args[0] == "openai/summarize_from_feedback" and script_dataset:
            raise RuntimeError("Dataset scripts are no longer supported, but found summarize_from_feedback.py")
        return records

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    script_dataset = False
    rows, _ = quiet(load_tldr, split="validation")
    assert calls == [(("openai/summarize_from_feedback", "comparisons"), {"split": "validation"})] and len(rows) == 2
    script_dataset, calls[:] = True, []
    rows, _ = quiet(load_tldr, split="train")
    assert calls[1][0] == ("parquet",) and calls[1][1]["split"] == "train"
    assert calls[1][1]["data_files"]["train"].endswith("/comparisons/train/*.parquet") and len(rows) == 2


# ---------------------------------------------------------------- generic files
def test_load_preferences_paired_jsonl_validates_each_row():
    rows, messages = quiet(load_preferences, FIXTURES / "paired.jsonl")
    assert [row["id"] for row in rows] == ["p0", "p1"]
    assert rows[1]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert {bad.index: bad.reason for bad in rows.report.invalid} == {
        2: "identical responses", 3: "missing field", 4: "not a string", 5: "invalid message", 6: "empty response"}
    assert len(messages) == 1 and "skipped 5 of 7" in messages[0]


@pytest.mark.parametrize("row, pattern", [
    (3, r"row 0: missing field \(field 'rejected'\)"),
    (4, r"row 0: not a string \(field 'chosen' is list\)"),
    (6, r"row 0: empty response \(field 'rejected'\)"),
])
def test_load_preferences_strict_names_file_row_and_field(tmp_path, row, pattern):
    path = tmp_path / "bad.jsonl"
    path.write_text((FIXTURES / "paired.jsonl").read_text().splitlines()[row] + "\n")
    with pytest.raises(ValueError, match=rf"bad\.jsonl: {pattern}"):
        load_preferences(path, strict=True)


def test_load_preferences_unpaired_csv_parses_labels():
    rows, _ = quiet(load_preferences, FIXTURES / "unpaired.csv")
    assert [(row["id"], row["label"]) for row in rows] == [("u0", True), ("u1", False), ("u2", True)]
    assert {bad.index: bad.reason for bad in rows.report.invalid} == {3: "empty response", 4: "not a boolean"}
    with pytest.raises(ValueError, match=r"unpaired\.csv: row 3: empty response"):
        load_preferences(FIXTURES / "unpaired.csv", strict=True)


def test_load_preferences_reads_json_and_parquet_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    expected = [json.loads(line) for line in (FIXTURES / "paired.jsonl").read_text().splitlines()[:2]]
    (tmp_path / "rows.json").write_text(json.dumps(expected))
    table = pa.Table.from_pylist([{**row, "prompt": json.dumps(row["prompt"])} for row in expected])
    pq.write_table(table, tmp_path / "strings.parquet")
    messages = [{"prompt": [{"role": "user", "content": "Hello?"}], "chosen": "Hi.", "rejected": "Go away."}]
    pq.write_table(pa.Table.from_pylist(messages), tmp_path / "messages.parquet")
    assert load_preferences(tmp_path / "rows.json") == expected
    assert [row["id"] for row in load_preferences(tmp_path / "strings.parquet")] == ["p0", "p1"]
    assert load_preferences(tmp_path / "messages.parquet") == messages


def test_invalid_json_file_raises_naming_file_and_line():
    with pytest.raises(ValueError, match=r"not_json\.json: not valid JSON \(line 4"):
        load_preferences(FIXTURES / "not_json.json")


def test_broken_jsonl_line_is_counted_or_raised_with_its_line():
    rows, messages = quiet(load_preferences, FIXTURES / "broken_line.jsonl")
    assert len(rows) == 2 and rows.report.counts() == {"invalid JSON": 1}
    assert "line 2" in rows.report.invalid[0].detail and "invalid JSON" in messages[0]
    with pytest.raises(ValueError, match=r"broken_line\.jsonl: row 1: invalid JSON \(line 2"):
        load_preferences(FIXTURES / "broken_line.jsonl", strict=True)


def test_unknown_extension_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"notes\.txt: unsupported file extension '\.txt'"):
        load_preferences(FIXTURES / "notes.txt")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_preferences(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="neither an existing data file nor a hub dataset id"):
        load_preferences("not a path or id")


def test_format_detection_needs_exactly_one_schema(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(ValueError, match="cannot tell the format, no row has a 'prompt'"):
        load_preferences(path)
    path.write_text(json.dumps({"prompt": "q", "answer": "a"}) + "\n")
    with pytest.raises(ValueError, match="use neither of the paired keys"):
        load_preferences(path)
    with pytest.raises(ValueError, match=r"cannot tell the format.*use load_hh"):
        load_preferences(FIXTURES / "hh_small.jsonl")
    both = {"prompt": "p", "chosen": "a", "rejected": "b", "completion": "a", "label": True}
    path.write_text(json.dumps(both) + "\n")
    with pytest.raises(ValueError, match="both"):
        load_preferences(path)
    assert load_preferences(path, format="unpaired")[0]["label"] is True


def test_load_preferences_hub_id_calls_load_dataset(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or [
        {"prompt": "p", "completion": "c", "label": False}])
    rows = load_preferences("trl-lib/kto-mix-14k", split="test")
    assert calls == [(("trl-lib/kto-mix-14k", None), {"split": "test"})]
    assert rows == [{"prompt": "p", "completion": "c", "label": False}]


# ---------------------------------------------------------------- to_unpaired
def pairs(count: int) -> list[dict]:
    return [{"prompt": f"p{i}", "chosen": f"good{i}", "rejected": f"bad{i}", "prompt_embedding": [float(i), 1.0],
             "reference_chosen_logps": -float(i), "reference_rejected_logps": -10.0 - i} for i in range(count)]


def test_to_unpaired_keeps_every_response_with_label_and_extras():
    examples = to_unpaired(pairs(20), seed=3)
    desirable = sorted(e["completion"] for e in examples if e["label"] is True)
    undesirable = sorted(e["completion"] for e in examples if e["label"] is False)
    assert desirable == sorted(f"good{i}" for i in range(20)) and undesirable == sorted(f"bad{i}" for i in range(20))
    for example in examples:
        i = int(example["prompt"][1:])
        assert example["prompt_embedding"] == [float(i), 1.0]
        assert example["reference_logps"] == (-float(i) if example["label"] else -10.0 - i)
        assert "chosen" not in example and "reference_chosen_logps" not in example
    assert [e["label"] for e in examples] != sorted((e["label"] for e in examples), reverse=True)  # shuffled


def test_to_unpaired_subsamples_unequal_counts_deterministically():
    first = to_unpaired(pairs(40), seed=7, desirable_fraction=0.75, undesirable_fraction=0.25)
    assert sum(e["label"] for e in first) == 30 and sum(not e["label"] for e in first) == 10
    assert to_unpaired(pairs(40), seed=7, desirable_fraction=0.75, undesirable_fraction=0.25) == first
    assert to_unpaired(pairs(40), seed=8, desirable_fraction=0.75, undesirable_fraction=0.25) != first


def test_to_unpaired_rejects_bad_fractions_and_unpaired_rows():
    with pytest.raises(ValueError, match="desirable_fraction"):
        to_unpaired(pairs(2), desirable_fraction=1.5)
    with pytest.raises(ValueError, match="row 1 is not a pair"):
        to_unpaired([pairs(1)[0], {"prompt": "p", "completion": "c", "label": True}])


# ---------------------------------------------------------------- AlpacaEval prompts
@needs_alpaca
def test_load_alpaca_eval_prompts_real_file_has_805_instructions():
    prompts = load_alpaca_eval_prompts(ALPACA_FILE)
    expected = json.loads(ALPACA_FILE.read_text())
    assert len(prompts) == 805 and prompts == [{"instruction": r["instruction"], "dataset": r["dataset"]} for r in expected]


def test_load_alpaca_eval_prompts_hub_downloads_the_eval_json(monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(*args, **kwargs):
        calls.append((args, kwargs))
        return str(FIXTURES / "alpaca_small.json")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    prompts = load_alpaca_eval_prompts()
    assert calls == [(("tatsu-lab/alpaca_eval", "alpaca_eval.json"), {"repo_type": "dataset"})]
    assert [p["dataset"] for p in prompts] == ["helpful_base", "oasst", "vicuna"]


def test_load_alpaca_eval_prompts_never_drops_a_bad_row(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps([{"instruction": "ok", "dataset": "x"}, {"instruction": "", "dataset": "x"}]))
    with pytest.raises(ValueError, match=r"prompts\.json: row 1: field 'instruction'"):
        load_alpaca_eval_prompts(path)


def test_concatenate_merges_rows_and_reports():
    first, _ = quiet(load_hh, path=FIXTURES / "hh_small.jsonl")
    second, _ = quiet(load_preferences, FIXTURES / "paired.jsonl")
    both = data.concatenate([first, second])
    assert list(both) == list(first) + list(second)
    assert both.report.total == 17 and both.report.skipped == 11 and both.report.kept == 6
    assert "hh_small.jsonl:3" in both.report.summary()
