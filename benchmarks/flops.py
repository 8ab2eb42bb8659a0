"""Matmul FLOPs of a training step, from the shapes the models actually ran.

A :class:`FlopRecorder` watches one step (hooks and wrappers, no change to any value) and adds up
the matrix-multiply FLOPs of every call with the formulas below: the convention of MFU figures
and of ``torch.utils.flop_counter.FlopCounterMode`` (element-wise work, norms, softmax, RoPE,
the optimizer and embedding look-ups are not counted). ``tests/benchmarks/test_flops.py`` checks
the recorder against ``FlopCounterMode`` on tiny models (eager attention, whose matmuls it sees).

Per decoder-body call over n rows of q new tokens attending to kv keys (kv = cached + q), with
L layers, hidden size H, attention width A = heads x head_dim, key/value width G = kv_heads x
head_dim and MLP width I (gated MLP: gate, up, down)::

    linear    = 2 n q L (H A + 2 H G + A H + 3 H I)       q, k, v, o projections and the MLP
    attention = 4 n q kv L A                              Q K^T and P V over the full q x kv rectangle
    forward   = linear + attention                        (what dense SDPA / eager kernels compute;
                                                           causal and padding masks zero entries, not work)

With gradients every matmul runs twice more in backward (input and weight gradients): 3 x
forward. With activation checkpointing the body's forward runs again in backward, except each
layer's last matmul (the MLP's down projection): torch's non-reentrant checkpoint, which
transformers and FSDP use, stops recomputing once the tensors backward needs are back.

Head on K rows with vocabulary V: 2 K H V forward. This project's head (``models.head``) runs
on the K rows that predict a label; with gradients it adds 2 K H V per operand needing a
gradient (hidden rows, head weight), and 2 K_c H V for the K_c rows of chunks beyond
``head.KEEP_LOGITS_BYTES``, recomputed in backward. A full-logits forward (``lm_head`` on all
positions: models without a plain head, the benchmark's ``*_before`` variants) counts n q rows.
TRL's chunked log-prob head recomputes every tile in backward: 2 N H V forward, and with
gradients 2 N H V + 2 N H V per operand needing a gradient, N = every position but the last of
each row on CPU (it scores all positions there), the label rows on CUDA.

So a DPO / RPO step with a live reference counts: the policy's body and head with gradients,
the reference's body and head without, both on the same layout (shared prompts: a prompt pass
of M x P tokens and a response pass of 2M x R tokens on P + R keys).
"""
from __future__ import annotations

import importlib
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DecoderShape:
    """The matmul sizes of a Llama / Mistral / Qwen-style decoder (gated MLP, grouped-query attention)."""

    layers: int
    hidden: int  # H
    attention_width: int  # A = heads x head_dim
    kv_width: int  # G = kv_heads x head_dim
    intermediate: int  # I
    vocab: int  # V

    @classmethod
    def from_config(cls, config) -> "DecoderShape":
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(config.num_hidden_layers, config.hidden_size, heads * head_dim, kv_heads * head_dim,
                   config.intermediate_size, config.vocab_size)

    def last_matmul_per_token(self) -> int:
        """Forward FLOPs of one token through every layer's last matmul (the MLP's down projection)."""
        return 2 * self.layers * self.hidden * self.intermediate

    def linear_per_token(self) -> int:
        """Forward FLOPs of one token through every layer's projections and MLP."""
        h, a, g, i = self.hidden, self.attention_width, self.kv_width, self.intermediate
        return 2 * self.layers * (h * a + 2 * h * g + a * h + 3 * h * i)


def decoder_flops(shape: DecoderShape, rows: int, queries: int, keys: int) -> int:
    """Forward matmul FLOPs of one decoder-body call: n = rows, q = queries, kv = keys (module docstring)."""
    return rows * queries * shape.linear_per_token() + 4 * rows * queries * keys * shape.layers * shape.attention_width


def head_flops(shape: DecoderShape, rows: int) -> int:
    """Forward FLOPs of the LM head on ``rows`` hidden states: 2 K H V."""
    return 2 * rows * shape.hidden * shape.vocab


