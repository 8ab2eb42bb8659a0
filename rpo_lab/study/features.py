"""Trunk features and reference log-probs of every pair: once per study, in fixed chunks of pairs.

Each split's sequences (chosen, rejected, chosen, ... of consecutive pairs) are cut into chunks of
``CHUNK_PAIRS`` pairs. A chunk is encoded on its own (:func:`encode_chunk`): the frozen lower layers
in batches of ``eval_batch_size`` sequences (each pair's prompt run once where the model allows it,
``trunk_bank``), then the reference (the pretrained top layers) scores its pairs in consecutive
batches. Since every chunk's batches are fixed, the numbers are the same whether one process
encodes every chunk or ``workers`` processes (one torch thread each) share them.
"""
from __future__ import annotations

import torch

from rpo_lab.study.trunk import TopStack, load_model, pad_sequences

CHUNK_PAIRS = 64  # pairs per chunk (a unit of work for a worker process)
Sequence = tuple[list[int], list[int]]  # (input ids, labels with -100 on the prompt)


def trunk_bank(stack: TopStack, sequences: list[Sequence], pad_id: int, batch_size: int) -> list[torch.Tensor]:
    """Trunk features of every sequence (chosen, rejected, chosen, ... of consecutive pairs), in fixed batches.

    Where the model allows it (``models.shared_prompt.shared_prompt_problem``) each pair's prompt runs
    once (``TopStack.pair_trunk_features``), else every sequence runs whole. Returns (T_i, D) float32
    per sequence.
    """
    from rpo_tutorial.models.shared_prompt import shared_prompt_problem, split_shared_prompts

    share, step, features = shared_prompt_problem(stack.model) is None, 2 * max(1, batch_size // 2), []
    for start in range(0, len(sequences), step):
        chunk = sequences[start: start + step]
        rows = chunk[0::2] + chunk[1::2]  # chosen rows, then rejected rows
        longest = max(len(ids) for ids, _ in rows)
        input_ids = torch.tensor([ids + [pad_id] * (longest - len(ids)) for ids, _ in rows])  # (B, T)
        mask = torch.tensor([[1] * len(ids) + [0] * (longest - len(ids)) for ids, _ in rows])  # (B, T)
        labels = torch.tensor([row + [-100] * (longest - len(row)) for _, row in rows])  # (B, T)
        half = len(rows) // 2
        batch = split_shared_prompts(input_ids, mask, labels, half) if share else None
        if batch is None:
            hidden = stack.trunk_features(input_ids, mask)  # (B, T, D)
            by_row = [hidden[row, : len(ids)].clone() for row, (ids, _) in enumerate(rows)]
        else:
            prompt, response = stack.pair_trunk_features(batch)  # (M, P, D), (B, R, D)
            lengths = batch.response_mask.sum(dim=1).tolist()  # (B,)
            by_row = [torch.cat([prompt[row % half][batch.prompt_mask[row % half].bool()],
                                 response[row, : lengths[row]]]) for row in range(len(rows))]  # (T_i, D) each
        for pair in range(half):
            features += [by_row[pair], by_row[half + pair]]
    return features


@torch.inference_mode()
def sequence_logps(stack: TopStack, features: list[torch.Tensor], labels: list[torch.Tensor], batch_size: int
                   ) -> torch.Tensor:
    """Summed log-probs of sequences under the stack's current weights, in consecutive batches. Shape: (S,)."""
    stack.model.eval()
    parts = [stack.logps(*pad_sequences(features[start: start + batch_size], labels[start: start + batch_size]))
             for start in range(0, len(features), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0)


def encode_chunk(stack: TopStack, sequences: list[Sequence], pad_id: int, batch_size: int
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """(features, labels, reference log-probs (P, 2)) of a chunk of pairs; the stack holds the reference weights."""
    features = trunk_bank(stack, sequences, pad_id, batch_size)
    labels = [torch.tensor(row, dtype=torch.long) for _, row in sequences]
    return features, labels, sequence_logps(stack, features, labels, batch_size).reshape(-1, 2)


_WORKER: dict = {}


def _worker_start(settings, pad_id: int) -> None:
    from rpo_tutorial.training.threads import apply_num_threads

    apply_num_threads(settings.num_threads)
    _WORKER.update(stack=TopStack(load_model(settings)[1], settings.trainable_layers), pad_id=pad_id,
                   batch_size=settings.eval_batch_size)


def _worker_encode(sequences: list[Sequence]):
    return encode_chunk(_WORKER["stack"], sequences, _WORKER["pad_id"], _WORKER["batch_size"])


def encode_chunks(stack: TopStack, sequences: dict[str, list[Sequence]], pad_id: int, settings, workers: int = 1
                  ) -> dict[str, list[tuple]]:
    """Per split, the encoded chunks in order (module docstring); ``stack`` must hold the pretrained weights."""
    chunks = [(name, part[start: start + 2 * CHUNK_PAIRS]) for name, part in sequences.items()
              for start in range(0, len(part), 2 * CHUNK_PAIRS)]
    from tqdm.auto import tqdm

    bar = {"total": len(chunks), "desc": f"frozen layers + reference ({CHUNK_PAIRS} pairs a chunk)", "unit": "chunk"}
    if workers > 1 and len(chunks) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(min(workers, len(chunks)), _worker_start,
                                                       (settings, pad_id)) as pool:
            encoded = list(tqdm(pool.imap(_worker_encode, [chunk for _, chunk in chunks]), **bar))  # in order
    else:
        encoded = [encode_chunk(stack, chunk, pad_id, settings.eval_batch_size) for _, chunk in tqdm(chunks, **bar)]
    result: dict[str, list[tuple]] = {name: [] for name in sequences}
    for (name, _), item in zip(chunks, encoded):
        result[name].append(item)
    return result
