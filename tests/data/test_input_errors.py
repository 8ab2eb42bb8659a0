"""The reliability sweep's data defects (issue 13): big CSV cells, silent empties, duplicates."""
from __future__ import annotations

import csv
import json

import pytest

from rpo_tutorial.data import files
from rpo_tutorial.data.errors import DataError, data_error, locate
from rpo_tutorial.data.preferences import load_alpaca_eval_prompts, load_hh, load_preferences
from rpo_tutorial.data.report import LoadReport, drop_duplicates

HH_ROW = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello, friend.", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_messages_name_file_row_field_and_value():
    assert locate("a.jsonl", 3, "prompt") == "a.jsonl: row 3: field 'prompt'"
    error = data_error("a.jsonl", "not a string", 3, "chosen", 7)
    assert isinstance(error, ValueError)
    assert str(error) == "a.jsonl: row 3: field 'chosen': not a string (got 7)"


def test_csv_cell_over_128_kib_loads(tmp_path):
    path = tmp_path / "big.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "chosen", "rejected"])
        writer.writerow(["Why?", "x" * 200_000, "no"])
    rows = load_preferences(path)
    assert len(rows) == 1 and len(rows[0]["chosen"]) == 200_000
    assert csv.field_size_limit() == 131072  # the module's global limit is restored


def test_csv_cell_over_the_limit_names_file_and_row(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "CSV_FIELD_LIMIT", 1000)
    path = tmp_path / "big.csv"
    path.write_text("prompt,chosen,rejected\na,b,c\nWhy?," + "x" * 5000 + ",no\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"big\.csv: row 1: line 3: unreadable CSV"):
        load_preferences(path)


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_load_hh_and_alpaca_refuse_an_empty_file(tmp_path, content):
    for name, loader in (("hh.jsonl", lambda p: load_hh(path=p)), ("alpaca.jsonl", load_alpaca_eval_prompts)):
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        with pytest.raises(DataError, match=rf"{name}: holds no rows"):
            loader(path)


def test_alpaca_error_does_not_suggest_an_argument_it_lacks(tmp_path):
    path = tmp_path / "alpaca.jsonl"
    path.write_text('{"instruction": "Hi"}\n{broken\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"alpaca\.jsonl: row 1: invalid JSON") as caught:
        load_alpaca_eval_prompts(path)
    assert "strict=False" not in str(caught.value)


def test_duplicate_rows_are_counted_warned_and_can_be_dropped(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(4)]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows + [rows[1], rows[3], rows[1]])
    with pytest.warns(UserWarning, match=r"kept 3 rows that repeat an earlier row \(positions \[4, 5, 6\]\)"):
        loaded = load_preferences(path)
    assert len(loaded) == 7 and loaded.report.duplicates == [4, 5, 6]
    unique = drop_duplicates(loaded)
    assert [row["prompt"] for row in unique] == ["q0", "q1", "q2", "q3"]
    assert unique.report.duplicates == [] and unique.report.kept == 4


def test_hh_duplicates_are_counted_although_their_ids_differ(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [HH_ROW, HH_ROW])
    with pytest.warns(UserWarning, match="duplicate"):
        rows = load_hh(path=path)
    assert rows[0]["id"] != rows[1]["id"] and rows.report.duplicates == [1]


def test_directory_is_a_clear_error(tmp_path):
    folder = tmp_path / "data.jsonl"
    folder.mkdir()
    with pytest.raises(DataError, match=r"data\.jsonl: is a directory"):
        list(files.read_records(folder, LoadReport()))


def test_open_dataset_for_pairs_refuses_unpaired_rows_naming_the_first_and_the_count(tmp_path):
    from rpo_tutorial.data.preferences import open_dataset

    unpaired = write_jsonl(tmp_path / "unpaired.jsonl", [
        {"prompt": "Tea?", "completion": "Yes, please.", "label": True},
        {"prompt": "Rain?", "completion": "Sadly.", "label": False}])
    assert len(open_dataset(str(unpaired))) == 2  # without paired=True the rows are whatever the file holds
    with pytest.raises(ValueError, match=r"unpaired\.jsonl: row 0 has no chosen/rejected pair \(2 of 2 rows"):
        open_dataset(str(unpaired), paired=True)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"Hi {i}?", "chosen": "Hello.", "rejected": "Go."}
                                                   for i in range(2)])
    assert [row["prompt"] for row in open_dataset(str(pairs), paired=True)] == ["Hi 0?", "Hi 1?"]


def test_open_dataset_for_pairs_refuses_a_source_without_rows(monkeypatch):
    from rpo_tutorial.data import preferences

    monkeypatch.setattr(preferences, "load_preferences", lambda name, split, strict: [])  # an empty hub split
    assert preferences.open_dataset("someone/empty-prefs") == []
    with pytest.raises(ValueError, match="someone/empty-prefs: no valid pairs"):
        preferences.open_dataset("someone/empty-prefs", paired=True)
