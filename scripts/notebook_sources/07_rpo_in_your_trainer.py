# %% [markdown]
# # 07 · RPO in your own trainer: a 30-line PyTorch loop, and TRL's `DPOTrainer`
#
# The RPO loss is a pure function of four tensors of summed log-probabilities and a weight matrix, so it
# drops into any training loop. This notebook shows it twice:
#
# 1. The loss as the package computes it, next to the paper's Eq. 15
# 2. A custom PyTorch loop (~30 lines): tokenize, collate, log-probs, embedding weights, `rpo_loss`, step
# 3. RPO inside TRL's `DPOTrainer`: a small subclass that swaps the loss and carries the prompt embeddings
#    in the batch (TRL is optional: `pip install "rpo-tutorial[trl]"`, tested with `trl==1.16.0`)
#
# Real mode trains the top two decoder layers of the bundled SmolLM2-135M-Instruct for a few steps on a CPU
# (8 steps of 4 pairs in each section: a demonstration that the loss trains, not a trained model); each section
# prints its time estimate before it trains, and the notebook took 2 minutes on 2 shared cores (load average 2-3).
# `RPO_SMOKE=1` uses a tiny random model. On a GPU, raise `STEPS` and set `TRAIN_TOP_LAYERS = None`.

# %%
import os

SMOKE = os.environ.get("RPO_SMOKE") == "1"  # CI sets RPO_SMOKE=1; the default is the real run

NUM_PAIRS = 8 if SMOKE else 32  # demo pairs to train on
BATCH_SIZE = 4  # pairs per step: the contrast matrix is BATCH_SIZE x BATCH_SIZE
STEPS = 2 if SMOKE else 8  # optimizer steps of the custom loop and of the TRL run
MAX_LENGTH = 64 if SMOKE else 96  # prompt + response tokens
TRAIN_TOP_LAYERS = 2  # train the top decoder layers and the final norm only (a CPU-sized run; None: all)
LEARNING_RATE = 1e-3 if SMOKE else 1e-4
BETA, TAU = 0.1, 0.5  # the paper's beta and paired-data tau

# %%
import copy
import inspect
import math
import time

import torch
from IPython.display import Markdown, display
from transformers.utils import logging as transformers_logging

from rpo_tutorial import (
    PreferenceCollator,
    PromptEmbedder,
    batch_sequence_logps,
    embedding_weights,
    load_demo,
    load_policy,
    load_tokenizer,
    rpo_loss,
    tokenize_pair,
)
from rpo_tutorial.data.embeddings import add_prompt_embeddings
from rpo_tutorial.models import tiny_model
from rpo_tutorial.paths import cache_dir
from rpo_tutorial.training.threads import apply_num_threads

transformers_logging.set_verbosity_error()  # no weight-loading bars or tokenizer notices in the cells
transformers_logging.disable_progress_bar()
torch.manual_seed(0)
# CPU threads by machine load: on a busy 2-core machine two threads trained ~2.5x slower than one
threads = "GPU" if torch.cuda.is_available() else f"{apply_num_threads()} CPU thread(s)"
print(f"SMOKE={SMOKE}: {NUM_PAIRS} pairs, batches of {BATCH_SIZE}, {STEPS} steps; {threads}")

# %% [markdown]
# ## 1. The loss, as the package computes it
#
# With $c_i = \log\frac{\pi_\theta(y_{w,i}\mid x_i)}{\pi_{\text{ref}}(y_{w,i}\mid x_i)}$ and
# $r_j = \log\frac{\pi_\theta(y_{l,j}\mid x'_j)}{\pi_{\text{ref}}(y_{l,j}\mid x'_j)}$, the contrast score is
# $s_{ij} = \beta\,(c_i - r_j)$ (Eq. 10), the weights are $w_{ij} = \operatorname{softmax}_j(-d_{ij}/\tau)$ of
# the prompts' embedding distances (Eqs. 11-12), and the RPO loss (Eq. 15) is
#
# $$
# \mathcal{L}_{\text{RPO}} = -\,\mathbb{E}_{i}\Big[\frac{1}{N}\sum_{j=1}^{N}\log\sigma\big(w_{ij}\,s_{ij}\big)\Big].
# $$
#
# Notebooks 02 and 03 check loop versions of it against the package. Here is the package's own vectorised
# code: the contrast matrix is one broadcast, `(M, 1) - (1, N) -> (M, N)`, and the per-row loss a `mean` over
# $j$ (`placement="loss"` is the official code's variant for its diagonal strategy, notebook 03).

# %%
from rpo_tutorial.losses import contrast_matrix, rpo_pair_losses

