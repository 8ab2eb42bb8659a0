"""OpenAI TL;DR human comparisons (Stiennon et al. 2020) -> {prompt, chosen, rejected}.

Hub schema (``openai/summarize_from_feedback``, config ``comparisons``), one row per comparison:
``info`` {id, post, title, subreddit, ...}, ``summaries`` [{text, policy, note}, {text, ...}],
``choice`` (0 or 1: the index of the summary the labeller preferred).

The prompt is a plain string (the layout of the paper's TL;DR experiments and of the
reference TL;DR fine-tuning setups):

    SUBREDDIT: r/{subreddit}
    TITLE: {title}
    POST: {post}
    TL;DR:

``chosen`` is ``summaries[choice].text`` and ``rejected`` the other, both stripped of surrounding
whitespace. A few validation rows are news articles (``info.post`` is null, ``info.article`` is
set); they are not Reddit TL;DR posts and are skipped with the reason "no Reddit post".
"""
from __future__ import annotations

from pathlib import Path

from rpo_tutorial.data.errors import RowError, check_field_length
from rpo_tutorial.data.files import read_records
from rpo_tutorial.data.report import InvalidRow, LoadReport, PreferenceData, finish

TLDR_HUB_ID = "openai/summarize_from_feedback"
TLDR_CONFIG = "comparisons"
# The hub dataset is defined by a loading script, which datasets >= 4 refuses to run; its
# automatic Parquet export has the same schema.
TLDR_PARQUET_EXPORT = "hf://datasets/openai/summarize_from_feedback@refs%2Fconvert%2Fparquet/comparisons/{split}/*.parquet"
TLDR_TEMPLATE = "SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:"


def _text(container: dict, key: str, where: str) -> str:
    value = container.get(key) if isinstance(container, dict) else None
    if value is None:
        raise RowError("missing field", f"field {where}.{key!r}")
    if not isinstance(value, str):
        raise RowError("not a string", f"field {where}.{key!r} is {type(value).__name__}")
    check_field_length(value, f"{where}.{key}")
    return value.strip()


def tldr_prompt(info: dict) -> str:
    """The prompt string for one post (see the module docstring for the template)."""
    if not isinstance(info, dict):
        raise RowError("missing field", "field 'info'")
    if info.get("post") is None and info.get("article") is not None:
        raise RowError("no Reddit post", "a news article row")
    fields = {key: _text(info, key, "info") for key in ("subreddit", "title", "post")}
    if not fields["post"]:
        raise RowError("empty prompt", "field info.'post'")
    return TLDR_TEMPLATE.format(**fields)


def parse_tldr_comparison(record: dict) -> dict:
    """One comparison row -> ``{"prompt", "chosen", "rejected", "id"}``; raises RowError."""
    prompt = tldr_prompt(record.get("info"))
    summaries, choice = record.get("summaries"), record.get("choice")
    if not isinstance(summaries, list) or len(summaries) != 2:
        raise RowError("missing field", "field 'summaries' must be a list of two summaries")
    if isinstance(choice, bool) or choice not in (0, 1):
        raise RowError("bad choice", f"field 'choice' must be 0 or 1, got {choice!r}")
    texts = [_text(summary, "text", f"summaries[{i}]") for i, summary in enumerate(summaries)]
    for i, text in enumerate(texts):
        if not text:
            raise RowError("empty response", f"field summaries[{i}].'text'")
    if texts[0] == texts[1]:
        raise RowError("identical responses")
    return {"prompt": prompt, "chosen": texts[choice], "rejected": texts[1 - choice], "id": str(record["info"].get("id"))}


def _hub_rows(split: str):
    import datasets

    try:
        return datasets.load_dataset(TLDR_HUB_ID, TLDR_CONFIG, split=split)
    except RuntimeError as error:
        if "scripts are no longer supported" not in str(error):
            raise
        return datasets.load_dataset("parquet", data_files={split: TLDR_PARQUET_EXPORT.format(split=split)}, split=split)


def load_tldr(split: str = "train", path: str | Path | None = None, strict: bool = False) -> PreferenceData:
    """Load the TL;DR comparisons as paired rows with a plain-string prompt.

    Args:
        split: "train" or "validation" (hub only).
        path: a local ``.json``/``.jsonl``(``.gz``)/``.parquet`` file of the hub schema, instead of the hub.
        strict: raise ``ValueError`` naming the first invalid row instead of skipping it.

    Returns:
        :class:`PreferenceData` of ``{"prompt": str, "chosen", "rejected", "source": "tldr", "id"}``.
    """
    report = LoadReport()
    if path is not None:
        source = str(path)
        records = read_records(path, report, strict)
    else:
        dataset = _hub_rows(split)
        source = f"{TLDR_HUB_ID}/{TLDR_CONFIG}[{split}]"
        report.sources.append(source)
        report.total = len(dataset)
        records = enumerate(dataset)
    rows = []
    for index, record in records:
        try:
            row = parse_tldr_comparison(record)
        except RowError as error:
            report.reject(InvalidRow(source, index, error.reason, error.detail), strict)
            continue
        rows.append({**row, "source": "tldr"})
    return finish(rows, report, "load_tldr")