def checkpointed_head_rows(rows: int, vocab: int, chunk_rows: int | None = None, keep_bytes: int | None = None) -> int:
    """Rows of ``models.head.label_token_logps`` whose chunk is recomputed in backward (over the kept budget)."""
    from rpo_tutorial.models import head

    per_chunk = chunk_rows or max(1, head.CHUNK_ELEMENTS // max(vocab, 1))
    budget = head.KEEP_LOGITS_BYTES if keep_bytes is None else keep_bytes
    kept_bytes, recomputed = 0, 0
    for start in range(0, rows, per_chunk):
        size = min(per_chunk, rows - start)
        if kept_bytes + size * vocab * 4 > budget:
            recomputed += size
        else:
            kept_bytes += size * vocab * 4
    return recomputed


def _needs_grad(*tensors) -> int:
    """How many of ``tensors`` need a gradient (0 outside autograd)."""
    if not torch.is_grad_enabled():
        return 0
    return sum(1 for tensor in tensors if tensor is not None and tensor.requires_grad)


@dataclass
class FlopRecorder:
    """Adds up the matmul FLOPs of every model call while active (``with FlopRecorder([policy, reference]):``).

    Args:
        models: the causal LMs to watch (policy, reference); wrappers (DDP, peft) are looked through.
        recompute_body: the decoder body runs under activation checkpointing (forward again in backward).
    """

    models: list
    recompute_body: bool = False
    total: int = 0
    parts: dict = field(default_factory=dict)  # "policy body" / "reference head" / ... -> FLOPs

    def _add(self, label: str, flops: int) -> None:
        self.total += flops
        self.parts[label] = self.parts.get(label, 0) + flops

    def __enter__(self) -> "FlopRecorder":
        from rpo_tutorial.models.head import unwrap_model

        self._stack = ExitStack()
        self._shapes = {}
        for index, model in enumerate(self.models):
            inner = unwrap_model(model)
            shape = DecoderShape.from_config(inner.config)
            role = "policy" if index == 0 else "reference"
            body = getattr(inner, inner.base_model_prefix)
            handle = body.register_forward_pre_hook(self._body_hook(shape, role, body), with_kwargs=True)
            self._stack.callback(handle.remove)
            head = inner.get_output_embeddings()
            handle = head.register_forward_hook(self._lm_head_hook(shape, role))  # after models.head's pre-hook
            self._stack.callback(handle.remove)
            self._shapes[id(head.weight)] = (shape, role)
        self._patch("rpo_tutorial.models.head", "label_token_logps", self._label_head)
        self._patch("rpo_tutorial.models.shared_prompt", "label_token_logps", self._label_head)
        self._patch_trl()
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _patch(self, module_name: str, name: str, make) -> None:
        module = importlib.import_module(module_name)
        original = getattr(module, name)
        setattr(module, name, make(original))
        self._stack.callback(setattr, module, name, original)

    def _body_hook(self, shape: DecoderShape, role: str, body: torch.nn.Module):
        trainable = any(parameter.requires_grad for parameter in body.parameters())

        def hook(module, args, kwargs) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            rows, queries = (ids.shape if ids is not None else kwargs["inputs_embeds"].shape[:2])
            cache = kwargs.get("past_key_values", kwargs.get("cache"))
            cached = cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0
            forward = decoder_flops(shape, rows, queries, cached + queries)
            if not (torch.is_grad_enabled() and trainable):
                self._add(f"{role} body", forward)
                return
            recomputed = forward - rows * queries * shape.last_matmul_per_token() if self.recompute_body else 0
            self._add(f"{role} body", 3 * forward + recomputed)

        return hook

    def _lm_head_hook(self, shape: DecoderShape, role: str):
        def hook(module, args, output) -> None:  # the rows the head actually ran on (0 under models.head's hook)
            rows = output.numel() // shape.vocab
            self._add(f"{role} head", head_flops(shape, rows) * (1 + _needs_grad(args[0], module.weight)))

        return hook

    def _label_head(self, original):
        def label_token_logps(hidden, targets, weight=None, bias=None, chunk_rows=None, keep_logits_bytes=None):
            if weight is not None:  # with weight None the rows are logits that lm_head's hook counted
                shape, role = self._shapes.get(id(weight), (None, "policy"))
                vocab, width = weight.shape
                rows = hidden.shape[0]
                grads = _needs_grad(hidden, weight)
                recomputed = checkpointed_head_rows(rows, vocab, chunk_rows, keep_logits_bytes) if grads else 0
                self._add(f"{role} head", 2 * width * vocab * (rows * (1 + grads) + recomputed))
            return original(hidden, targets, weight, bias, chunk_rows, keep_logits_bytes)

        return label_token_logps

    def _patch_trl(self) -> None:
        try:
            utils = importlib.import_module("trl.trainer.utils")
        except ImportError:
            return
        function = getattr(utils, "_ChunkedLogProbFunction", None)
        if function is None:
            return
        recorder = self

        class Counted:
            @staticmethod
            def apply(hidden, weight, *args):
                shape, role = recorder._shapes.get(id(weight), (None, "policy"))
                grads = _needs_grad(hidden, weight)
                rows, (vocab, width) = hidden.shape[0], weight.shape
                recorder._add(f"{role} head", 2 * rows * width * vocab * (2 + grads if grads else 1))
                return function.apply(hidden, weight, *args)

        utils._ChunkedLogProbFunction = Counted
        self._stack.callback(setattr, utils, "_ChunkedLogProbFunction", function)
