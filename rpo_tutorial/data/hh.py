"""Anthropic HH-RLHF: transcripts -> {prompt (message list), chosen, rejected}.

Each hub row holds two full transcripts, ``chosen`` and ``rejected``, that normally differ only
after the last ``"\\n\\nAssistant:"``:

    "\\n\\nHuman: q1\\n\\nAssistant: a1\\n\\nHuman: q2\\n\\nAssistant: <response>"

The prompt is everything up to and including that last ``"\\n\\nAssistant:"``, kept as a message
list (multi-turn history, as in the paper's data): ``[{"role": "user", "content": "q1"},
{"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]``; the responses are
the remainders, stripped of surrounding whitespace (the leading space after the colon).
Message contents are stripped the same way. Two consecutive turns of the same speaker (a few
transcripts have them) are merged into one message, joined by a blank line, so every chat
template (some require alternating roles) accepts the prompt.

A row is invalid when a transcript has no Assistant turn, the two transcripts do not share the
prompt, a response is empty, the two responses are identical, or the prompt does not start
with a Human turn and end with one. The real ``harmless-base`` test file has 2,312 rows of
which 9 are invalid (5 prompts differ, 4 empty responses).
"""
from __future__ import annotations

import re
from pathlib import Path

from rpo_tutorial.data.errors import RowError, check_field_length
from rpo_tutorial.data.files import read_records
from rpo_tutorial.data.report import InvalidRow, LoadReport, PreferenceData, finish

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
HH_HUB_ID = "Anthropic/hh-rlhf"
HH_SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def split_transcript(transcript: str) -> tuple[str, str]:
    """Split at the last ``"\\n\\nAssistant:"``: (prompt text including it, raw response)."""
    cut = transcript.rfind(ASSISTANT)
    if cut < 0:
        raise RowError("no Assistant turn")
    cut += len(ASSISTANT)
    return transcript[:cut], transcript[cut:]


def dialogue_messages(prompt_text: str) -> list[dict[str, str]]:
    """Parse ``"\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nAssistant:"`` into chat messages.

    The final, empty ``Assistant:`` (where the response goes) is not a message. Consecutive
    turns of one speaker are merged. Raises :class:`RowError` when the dialogue does not
    start with a Human turn or its last message is not the user's.
    """
    pieces = _TURN.split(prompt_text)  # [before, role, text, role, text, ...]
    if pieces[0].strip():
        raise RowError("no leading Human turn", f"starts with {pieces[0][:40]!r}")
    turns = list(zip(pieces[1::2], pieces[2::2]))[:-1]  # drop the final, empty Assistant turn
    messages: list[dict[str, str]] = []
    for speaker, text in turns:
        role, content = _ROLES[speaker], text.strip()
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] = f"{messages[-1]['content']}\n\n{content}"
        else:
            messages.append({"role": role, "content": content})
    if not messages or messages[0]["role"] != "user":
        raise RowError("no leading Human turn")
    if messages[-1]["role"] != "user":
        raise RowError("prompt does not end with a Human turn")
    return messages


def parse_hh_pair(chosen: str, rejected: str) -> dict:
    """One HH row -> ``{"prompt": messages, "chosen": str, "rejected": str}``.

    Raises:
        RowError: the row is invalid (see the module docstring); ``.reason`` says why.
    """
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, str):
            raise RowError("not a string", f"field {name!r} is {type(value).__name__}")
        check_field_length(value, name)
    chosen_prompt, chosen_response = split_transcript(chosen)
    rejected_prompt, rejected_response = split_transcript(rejected)
    if chosen_prompt != rejected_prompt:
        raise RowError("prompts differ", "chosen and rejected diverge before the last Assistant turn")
    chosen_response, rejected_response = chosen_response.strip(), rejected_response.strip()
    for name, response in (("chosen", chosen_response), ("rejected", rejected_response)):
        if not response:
            raise RowError("empty response", f"field {name!r}")
    if chosen_response == rejected_response:
        raise RowError("identical responses")
    return {"prompt": dialogue_messages(chosen_prompt), "chosen": chosen_response, "rejected": rejected_response}


def _parse_rows(records, source: str, tag: str, id_prefix: str, report: LoadReport, strict: bool) -> list[dict]:
    rows = []
    for index, record in records:
        missing = [key for key in ("chosen", "rejected") if key not in record]
        try:
            if missing:
                raise RowError("missing field", f"field {missing[0]!r}")
            row = parse_hh_pair(record["chosen"], record["rejected"])
        except RowError as error:
            report.reject(InvalidRow(source, index, error.reason, error.detail), strict)
            continue
        row["source"] = tag
        row["id"] = f"{id_prefix}:{index}"
        rows.append(row)
    return rows


def _subset_of(path: Path) -> str:
    """``harmless-base-test.jsonl.gz`` -> ``hh-rlhf/harmless-base``; unknown names -> ``hh-rlhf``."""
    for subset in HH_SUBSETS:
        if path.name.startswith(subset) or path.parent.name == subset:
            return f"hh-rlhf/{subset}"
    return "hh-rlhf"


def load_hh(
    split: str = "train", subsets: list[str] | tuple[str, ...] | None = None, path: str | Path | None = None,
    strict: bool = False,
) -> PreferenceData:
    """Load Anthropic HH-RLHF as paired rows (see the module docstring for the parsing rules).

    Args:
        split: "train" or "test" (hub only).
        subsets: hub subsets to read and concatenate, default all four of ``HH_SUBSETS``.
        path: a local ``.jsonl`` / ``.jsonl.gz`` (or ``.json``/``.parquet``) of the hub schema,
            instead of the hub; ``split`` and ``subsets`` are then not used.
        strict: raise ``ValueError`` naming the first invalid row (file, index, reason) instead
            of skipping it.

    Returns:
        :class:`PreferenceData` of rows with ``"prompt"`` (``[{"role", "content"}, ...]``),
        ``"chosen"``, ``"rejected"``, ``"source"`` (``"hh-rlhf/<subset>"``) and ``"id"``
        (``"<file name>:<row>"`` or ``"hh-rlhf/<subset>/<split>:<row>"``);
        ``.report`` counts the
        skipped rows by reason.
    """
    report = LoadReport()
    if path is not None:
        if subsets is not None:
            raise ValueError("pass either path= (a local file) or subsets= (hub subsets), not both")
        path = Path(path)
        rows = _parse_rows(read_records(path, report, strict), str(path), _subset_of(path), path.name, report, strict)
        return finish(rows, report, "load_hh")
    import datasets

    chosen_subsets = list(HH_SUBSETS if subsets is None else subsets)
    unknown = [name for name in chosen_subsets if name not in HH_SUBSETS]
    if unknown or not chosen_subsets:
        raise ValueError(f"subsets must be a non-empty list from {HH_SUBSETS}, got {subsets!r}")
    rows = []
    for subset in chosen_subsets:
        dataset = datasets.load_dataset(HH_HUB_ID, data_dir=subset, split=split)
        source = f"{HH_HUB_ID}/{subset}[{split}]"
        part = LoadReport(sources=[source], total=len(dataset))
        tag = f"hh-rlhf/{subset}"
        rows += _parse_rows(enumerate(dataset), source, tag, f"{tag}/{split}", part, strict)
        report.merge(part)
    return finish(rows, report, "load_hh")