source = "\n".join(inspect.getsource(function) for function in (contrast_matrix, rpo_pair_losses, rpo_loss))
display(Markdown(f"```python\n{source}```"))

# %% [markdown]
# ## 2. A custom PyTorch loop
#
# Everything a loop needs is importable, and the loop below is built from the same step pieces as the
# package's own trainer (`RPOTrainer.compute_loss`), so it computes what the trainer computes:
# `tokenize_pair` (prompt through the chat template, labels $-100$ on the prompt), `PreferenceCollator`
# (chosen rows first, then rejected rows, and the rows' prompt embeddings stacked), `batch_sequence_logps`
# (summed response log-probs, float32), `PreferenceLogps.from_batch` (the trainer's split into the chosen and
# rejected sides), `preference_objective` (for an `RPOConfig`: the weights of Eqs. 11-12, then `rpo_loss`,
# Eq. 15, averaged) and `preference_metrics` (the trainer's logged metrics: a tie counts half, never as a
# miss). `PromptEmbedder` (all-MiniLM-L6-v2, the paper's embedder, cached on disk) runs once, before training;
# a step only stacks the embeddings.

# %%
from rpo_tutorial import RPOConfig
from rpo_tutorial.models.loading import train_top_layers
from rpo_tutorial.training.metrics import preference_metrics
from rpo_tutorial.training.objectives import PreferenceLogps, preference_objective

CONFIG = RPOConfig(loss="rpo", weighting="embedding", beta=BETA, tau=TAU)  # the trainer's settings object
tokenizer = load_tokenizer()
policy = tiny_model(len(tokenizer), seed=0) if SMOKE else load_policy()
reference = copy.deepcopy(policy).eval().requires_grad_(False)  # pi_ref: the frozen starting point
rows = add_prompt_embeddings(load_demo("train")[:NUM_PAIRS], PromptEmbedder(), show_progress=False)
examples = [tokenize_pair(row, tokenizer, max_prompt_length=MAX_LENGTH // 2, max_length=MAX_LENGTH) for row in rows]
collate = PreferenceCollator(pad_token_id=tokenizer.pad_token_id)
loader = torch.utils.data.DataLoader(examples, batch_size=BATCH_SIZE, shuffle=True, collate_fn=collate,
                                     generator=torch.Generator().manual_seed(0))
# train the top decoder layers and the final norm only (None: every parameter), as the demo and the study do
optimizer = torch.optim.AdamW(train_top_layers(policy, TRAIN_TOP_LAYERS), lr=LEARNING_RATE)


def rpo_step(batch: dict) -> dict:
    """One optimizer step of paired RPO with embedding weights, the trainer's step pieces; returns what to log."""
    policy_logps = batch_sequence_logps(policy, batch)  # (M + N,): M chosen rows, then N rejected rows
    with torch.no_grad():
        reference_logps = batch_sequence_logps(reference, batch)  # (M + N,)
    logps = PreferenceLogps.from_batch(batch, policy_logps, reference_logps)  # (M,) / (N,) sides, (M, D) / (N, D)
    output = preference_objective(logps, CONFIG)  # weights (M, N), Eqs. 11-12; rpo_loss, Eq. 15; mean -> ()
    optimizer.zero_grad()
    output.loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.requires_grad], 10.0)
    optimizer.step()
    means = {name: float(total) / count for name, (total, count) in preference_metrics(logps, output).items()}
    return {"loss": output.loss.item(), "margin": means["rewards/margins"], "accuracy": means["rewards/accuracies"]}


# %% [markdown]
# Training. The first step is timed and the rest estimated before they run. The accuracy is the share of
# pairs whose chosen reward is higher, a tie counting half (as the trainer logs it): at step 1 every pair is a
# tie, so it reads 0.5.

# %%
policy.train()
history, step, step_seconds, start = [], 0, None, time.perf_counter()
while step < STEPS:
    for batch in loader:
        history.append(rpo_step(batch))
        step += 1
        if step == 1:
            step_seconds = time.perf_counter() - start
            print(f"first step {step_seconds:.1f} s; the remaining {STEPS - 1} take about "
                  f"{(STEPS - 1) * step_seconds:.0f} s")
        if step % max(1, STEPS // 8) == 0 or step == STEPS:
            print(f"step {step:3d}  loss {history[-1]['loss']:.4f}  reward margin {history[-1]['margin']:+.4f}  "
                  f"accuracy {history[-1]['accuracy']:.2f}")
        if step == STEPS:
            break
step_seconds = (time.perf_counter() - start) / STEPS
print(f"custom loop: {STEPS} steps in {time.perf_counter() - start:.0f} s")
assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in history)
assert abs(history[0]["loss"] - math.log(2)) < 1e-4  # at step 1 the policy is the reference: every s_ij = 0
assert history[0]["accuracy"] == 0.5  # ... so every pair is a tie, counted half

