"""Bad input, every loader and CLI command (issue 13): a clear error naming the file, or a count the user sees.

Each cell of the matrix (loader or command) x (case) has an expected outcome:

- "error": a ``ValueError`` / ``FileNotFoundError`` (for the CLI: exit status 1 or 2 and one
  ``error:`` line) whose message names the file, and the row where the problem is in one row;
- "counted": the load goes on, and a warning (for the CLI: a ``warning:`` line) or the load
  report gives the count of rows skipped, duplicated or one-sided.

Anything else ("other": a crash deep inside a library, a silent empty result, data dropped or
kept without a word) fails the test. ``test_matrix_has_no_other_outcome`` prints the counts.
"""
from __future__ import annotations

import gzip
import json
import warnings
from collections import Counter
from pathlib import Path

import pytest

from rpo_lab.cli import main
from rpo_tutorial.data import files
from rpo_tutorial.data.demo import load_demo
from rpo_tutorial.data.errors import MAX_FIELD_CHARS
from rpo_tutorial.data.files import read_records
from rpo_tutorial.data.preferences import load_alpaca_eval_prompts, load_hh, load_preferences, load_tldr
from rpo_tutorial.data.report import LoadReport, PreferenceData

CASES = ("missing", "directory", "empty", "wrong_format", "wrong_schema", "wrong_types", "non_utf8",
         "truncated_gz", "duplicates", "one_sided", "huge_field")
HUGE = "x" * (MAX_FIELD_CHARS + 1)


def _hh(i: int, response: str = "") -> dict:
    dialogue = f"\n\nHuman: Question {i}?\n\nAssistant:"
    return {"chosen": f"{dialogue} good {i} {response}", "rejected": f"{dialogue} bad {i}"}


def _tldr(i: int) -> dict:
    return {"info": {"id": str(i), "post": f"post {i}", "title": "title", "subreddit": "sub"},
            "summaries": [{"text": f"first {i}"}, {"text": f"second {i}"}], "choice": 0}


def _demo(i: int) -> dict:
    return {"id": f"c-{i:03d}", "cluster": "c", "prompt": f"Prompt {i}", "chosen": f"good {i}",
            "rejected": f"bad {i}", "chosen_score": 0.9, "rejected_score": 0.1}


# loader -> (good row, {case: the one bad row appended to three good ones}); cases not listed are file-level
LOADERS = {
    "load_preferences": (lambda i: {"prompt": f"Q{i}?", "chosen": f"good {i}", "rejected": f"bad {i}"}, {
        "wrong_schema": {"prompt": "Q?", "text": "no response keys"},
        "wrong_types": {"prompt": "Q?", "chosen": 3, "rejected": "bad"},
        "huge_field": {"prompt": "Q?", "chosen": HUGE, "rejected": "bad"},
    }),
    "load_hh": (_hh, {
        "wrong_schema": {"text": "\n\nHuman: hi\n\nAssistant: hello"},
        "wrong_types": {"chosen": 3, "rejected": "\n\nHuman: hi\n\nAssistant: hello"},
        "one_sided": {"chosen": "\n\nHuman: hi\n\nAssistant: hello"},
        "huge_field": _hh(9, HUGE),
    }),
    "load_tldr": (_tldr, {
        "wrong_schema": {"info": _tldr(9)["info"], "choice": 0},
        "wrong_types": {**_tldr(9), "choice": "first"},
        "one_sided": {**_tldr(9), "summaries": [{"text": "the only summary"}]},
        "huge_field": {**_tldr(9), "info": {**_tldr(9)["info"], "post": HUGE}},
    }),
    "load_demo": (_demo, {
        "wrong_schema": {k: v for k, v in _demo(9).items() if k != "cluster"},
        "wrong_types": {**_demo(9), "chosen": 3},
        "one_sided": {k: v for k, v in _demo(9).items() if k != "rejected"},
        "huge_field": {**_demo(9), "chosen": HUGE},
    }),
    "load_alpaca_eval_prompts": (lambda i: {"instruction": f"Do task {i}.", "dataset": "d"}, {
        "wrong_schema": {"prompt": "Do it."},
        "wrong_types": {"instruction": 3, "dataset": "d"},
        "one_sided": {"output": "an answer without its instruction", "dataset": "d"},
        "huge_field": {"instruction": HUGE, "dataset": "d"},
    }),
    "read_records": (lambda i: {"a": i}, {}),
}
CALLS = {
    "load_preferences": load_preferences,
    "load_hh": lambda path: load_hh(path=path),
    "load_tldr": lambda path: load_tldr(path=path),
    "load_demo": lambda path: load_demo(path=path),
    "load_alpaca_eval_prompts": load_alpaca_eval_prompts,
}
FILE_LEVEL = {"missing": "error", "directory": "error", "empty": "error", "wrong_format": "error",
              "non_utf8": "error", "truncated_gz": "error"}
