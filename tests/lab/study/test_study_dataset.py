"""``rpo-tutorial study --dataset FILE``: a preference file the project has never seen, end to end in seconds."""
from __future__ import annotations

import json
import random
import re
import shlex
from pathlib import Path

import pytest
import torch

from rpo_lab.cli import build_parser, main
from rpo_lab.study import runner

WORDS = ("apple", "river", "quiet", "lantern", "copper", "meadow", "silver", "thunder", "velvet", "harbor", "maple",
         "orbit", "pebble", "saffron", "tundra", "willow")
README = Path(__file__).resolve().parents[3] / "README.md"


def _phrase(generator: random.Random, length: int) -> str:
    return " ".join(generator.choice(WORDS) for _ in range(length))


def write_pairs(path: Path, count: int, seed: int) -> Path:
    generator = random.Random(seed)
    rows = [{"prompt": f"{seed}-{i}: {_phrase(generator, 5)}?", "chosen": _phrase(generator, 6),
             "rejected": _phrase(generator, 6)} for i in range(count)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def fake_embed(texts):
    return torch.randn(len(texts), 8, generator=torch.Generator().manual_seed(len(texts)))


FAST = ["--model", "tiny-random:llama", "--steps", "2", "--batch-size", "4", "--learning-rates", "1e-3,3e-3",
        "--max-length", "40", "--max-prompt-length", "24", "--validation-pairs", "4"]


def test_study_on_a_new_jsonl_writes_the_report_and_resumes_from_its_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "_bundled_embed", fake_embed)
    dataset, heldout = write_pairs(tmp_path / "my.jsonl", 40, 1), write_pairs(tmp_path / "my_heldout.jsonl", 20, 2)
    output, report = tmp_path / "out", tmp_path / "report"
    argv = ["study", "--dataset", str(dataset), "--heldout", str(heldout), "--methods", "dpo,rpo-emb-matched",
            "--seeds", "0,1", "--output-dir", str(output), "--report-dir", str(report), *FAST]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert re.search(r"warning: 20 held-out pairs are too few .* \d+\.\d points", err), err  # the power, up front
    study = json.loads((report / "study.json").read_text())
    assert study["source"]["kept"] == {"train": 36, "validation": 4, "heldout": 20}
    assert {c["method"] for c in study["analysis"]["comparisons"]} == {"rpo-emb"}
    assert study["analysis"]["design"] == "crossed" and study["analysis"]["cells"][0]["seeds"] == [0, 1]
    text = (report / "study.md").read_text()
    assert text.index("## Power") < text.index("## Every method against DPO")  # the power line first
    assert "Design power, from the validation runs alone" in text and "rpo-emb vs dpo" in text
    for name in ("study_accuracy.png", "study_learning_curves.png", "study_learning_rates.png", "timing.json"):
        assert (report / name).is_file(), name

    trained = []
    monkeypatch.setattr(runner, "train_run", lambda *args, **kwargs: trained.append(args) or {})
    assert main(argv) == 0  # everything from the cache: nothing trains, the report is the same bytes
    assert trained == [] and json.loads((report / "study.json").read_text()) == study
    assert main(argv + ["--report-only"]) == 0
    assert json.loads((output / "study.json").read_text()) == study

    assert main([*argv[:-1], "3"]) == 1  # --validation-pairs 3: a cache made with other settings is refused
    assert "other settings" in capsys.readouterr().err


def test_study_splits_a_single_file_by_prompt(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_bundled_embed", fake_embed)
    dataset = write_pairs(tmp_path / "pairs.jsonl", 40, 3)
    argv = ["study", "--dataset", str(dataset), "--methods", "dpo,rpo-placebo", "--seeds", "5",
            "--output-dir", str(tmp_path / "out"), *FAST]
    assert main(argv) == 0
    study = json.loads((tmp_path / "out" / "study.json").read_text())
    assert study["source"]["kept"] == {"train": 16, "validation": 4, "heldout": 20}  # half held out, 4 validation
    runs = sorted(path.relative_to(tmp_path / "out").as_posix() for path in (tmp_path / "out" / "runs").rglob("*.json"))
    assert runs == ["runs/evaluation/seed5/dpo.json", "runs/evaluation/seed5/rpo-placebo.json",
                    "runs/tuning/seed1000/dpo/lr0.001.json", "runs/tuning/seed1000/dpo/lr0.003.json",
                    "runs/tuning/seed1000/rpo-placebo/lr0.001.json", "runs/tuning/seed1000/rpo-placebo/lr0.003.json"]


def test_an_unknown_method_is_a_usage_error(tmp_path, capsys):
    dataset = write_pairs(tmp_path / "pairs.jsonl", 40, 4)
    assert main(["study", "--dataset", str(dataset), "--methods", "dpo,nope", "--output-dir", str(tmp_path)]) == 2
    assert "rpo-tutorial study: error: --methods: unknown method(s) ['nope']" in capsys.readouterr().err


def test_the_readme_example_parses():
    from rpo_lab.study.cli import settings_from_args

    commands = [line.strip() for line in README.read_text().splitlines()
                if line.strip().startswith("rpo-tutorial study --dataset")]
    assert commands, "README has no `rpo-tutorial study --dataset` example"
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        settings = settings_from_args(args)
        assert settings.dataset and settings.methods[0] == "dpo" and "rpo-emb" in settings.methods


@pytest.mark.slow  # spawns two worker processes
def test_two_workers_give_the_numbers_of_one(tmp_path, monkeypatch):
    from rpo_lab.study.report import build_report
    from rpo_lab.study.settings import StudySettings

    monkeypatch.setattr(runner, "_bundled_embed", fake_embed)
    settings = StudySettings(model="tiny-random:llama", dataset=str(write_pairs(tmp_path / "pairs.jsonl", 40, 5)),
                             methods=("dpo", "rpo-emb", "rpo-uniform"), seeds=(0, 1), learning_rates=(1e-3, 3e-3),
                             steps=2, batch_size=4, max_length=40, max_prompt_length=24, validation_pairs=4,
                             bootstrap_samples=200)
    one = runner.run_study(tmp_path / "one", settings, progress=False)
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "features.pt").write_bytes((tmp_path / "one" / "features.pt").read_bytes())
    two = runner.run_study(tmp_path / "two", settings, progress=False, workers=2)
    assert build_report(one, settings, "c") == build_report(two, settings, "c")


def test_the_default_data_is_named_in_the_report_without_this_machines_path(tmp_path, monkeypatch):
    import gzip

    from rpo_lab.study.data import study_rows
    from rpo_lab.study.settings import StudySettings

    folder = tmp_path / "hh-rlhf"
    folder.mkdir()
    transcripts = [{"chosen": f"\n\nHuman: Question {i}?\n\nAssistant: A kind answer {i}.",
                    "rejected": f"\n\nHuman: Question {i}?\n\nAssistant: Go away {i}."} for i in range(12)]
    with gzip.open(folder / "harmless-base-test.jsonl.gz", "wt") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in transcripts))
    monkeypatch.setenv("RPO_SHARED_DATA", str(tmp_path))
    parts, source = study_rows(StudySettings())
    assert source["pairs_read"] == 12 and sum(source["sizes"].values()) == 12
    assert "harmless-base" in source["dataset"] and str(tmp_path) not in source["dataset"]
    monkeypatch.setenv("RPO_SHARED_DATA", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match=r"pass --dataset FILE .*RPO_SHARED_DATA"):
        study_rows(StudySettings())
