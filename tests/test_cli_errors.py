"""The CLI ends every error as one line with exit status 2 (usage) or 1 (data), unless --debug (issue 13)."""
from __future__ import annotations

import json

import pytest

from rpo_lab.cli import main
from rpo_tutorial.data.errors import DataError
from rpo_lab import memory_hint
from rpo_tutorial.training.config import get_preset
from rpo_lab.estimates import GB


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_missing_data_file_is_one_line_and_status_1(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--preset", "smoke", "--dataset", str(tmp_path / "gone.jsonl"),
                           "--output-dir", str(tmp_path / "run"))
    assert code == 1
    assert err.strip().splitlines() == [f"rpo-tutorial train: error: {tmp_path / 'gone.jsonl'}: no such file "
                                        "(expected a jsonl file)"]


def test_file_without_prompt_says_so_instead_of_hh_warnings(tmp_path, capsys):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "Why?", "answer": "Because."}) + "\n")
    code, _, err = run_cli(capsys, "sft", "--preset", "smoke", "--dataset", str(path),
                           "--output-dir", str(tmp_path / "run"))
    assert code == 1
    assert "no row has a 'prompt'" in err and "missing field" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_invalid_configuration_and_reused_folder_are_usage_errors(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--preset", "smoke", "--beta", "-1", "--output-dir", str(tmp_path))
    assert code == 2 and err.startswith("rpo-tutorial train: error: invalid configuration: beta")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")
    code, _, err = run_cli(capsys, "train", "--preset", "smoke", "--output-dir", str(tmp_path / "run"))
    assert code == 2 and "already holds" in err and "--overwrite" in err


def test_argparse_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["train", "--no-such-flag"])
    assert caught.value.code == 2


def test_debug_shows_the_exception_itself(tmp_path, capsys):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "Why?"}) + "\n")
    for argv in (["--debug", "train"], ["train", "--debug"]):
        with pytest.raises(DataError, match="no row has a 'prompt'"):
            main([*argv, "--preset", "smoke", "--dataset", str(path), "--output-dir", str(tmp_path / "run")])


def test_judge_data_errors_name_file_row_and_field(tmp_path, capsys):
    candidates, baselines = tmp_path / "c.jsonl", tmp_path / "b.jsonl"
    candidates.write_text(json.dumps({"prompt": "p", "response": 3}) + "\n")
    baselines.write_text(json.dumps({"prompt": "p", "response": "fine"}) + "\n")
    code, _, err = run_cli(capsys, "judge", "--judge", "reward", "--candidates", str(candidates), "--baselines",
                           str(baselines), "--output", str(tmp_path / "out.jsonl"))
    assert code == 1 and f"{candidates}: row 0: field 'response': must be a string, not int" in err


# ---- item 11: the memory estimate ---------------------------------------------------------------
def test_memory_line_suggests_gradient_checkpointing_when_it_will_not_fit():
    config = get_preset("demo", loss="dpo", per_device_train_batch_size=8, max_length=256)
    shape = memory_hint.DecoderShape(hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
                                     num_kv_heads=3, vocab_size=49152, tie_embeddings=True)  # SmolLM2-135M
    needed = memory_hint.estimate_bytes(shape, config)
    lower = memory_hint.estimate_bytes(shape, config.replace(gradient_checkpointing=True))
    assert lower < needed
    tight = memory_hint.memory_line(config, available=(needed + lower) / 2, shape=shape)
    assert "--gradient-checkpointing" in tight and f"~{lower / GB:.1f} GB" in tight
    assert "may not fit" not in memory_hint.memory_line(config, available=2 * needed, shape=shape)
    checkpointed = memory_hint.memory_line(config.replace(gradient_checkpointing=True), available=lower / 2,
                                           shape=shape)
    assert "--gradient-checkpointing" not in checkpointed and "--per-device-train-batch-size" in checkpointed


def test_cli_prints_the_memory_estimate_before_anything_else(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "train", "--preset", "smoke", "--dataset", str(tmp_path / "gone.jsonl"),
                           "--output-dir", str(tmp_path / "run"))
    assert code == 1 and out.startswith("memory estimate: ~")


def test_skipped_rows_name_the_cli_flag_and_strict_stops_at_the_first_one(tmp_path, capsys):
    from rpo_tutorial.data.preferences import load_preferences

    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Day {i}?", "chosen": "Sunny.", "rejected": "Rainy."} for i in range(3)]
    rows.insert(1, {"prompt": "Day?", "chosen": "", "rejected": "Rainy."})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.warns(UserWarning, match="--strict"):
        assert len(load_preferences(path)) == 3
    for command in (["train", "--preset", "smoke", "--output-dir", str(tmp_path / "run")],
                    ["sft", "--preset", "smoke", "--output-dir", str(tmp_path / "run")]):
        code, _, err = run_cli(capsys, *command, "--dataset", str(path), "--strict")
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert "row 1" in err and "pairs.jsonl" in err and "leave out --strict" in err, err
    with pytest.raises(SystemExit, match="row 1"):
        main(["evaluate", "--model", "unused", "--reference", "unused", "--dataset", str(path), "--strict"])