LENIENT = {"wrong_schema": "counted", "wrong_types": "counted", "duplicates": "counted", "one_sided": "counted",
           "huge_field": "counted"}
STRICT = {"wrong_schema": "error", "wrong_types": "error", "duplicates": "counted", "one_sided": "error",
          "huge_field": "error"}
EXPECTED = {
    "load_preferences": {**FILE_LEVEL, **LENIENT},
    "load_hh": {**FILE_LEVEL, **LENIENT},
    "load_tldr": {**FILE_LEVEL, **LENIENT},
    "load_demo": {**FILE_LEVEL, **STRICT, "duplicates": "error"},
    "load_alpaca_eval_prompts": {**FILE_LEVEL, **STRICT},
    # the low-level reader: rows that are not JSON objects are its schema; a CSV cell over its limit is an error
    "read_records": {**FILE_LEVEL, "wrong_format": "counted", "wrong_schema": "counted", "wrong_types": "counted",
                     "duplicates": "counted", "one_sided": "counted", "huge_field": "error"},
}


def _read_all(path) -> PreferenceData:
    report = LoadReport()
    return PreferenceData([record for _, record in read_records(path, report)], report)


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def make_case(loader: str, case: str, folder: Path, monkeypatch) -> Path:
    """The input file of one matrix cell."""
    good, bad_rows = LOADERS[loader]
    rows = [good(i) for i in range(3)]
    path = folder / "data.jsonl"
    if case == "missing":
        return folder / "absent.jsonl"
    if case == "directory":
        path.mkdir()
        return path
    if case == "empty":
        path.write_text("")
        return path
    if case == "wrong_format":  # CSV text in a file named .jsonl
        path.write_text("prompt,chosen,rejected\nQ?,good,bad\n")
        return path
    if case == "non_utf8":
        path.write_bytes(json.dumps(rows[0]).encode() + b"\n" + b'{"prompt": "caf\xe9"}\n')
        return path
    if case == "truncated_gz":
        gz = folder / "data.jsonl.gz"
        data = gzip.compress("".join(json.dumps(good(i)) + "\n" for i in range(200)).encode())
        gz.write_bytes(data[: len(data) // 2])
        return gz
    if case == "duplicates":
        return write_lines(path, rows + [rows[1]])
    if loader == "read_records":
        return _read_records_case(case, folder, monkeypatch, rows)
    if loader == "load_preferences" and case == "one_sided":  # unpaired rows, all desirable
        return write_lines(path, [{"prompt": f"Q{i}?", "completion": f"good {i}", "label": True} for i in range(3)])
    return write_lines(path, rows + [bad_rows[case]])


def _read_records_case(case: str, folder: Path, monkeypatch, rows: list) -> Path:
    path = folder / "data.jsonl"
    if case == "wrong_schema":
        return write_lines(path, rows + [[1, 2]])  # a list where a record (object) belongs
    if case == "wrong_types":
        return write_lines(path, rows + ["a string"])
    if case == "one_sided":  # half a record: a line cut short
        path.write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"a": \n')
        return path
    monkeypatch.setattr(files, "CSV_FIELD_LIMIT", 1000)  # huge_field: a CSV cell over the reader's limit
    csv_path = folder / "data.csv"
    csv_path.write_text("a,b\n1,2\n3," + "x" * 5000 + "\n")
    return csv_path


def outcome(call, path: Path) -> tuple[str, str]:
    """("error" | "counted" | "other", message) of one call."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = call(path)
        except (ValueError, FileNotFoundError) as error:
            return "error", str(error)
    messages = [str(warning.message) for warning in caught]
    report = getattr(result, "report", None)
    if messages or (report is not None and (report.skipped or report.duplicates)):
        return "counted", " | ".join(messages) or f"report: {report.counts()}, duplicates {report.duplicates}"
    return "other", f"{len(result)} rows, no warning"


CELLS = [(loader, case) for loader in LOADERS for case in CASES]
RESULTS: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("loader, case", CELLS, ids=[f"{loader}-{case}" for loader, case in CELLS])
def test_loader_cell(loader, case, tmp_path, monkeypatch):
    path = make_case(loader, case, tmp_path, monkeypatch)
    call = _read_all if loader == "read_records" else CALLS[loader]
    kind, message = outcome(call, path)
    RESULTS[(loader, case)] = kind
    assert kind == EXPECTED[loader][case], message
    assert path.name in message or str(path) in message or kind == "counted", message  # errors name the file
    if kind == "error" and case in LENIENT and case != "duplicates":
        assert "row" in message, message  # a problem in one row names the row
    if kind == "counted":
        assert any(char.isdigit() for char in message), message  # a count the user sees


# ---- the CLI -------------------------------------------------------------------------------------
class StopAfterInputs(BaseException):
    """Raised where the command would start the expensive part: the inputs were accepted."""


def _stop(*args, **kwargs):
    raise StopAfterInputs


def cli_outcome(argv: list[str], capsys, monkeypatch) -> tuple[str, str]:
    import rpo_tutorial.evaluation.judges as judges
    import rpo_tutorial.training.run as run

    monkeypatch.setattr(run, "RPOTrainer", _stop)
    monkeypatch.setattr(judges, "RewardJudge", _stop)
    message = ""
    try:
        code = main(argv)
    except StopAfterInputs:
        err = capsys.readouterr().err
        warned = [line for line in err.splitlines() if line.startswith("warning:")]
        return ("counted" if warned and any(c.isdigit() for c in " ".join(warned)) else "other"), err
    except SystemExit as stop:  # SystemExit("message"): the interpreter prints the message and exits with 1
        code, message = (1, str(stop.code)) if isinstance(stop.code, str) else (stop.code, "")
    err = capsys.readouterr().err + message
    if message and code == 1 and "\n" not in message.strip():
        return "error", message
    errors = [line for line in err.splitlines() if line.startswith("rpo-tutorial ")]
    if code in (1, 2) and len(errors) == 1 and "Traceback" not in err:
        return "error", errors[0]
    return "other", f"exit {code}: {err}"


COMMANDS = ("train", "sft", "judge")
CLI_EXPECTED = {
    "train": {**FILE_LEVEL, **LENIENT, "one_sided": "error"},  # warned at load, refused before training
    "sft": {**FILE_LEVEL, **LENIENT, "one_sided": "error"},  # unpaired rows have no chosen response for SFT
    "judge": {**FILE_LEVEL, "wrong_schema": "error", "wrong_types": "error", "duplicates": "counted",
              "one_sided": "counted", "huge_field": "error"},  # one-sided: a candidate without a baseline
}


def _judge_case(case: str, folder: Path, monkeypatch) -> tuple[Path, Path]:
    baselines = write_lines(folder / "baselines.jsonl", [{"prompt": f"Q{i}?", "response": f"b{i}"} for i in range(3)])
    good = lambda i: {"prompt": f"Q{i}?", "response": f"c{i}"}  # noqa: E731
    bad = {"wrong_schema": {"prompt": "Q0?", "answer": "no response key"},
           "wrong_types": {"prompt": "Q0?", "response": 3},
           "one_sided": {"prompt": "a prompt with no baseline", "response": "c"},
           "huge_field": {"prompt": "Q0?", "response": HUGE}}
    folder = folder / "candidates"
    folder.mkdir()
    if case in bad:
        return write_lines(folder / "data.jsonl", [good(i) for i in range(3)] + [bad[case]]), baselines
    LOADERS["_judge"] = (good, {})
    try:
        return make_case("_judge", case, folder, monkeypatch), baselines
    finally:
        del LOADERS["_judge"]


CLI_CELLS = [(command, case) for command in COMMANDS for case in CASES]


@pytest.mark.parametrize("command, case", CLI_CELLS, ids=[f"{command}-{case}" for command, case in CLI_CELLS])
def test_cli_cell(command, case, tmp_path, capsys, monkeypatch):
    if command == "judge":
        candidates, baselines = _judge_case(case, tmp_path, monkeypatch)
        argv = ["judge", "--judge", "reward", "--candidates", str(candidates), "--baselines", str(baselines),
                "--output", str(tmp_path / "records.jsonl")]
        path = candidates
    else:
        path = make_case("load_preferences", case, tmp_path, monkeypatch)
        argv = [command, "--preset", "smoke", "--dataset", str(path), "--output-dir", str(tmp_path / "run"),
                "--weighting", "uniform"] + (["--no-paired"] if case == "one_sided" and command == "train" else [])
    kind, message = cli_outcome(argv, capsys, monkeypatch)
    RESULTS[(command, case)] = kind
    assert kind == CLI_EXPECTED[command][case], message
    if kind == "error" and case != "one_sided":
        assert path.name in message, message


EVALUATE_EXPECTED = {**FILE_LEVEL, **LENIENT, "one_sided": "error"}  # evaluate needs pairs: unpaired rows are refused
EVALUATE_CELLS = [("evaluate", case) for case in CASES]


@pytest.mark.parametrize("command, case", EVALUATE_CELLS, ids=[f"evaluate-{case}" for _, case in EVALUATE_CELLS])
def test_evaluate_cell(command, case, tmp_path, capsys, monkeypatch):
    import rpo_tutorial.models.loading as loading

    monkeypatch.setattr(loading, "load_tokenizer", _stop)  # evaluate loads its models after the data
    path = make_case("load_preferences", case, tmp_path, monkeypatch)
    argv = ["evaluate", "--model", str(tmp_path / "model"), "--reference", str(tmp_path / "sft"), "--dataset",
            str(path)]
    kind, message = cli_outcome(argv, capsys, monkeypatch)
    RESULTS[(command, case)] = kind
    assert kind == EVALUATE_EXPECTED[case], message
    if kind == "error" and case != "one_sided":
        assert path.name in message, message


# ``study --report-only``: its inputs are its flags and the cached run files of --output-dir
# (runs/tuning/seed<k>/<method>/lr<rate>.json, runs/evaluation/...), read back (also before training).
STUDY_CASES = ("missing", "directory", "empty", "wrong_format", "wrong_schema", "wrong_types", "non_utf8",
               "bad_flag_value", "bad_setting_value")
STUDY_EXPECTED = {
    "missing": "error", "directory": "error",  # an absent run (or a folder in its place): named, train it first
    "empty": "error", "wrong_format": "error", "wrong_schema": "error", "wrong_types": "error", "non_utf8": "error",
    "bad_flag_value": "error", "bad_setting_value": "error",
}

def _study_case(case: str, folder: Path) -> tuple[list[str], Path]:
    """The extra flags and the run file of one study cell."""
    run = folder / "study" / "runs" / "tuning" / "seed1000" / "dpo" / "lr0.001.json"  # the smoke preset's first run
    if case == "bad_flag_value":
        return ["--seeds", "zero"], run
    if case == "bad_setting_value":
        return ["--steps", "0"], run
    if case != "missing":
        run.parent.mkdir(parents=True)
    contents = {"empty": b"", "wrong_format": b"method,accuracy\ndpo,0.5\n",
                "wrong_schema": json.dumps({"method": "dpo"}).encode(), "wrong_types": b"[1, 2]",
                "non_utf8": b'{"method": "caf\xe9"}'}
    if case == "directory":
        run.mkdir()
    elif case in contents:
        run.write_bytes(contents[case])
    return [], run


STUDY_CELLS = [("study", case) for case in STUDY_CASES]


@pytest.mark.parametrize("command, case", STUDY_CELLS, ids=[f"study-{case}" for case in STUDY_CASES])
def test_study_cell(command, case, tmp_path, capsys, monkeypatch):
    flags, run = _study_case(case, tmp_path)
    argv = ["study", "--preset", "smoke", "--output-dir", str(tmp_path / "study"), "--report-only", *flags]
    kind, message = cli_outcome(argv, capsys, monkeypatch)
    RESULTS[(command, case)] = kind
    assert kind == STUDY_EXPECTED[case], message
    if kind == "error" and case not in ("bad_flag_value", "bad_setting_value"):
        assert run.name in message, message
    if kind == "error" and case == "bad_flag_value":
        assert "--seeds" in message and "zero" in message, message


# ``study --dataset FILE``: the loaders' errors and counts, then a split by prompt; the cell stops where the model
# would load. Row-level cases get 40 good pairs around the bad row, so the split has every part.
STUDY_DATASET_CASES = CASES + ("small_heldout",)
STUDY_DATASET_EXPECTED = {**FILE_LEVEL, **LENIENT, "one_sided": "error",  # the study compares paired rows
                          "small_heldout": "counted"}  # 20 held-out pairs: a warning with the power
STUDY_DATASET_CELLS = [("study-dataset", case) for case in STUDY_DATASET_CASES]


def _study_dataset_case(case: str, folder: Path, monkeypatch) -> Path:
    good = [LOADERS["load_preferences"][0](i) for i in range(40)]
    if case == "small_heldout":
        return write_lines(folder / "pairs.jsonl", good)
    if case == "duplicates":
        return write_lines(folder / "data.jsonl", good + [good[1]])
    if case in LOADERS["load_preferences"][1]:
        return write_lines(folder / "data.jsonl", good + [LOADERS["load_preferences"][1][case]])
    return make_case("load_preferences", case, folder, monkeypatch)


@pytest.mark.parametrize("command, case", STUDY_DATASET_CELLS, ids=[f"study-dataset-{c}" for _, c in STUDY_DATASET_CELLS])
def test_study_dataset_cell(command, case, tmp_path, capsys, monkeypatch):
    import rpo_lab.study.runner as runner

    monkeypatch.setattr(runner, "load_model", _stop)  # the study loads its model after reading and splitting the data
    path = _study_dataset_case(case, tmp_path, monkeypatch)
    argv = ["study", "--dataset", str(path), "--output-dir", str(tmp_path / "study"), "--model", "tiny-random:llama"]
    kind, message = cli_outcome(argv, capsys, monkeypatch)
    RESULTS[(command, case)] = kind
    assert kind == STUDY_DATASET_EXPECTED[case], message
    if kind == "error":
        assert path.name in message, message
    if case == "small_heldout":
        assert "20 held-out pairs" in message and "points" in message, message


def test_matrix_has_no_other_outcome():
    """Runs after the cells (same module): every cell ran, none ended as "other"; prints the counts."""
    expected = {**{cell: EXPECTED[cell[0]][cell[1]] for cell in CELLS},
                **{cell: CLI_EXPECTED[cell[0]][cell[1]] for cell in CLI_CELLS},
                **{cell: EVALUATE_EXPECTED[cell[1]] for cell in EVALUATE_CELLS},
                **{cell: STUDY_EXPECTED[cell[1]] for cell in STUDY_CELLS},
                **{cell: STUDY_DATASET_EXPECTED[cell[1]] for cell in STUDY_DATASET_CELLS}}
    if not set(expected) <= set(RESULTS):
        pytest.skip("run the whole module to tally the matrix")
    tallied = {cell: RESULTS[cell] for cell in expected}
    counts = Counter(tallied.values())
    print(f"\nbad-input matrix: {len(tallied)} cells, {dict(counts)}")
    assert counts["other"] == 0 and tallied == expected