# the package's step is the paper's two pure functions: the same loss, written with them directly
batch = collate(examples[:BATCH_SIZE])
with torch.no_grad():
    policy_logps, reference_logps = batch_sequence_logps(policy, batch), batch_sequence_logps(reference, batch)
    logps = PreferenceLogps.from_batch(batch, policy_logps, reference_logps)
    weights = embedding_weights(batch["chosen_prompt_embeddings"], batch["rejected_prompt_embeddings"], tau=TAU)
    losses, _, _ = rpo_loss(logps.policy_chosen_logps, logps.policy_rejected_logps, logps.reference_chosen_logps,
                            logps.reference_rejected_logps, weights, beta=BETA)  # (M,) per chosen row
    torch.testing.assert_close(preference_objective(logps, CONFIG).loss, losses.mean())
print(f"after training: preference_objective = rpo_loss(embedding_weights) = {losses.mean():.5f} on one batch")

# %% [markdown]
# At step 1 the policy *is* the reference, so every $s_{ij} = 0$ and the loss is $\log 2 \approx 0.693$. After
# that each step sees a new batch of 4 pairs, so at this size the loss and the reward margin $\beta(c_i - r_i)$
# are noisy (a real run has thousands of steps; notebook 04 trains and plots the curves). Because
# $w_{ij} \approx 1/N$ inside the sigmoid, each contrast acts with an effective $\beta$ of about $\beta / N$
# (notebook 03), so RPO's loss also moves more slowly than DPO's would at the same $\beta$.
#
# To reproduce the official code instead of the paper, build the weights and loss with its settings:
# `rpo_loss(..., placement="loss")` with `diagonal_weights(M, alpha=0.8)`, or `uniform_weights(M, N,
# convention="official")`; for the package's own trainer one switch sets all of them:
# `official_convention(config)` from `rpo_tutorial.training.official` (CLI `--convention official`).

# %% [markdown]
# ## 3. RPO inside TRL's `DPOTrainer`
#
# TRL's `DPOTrainer` tokenizes, batches, runs the reference model and logs; its loss is an inline branch of
# `_compute_loss`. `rpo_tutorial.training.trl_rpo.RPODPOTrainer` overrides `compute_loss` only: the policy's
# and the reference's summed completion log-probs come from TRL's own fused LM head, and the loss is
# `rpo_loss` with embedding weights. The prompt embeddings travel as a dataset column `prompt_embedding`,
# which a collator subclass stacks into `prompt_embeddings` $(B, D)$ next to TRL's keys.
#
# **Precision and checkpointing, set explicitly.** TRL's `DPOConfig` defaults to `bf16=True` and
# `gradient_checkpointing=True`, whatever the hardware. On a CPU without native bf16 kernels (most laptops, and
# the project's AMD EPYC) bf16 autocast made a step about 17 times slower than float32, and checkpointing adds a
# second forward that a 135M model on 2 cores does not need. So this cell decides both from the hardware it
# finds (`rpo_lab.hardware.plan_training`): bf16 only on a CUDA GPU with native bf16 (A100, L4, H100), fp16 on
# older GPUs (T4), float32 on a CPU (the custom loop's precision above, so the two runs compare like with like),
# and checkpointing only when the memory estimate says the step would not fit otherwise. The time estimate
# comes from this run's own first step, timed by a callback.

# %%
try:
    import trl
except ImportError:
    trl = None
    display(Markdown("> **TRL is not installed, so this section stops here.** "
                     "`pip install \"rpo-tutorial[trl]\"` installs the tested version (`trl==1.16.0`), "
                     "then rerun this notebook."))

# %%
if trl is not None:
    from datasets import Dataset

    from rpo_tutorial.training.trl_rpo import TESTED_TRL_VERSION, RPODPOTrainer

    if trl.__version__ != TESTED_TRL_VERSION:
        display(Markdown(f"> TRL {trl.__version__} is installed; this subclass was tested with "
                         f"{TESTED_TRL_VERSION}. If a cell fails, `pip install trl=={TESTED_TRL_VERSION}`."))
    display(Markdown(f"```python\n{inspect.getsource(RPODPOTrainer.compute_loss)}```"))

