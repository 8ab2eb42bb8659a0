"""Prompt formatting: a prompt (a string or a chat message list) -> the text the policy continues.

Templates (``template=``): ``"chat"`` is the tokenizer's chat template with the assistant
generation header; ``"hh"`` is the plain Anthropic-HH layout (a leading system message is
written as-is)::

    {system}\\n\\nHuman: {user}\\n\\nAssistant: {assistant}\\n\\nHuman: {user}\\n\\nAssistant:

``"raw"`` uses a string prompt verbatim (a TL;DR post ending in ``"TL;DR:"`` for a base model);
``"auto"`` (default) is ``"chat"`` when the tokenizer has a chat template, else ``"hh"``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from transformers import PreTrainedTokenizerBase

ROLES = ("system", "user", "assistant")
TEMPLATES = ("auto", "chat", "hh", "raw")


class InvalidRowError(ValueError):
    """A row that cannot be tokenized; ``field`` names the offending key, ``reason`` says why."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"field {field_name!r} {reason}")
        self.field = field_name
        self.reason = reason


def prompt_messages(prompt: Any) -> list[dict[str, str]]:
    """Validate a prompt (string or message list) and return it as a message list."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InvalidRowError("prompt", "is empty")
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, Sequence) or not prompt:
        raise InvalidRowError("prompt", f"must be a string or a non-empty message list, got {type(prompt).__name__}")
    messages = []
    for i, message in enumerate(prompt):
        if not isinstance(message, Mapping) or message.get("role") not in ROLES:
            raise InvalidRowError("prompt", f"has message {i} without a 'role' in {ROLES}: {message!r:.80}")
        if not isinstance(message.get("content"), str):
            raise InvalidRowError("prompt", f"has message {i} whose 'content' is not a string")
        messages.append({"role": message["role"], "content": message["content"]})
    if messages[-1]["role"] == "assistant" and not messages[-1]["content"].strip():
        messages.pop()  # an empty final assistant turn is the generation slot itself
    if not messages or messages[-1]["role"] == "assistant":
        raise InvalidRowError("prompt", "must end with a user or system turn (the response follows it)")
    return messages


def _hh_template(messages: list[dict[str, str]]) -> str:
    speaker = {"user": "Human", "assistant": "Assistant"}
    parts = []
    for i, message in enumerate(messages):
        if message["role"] == "system":
            if i != 0:
                raise InvalidRowError("prompt", "has a system message that is not the first")
            parts.append(message["content"])
        else:
            parts.append(f"\n\n{speaker[message['role']]}: {message['content']}")
    return "".join(parts) + "\n\nAssistant:"


def format_prompt(prompt: str | list[dict[str, str]], tokenizer: PreTrainedTokenizerBase,
                  template: str = "auto") -> str:
    """Render a prompt (string or message list) as the text the policy continues.

    A string prompt becomes one user message (except with ``template="raw"``). See the module
    docstring for the templates; ``"chat"`` calls the chat template with
    ``add_generation_prompt=True``, ``"hh"`` ends with ``"\\n\\nAssistant:"``.

    Raises:
        InvalidRowError (a ValueError): malformed prompt or message list.
        ValueError: unknown template, or ``"chat"`` for a tokenizer without a chat template.
    """
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    has_chat_template = bool(getattr(tokenizer, "chat_template", None))
    if template == "chat" and not has_chat_template:
        raise ValueError("template='chat' but the tokenizer has no chat template; use 'hh' or 'raw'")
    messages = prompt_messages(prompt)
    if template == "raw":
        if not isinstance(prompt, str):
            raise InvalidRowError("prompt", "must be a string with template='raw'")
        return prompt
    if template == "hh" or not has_chat_template:
        return _hh_template(messages)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