# %%
if trl is not None:
    import datasets
    import warnings
    from transformers import PrinterCallback

    datasets.disable_progress_bars()  # TRL's map() calls over a few rows
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6", category=FutureWarning)

    from transformers import TrainerCallback

    from rpo_lab.hardware import SMOLLM2_135M, detect_device, plan_training

    trl_policy = tiny_model(len(tokenizer), seed=0) if SMOKE else load_policy()
    trl_reference = copy.deepcopy(trl_policy).eval().requires_grad_(False)
    train_top_layers(trl_policy, TRAIN_TOP_LAYERS)  # the Trainer's optimizer takes the parameters that need grad
    trainable_fraction = (sum(p.numel() for p in trl_policy.parameters() if p.requires_grad)
                          / sum(p.numel() for p in trl_policy.parameters()))
    plan = plan_training(detect_device(), SMOLLM2_135M, pairs=BATCH_SIZE, max_length=MAX_LENGTH,
                         trainable_fraction=trainable_fraction)
    print(f"TRL run: {plan.describe()}")
    dataset = Dataset.from_list([{key: row[key] for key in ("prompt", "chosen", "rejected", "prompt_embedding")}
                                 for row in rows])
    arguments = trl.DPOConfig(
        output_dir=str(cache_dir() / "07_trl_rpo"), per_device_train_batch_size=BATCH_SIZE,
        max_steps=STEPS, learning_rate=LEARNING_RATE, beta=BETA, max_length=MAX_LENGTH, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(), disable_tqdm=True, seed=0,
        **plan.trainer_flags())  # bf16, fp16 and gradient_checkpointing, all explicit (TRL defaults: bf16, on)
    assert arguments.bf16 == (plan.precision == "bf16") and arguments.gradient_checkpointing == \
        plan.gradient_checkpointing

    class FirstStepEstimate(TrainerCallback):
        """Times this run's own first optimizer step and prints the estimate for the rest."""

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                seconds = time.perf_counter() - self.start
                print(f"TRL first step {seconds:.1f} s; the remaining {state.max_steps - 1} take about "
                      f"{(state.max_steps - 1) * seconds:.0f} s")

    trainer = RPODPOTrainer(model=trl_policy, ref_model=trl_reference, args=arguments, train_dataset=dataset,
                            processing_class=tokenizer, tau=TAU, callbacks=[FirstStepEstimate()])
    trainer.remove_callback(PrinterCallback)  # the table below instead of one printed dict per step
    start = time.perf_counter()
    trainer.train()
    print(f"TRL + RPO: {STEPS} steps in {time.perf_counter() - start:.0f} s "
          f"({plan.precision}, checkpointing {'on' if plan.gradient_checkpointing else 'off'})")
    logged = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
    shown = logged[:: max(1, STEPS // 8)]
    for entry in shown + ([logged[-1]] if logged[-1] is not shown[-1] else []):
        print(f"step {entry['step']:3d}  loss {entry['loss']:.4f}  reward margin {entry['rewards/margins']:+.4f}  "
              f"accuracy {entry['rewards/accuracies']:.2f}")
    assert len(logged) == STEPS

# %% [markdown]
# The same check as the package's test (`tests/training/test_trl_rpo.py`): on one of TRL's batches, the
# subclass's loss equals `rpo_loss` computed from the package's own `batch_sequence_logps`.

# %%
if trl is not None:
    batch = next(iter(trainer.get_train_dataloader()))
    labelled = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "labels": batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)}
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch)
        policy_logps = batch_sequence_logps(trainer.model, labelled)  # (2B,) chosen rows first
        reference_logps = batch_sequence_logps(trainer.ref_model, labelled)
    B = batch["prompt_embeddings"].shape[0]
    weights = embedding_weights(batch["prompt_embeddings"], batch["prompt_embeddings"], tau=TAU)
    package_loss = rpo_loss(policy_logps[:B], policy_logps[B:], reference_logps[:B], reference_logps[B:],
                            weights, beta=BETA)[0].mean()
    torch.testing.assert_close(trl_loss, package_loss, atol=1e-4, rtol=1e-4)
    print(f"TRL subclass loss {trl_loss:.5f} = package rpo_loss {package_loss:.5f}")

# %% [markdown]
# **What differs from the package's own trainer.** TRL tokenizes with its own rules (the chat template,
# then the completion) and its reference model runs live; the contrast matrix spans each device's batch
# (`contrast_scope="local"`, as the official code); unpaired data and the other weighting strategies need the
# package's trainer (`rpo-tutorial train`). The subclass and its collator are about 60 lines:
# `rpo_tutorial/training/trl_rpo.py`.
