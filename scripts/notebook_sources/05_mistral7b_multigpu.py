# %% [markdown]
# # 05 · The paper's recipe: Mistral-7B, SFT then RPO on HH, on 8 GPUs
#
# The paper (Yin et al., Sec. 5) fine-tunes Mistral-7B-v0.1 on Anthropic HH in two stages: supervised
# fine-tuning (SFT) on the preferred responses, then RPO starting from (and referenced against) the SFT
# model. This notebook is the recipe for that run on one machine with 8 GPUs:
#
# 1. The configuration (the `paper` preset)
# 2. The exact launch commands (accelerate + FSDP, or DeepSpeed ZeRO-3)
# 3. Memory per GPU, worked out from the parameter count and the batch shape
# 4. Time, from FLOPs
# 5. The global contrast matrix: $64 \times 64$ instead of eight $8 \times 8$ blocks
# 6. The run itself, and its metrics
# 7. Resuming an interrupted run
#
# **Hardware.** The default run needs 8 GPUs with at least 40 GB each (A100 / H100; about 22 GB per GPU
# are used, section 3) and internet access (the model and HH come from the Hugging Face hub). On a machine
# without them the real mode stops at section 6 with a message saying what it would need. With
# `RPO_SMOKE=1` the *same code path* (the same CLI, the same trainer, two processes with the global
# contrast matrix) runs on a CPU in under a minute, with a tiny random Mistral instead of the 7B one.

# %%
import os

SMOKE = os.environ.get("RPO_SMOKE") == "1"  # CI sets RPO_SMOKE=1; the default is the real 8-GPU run

NUM_PROCESSES = 2 if SMOKE else 8  # data-parallel processes (GPUs; CPU processes in smoke mode)
SMOKE_STEPS = 4  # optimizer steps of the smoke run (the real run does one epoch of HH)

# %%
import json
import math
import shlex
import shutil
import subprocess
import sys
import time

import torch

from rpo_lab import estimates as estimates
from rpo_tutorial import paths
from rpo_tutorial.training.config import PAPER_NUM_GPUS, get_preset
from rpo_lab.estimates import GB, MISTRAL_7B
from rpo_tutorial.training.launch import paper_launch_commands
from rpo_tutorial.data.run_logs import read_metrics
from rpo_tutorial.plots.training import plot_training_curves
from rpo_lab.notebook import notice  # a styled note or stop instead of a traceback

RUN_DIR = paths.REPO_ROOT / "outputs" / ("05_smoke" if SMOKE else "05_mistral7b")  # outputs/ is git-ignored
FIGURES_DIR = paths.cache_dir() / "smoke-figures" if SMOKE else paths.figures_dir()  # smoke leaves figures/ alone
print(f"SMOKE={SMOKE}: {NUM_PROCESSES} processes, outputs in {RUN_DIR}")
# %% [markdown]
# ## 1. The configuration
#
# Everything the paper reports lives in one preset. The global batch is
# $8 \text{ pairs per GPU} \times 8 \text{ GPUs} \times 1 \text{ accumulation step} = 64$ pairs; RMSprop with
# learning rate $5 \cdot 10^{-7}$ and 150 warm-up steps; one epoch; $\beta = 0.1$; $\tau = 0.5$ for paired data
# (0.75 unpaired); prompts cut to 256 tokens and prompt + response to 512; bf16; FSDP full shard with
# activation checkpointing on every `MistralDecoderLayer`.

# %%
paper = get_preset("paper")
global_batch = paper.per_device_train_batch_size * PAPER_NUM_GPUS * paper.gradient_accumulation_steps
for field in ("model", "dataset", "loss", "weighting", "per_device_train_batch_size", "gradient_accumulation_steps",
              "optimizer", "learning_rate", "warmup_steps", "num_train_epochs", "beta", "max_prompt_length",
              "max_length", "bf16", "fsdp", "fsdp_layer_class", "gradient_checkpointing", "reference",
              "contrast_scope"):
    print(f"{field:28s} {getattr(paper, field)}")
print(f"{'effective_tau':28s} {paper.effective_tau}")
print(f"{'global batch (pairs)':28s} {global_batch}")
assert global_batch == 64

# %% [markdown]
# ## 2. Launch commands
#
# `accelerate launch` starts one process per GPU and `configs/fsdp_mistral7b_8gpu.yaml` tells it to shard
# with FSDP2 (each decoder layer one unit, bf16, activation checkpointing, sharded checkpoints). That file
# is the one source of truth: launched with it, the preset's own `fsdp` fields step aside, and rank 0
# prints the effective settings at start. Stage 1 trains the SFT model; stage 2 starts from it, and that
# same SFT model is the frozen reference $\pi_{\text{ref}}$, sharded exactly like the policy (bf16 shards,
# no gradients, no optimizer state). The final folder of each stage holds a consolidated model that
# `from_pretrained` loads, so stage 1's folder is stage 2's `--model`.
#
# The default `--contrast-scope local` reproduces the official code's per-GPU matrices, which is where the
# paper's numbers came from: keep it (or add `--convention official`) to reproduce them. `--contrast-scope
# global` is this project's extension: the contrast matrix spans the whole global batch of 64 pairs (section 5).
#
# DeepSpeed ZeRO-3 does the same sharding (`pip install deepspeed`): use `configs/deepspeed_zero3_8gpu.yaml`;
# the launcher's config wins over the preset's FSDP fields, so no extra flag is needed.
# With `--reference precomputed` the reference log-probs are computed in one pass before training (the
# reference sharded as in training, each GPU on its share of the data) and stored with the data, so no
# second model stays in memory during training.

# %%
SFT_DIR, RPO_DIR = "runs/mistral-sft", "runs/mistral-rpo"
commands = paper_launch_commands(SFT_DIR, RPO_DIR)  # each one is parsed by tests/training/test_launch.py
fsdp_launch = commands["1. SFT (FSDP2)"][:6]  # accelerate launch --config_file ... -m rpo_lab
for name, command in commands.items():
    print(f"# {name}\n{shlex.join(command)}\n")

# %% [markdown]
# ## 3. Memory per GPU
#
# Mistral-7B has $d = 4096$, an MLP of width $f = 14336$, $L = 32$ layers, 32 query and 8 key/value heads
# (so $k$ and $v$ are $4096 \times 1024$) and a vocabulary of $V = 32000$, with untied input and output
# embeddings. Its parameter count:
#
# $$
# N = \underbrace{2 V d}_{\text{embeddings}} + L \big(\underbrace{2 d^2 + 2 d \cdot 1024}_{q,o,k,v}
#     + \underbrace{3 d f}_{\text{SwiGLU}} + 2d\big) + d = 7{,}241{,}732{,}096 .
# $$
#
# Training state, FSDP full shard over $G = 8$ GPUs (bf16 compute, float32 master copy):
#
# * float32 weights, float32 gradients, and RMSprop's one float32 running average of $g^2$:
#   $(4 + 4 + 4)\,N / G$ bytes. (Adam would add another $4N/G$.)
# * the frozen reference, sharded the same way in bf16 (the values the policy computes with): $2N/G$;
#   zero with precomputed reference log-probs. Under plain DDP it would be a float32 replica, $4N$;
# * while a layer runs, FSDP gathers its full bf16 weights (and prefetches the next one), and FSDP2 keeps
#   the bf16 output head gathered from the end of forward to the start of backward.
#
# Activations of one micro-batch: 8 pairs are **16 sequences** (chosen and rejected stacked) of up to 512
# tokens, $T = 8192$ tokens per GPU. With activation checkpointing each layer keeps only its input,
# $L \cdot T \cdot d \cdot 2$ bytes, and one layer at a time recomputes its working set in backward:
# about $16d + 2\cdot 1024 + 4f$ bf16-sized values per token, as `transformers` writes the layer (RMSNorm in
# float32, $k$ and $v$ repeated to all 32 heads for SDPA, the four $f$-wide MLP tensors). The logits are the
# big one-off: bf16 logits, their float32 copy, the log-softmax and its gradients, $16\,T\,V$ bytes.
# (Both formulas were checked on an H200 with a Mistral-7B-shaped layer at $16 \times 512$ tokens: 2.05 GB
# saved by one layer, 4.19 GB peak for the logits, as computed below.)

# %%
num_params = estimates.parameter_count(MISTRAL_7B)
sequences = 2 * paper.per_device_train_batch_size  # chosen + rejected rows of one micro-batch
print(f"N = {num_params:,} parameters; bf16 weights alone: {2 * num_params / GB:.1f} GB\n")
for reference in ("model", "precomputed"):
    memory = estimates.per_gpu_memory(MISTRAL_7B, num_gpus=PAPER_NUM_GPUS, sequences=sequences,
                                      sequence_length=paper.max_length, reference=reference)
    print(f"FSDP2, reference={reference!r}: per GPU")
    for term, value in memory.items():
        print(f"  {term:22s} {value / GB:6.2f} GB")
    print()
print("total per GPU by launcher (reference model / precomputed):")
for launcher in estimates.LAUNCHERS:
    totals = [estimates.per_gpu_memory(MISTRAL_7B, PAPER_NUM_GPUS, sequences, paper.max_length, reference=r,
                                       launcher=launcher)["total"] / GB for r in ("model", "precomputed")]
    reference_alone = estimates.reference_bytes(num_params, PAPER_NUM_GPUS, launcher) / GB
    print(f"  {launcher:6s} {totals[0]:6.1f} GB / {totals[1]:6.1f} GB   (the reference alone: {reference_alone:.1f} GB)")
host = estimates.host_memory_per_node(num_params, PAPER_NUM_GPUS) / GB
host_all = estimates.host_memory_per_node(num_params, PAPER_NUM_GPUS, ram_efficient=False) / GB
print(f"\nhost RAM while loading: {host:.0f} GB with RAM-efficient loading (rank 0 only), {host_all:.0f} GB without")

# %% [markdown]
# So about 22 GB per GPU with a live reference model and 20 GB with precomputed reference log-probs, under
# FSDP2 or ZeRO-3 alike: the run fits 40 GB A100s with room for the CUDA context (~1 GB), communication
# buffers and fragmentation, and an 80 GB GPU could double the micro-batch. Plain DDP (124 GB) fits no GPU.
# `benchmarks/gpu_check.py` measures the FSDP2 terms on one GPU. Without checkpointing every layer keeps
# its working set:

# %%
no_checkpointing = estimates.activation_bytes(MISTRAL_7B, sequences, paper.max_length, checkpointing=False)
print(f"activations without checkpointing: {sum(no_checkpointing.values()) / GB:.0f} GB per GPU")

# %% [markdown]
# ## 4. Time
#
# A training step costs about $6N$ FLOPs per token (forward $2N$, backward $4N$), activation
# checkpointing adds one more forward ($2N$), and the reference model's forward another $2N$ (live, or once
# beforehand: the same count). HH's training split has 160,800 pairs, so one epoch at 64 pairs per step is
# $\lceil 160800 / 64 \rceil = 2513$ optimizer steps, and at most $160800 \times 2 \times 512$ tokens (sequences
# are padded to the longest in the micro-batch; real HH dialogues are often shorter, so this is an upper
# bound). At 40 % of peak (a typical model-FLOPs utilisation for FSDP at this size):

# %%
HH_TRAIN_PAIRS = 160_800  # helpful-base 43,835 + helpful-online 22,007 + helpful-rejection 52,421 + harmless-base 42,537
steps = estimates.optimizer_steps(HH_TRAIN_PAIRS, global_batch)
rpo_tokens = HH_TRAIN_PAIRS * 2 * paper.max_length  # chosen + rejected, padded to 512 at most
sft_tokens = HH_TRAIN_PAIRS * paper.max_length  # SFT reads the chosen responses only, no reference
stages = {"SFT": estimates.training_flops(num_params, sft_tokens, reference_forward=False),
          "RPO": estimates.training_flops(num_params, rpo_tokens)}
PEAK_BF16 = {"A100 (312 TFLOP/s)": 312e12, "H100 SXM (989 TFLOP/s)": 989e12}  # dense bf16 peaks
print(f"RPO: {steps} optimizer steps of {global_batch} pairs\n")
for stage, flops in stages.items():
    hours = {gpu: estimates.training_hours(flops, PAPER_NUM_GPUS, peak) for gpu, peak in PEAK_BF16.items()}
    print(f"{stage}: {flops:.2e} FLOPs -> " + ", ".join(f"8 x {gpu}: {h:.1f} h" for gpu, h in hours.items()))

# %% [markdown]
# ## 5. The global contrast matrix
#
# RPO's loss (paper Eqs. 10-15) compares every chosen response $i$ with every rejected response $j$ of the
# batch, $s_{ij} = \beta\big(\log\tfrac{\pi(y^+_i\mid x_i)}{\pi_{\text{ref}}(y^+_i\mid x_i)}
#   - \log\tfrac{\pi(y^-_j\mid x_j)}{\pi_{\text{ref}}(y^-_j\mid x_j)}\big)$, weighted by prompt similarity.
# The official code computes it per GPU, so with 8 GPUs of 8 pairs each the $64 \times 64$ matrix of the
# global batch is cut into eight $8 \times 8$ diagonal blocks: a chosen response meets only the 8 rejected
# responses on its own GPU, and the closest related prompt is usually on another GPU.
#
# `--contrast-scope global` all-gathers the log-ratios and prompt embeddings of every process (keeping
# the gradient of each process's own rows, and scaling it so that DDP / FSDP averaging gives the gradient of
# the global loss; see `rpo_tutorial/training/distributed.py`). The cost: two all-gathers of 64 numbers and one of
# $64 \times 384$ embedding values per step, negligible next to a 7B model's gradient reduce.

# %%
per_gpu = paper.per_device_train_batch_size
device_of_row = torch.arange(global_batch) // per_gpu  # (64,) which GPU holds pair i
same_device = device_of_row[:, None] == device_of_row[None, :]  # (64, 1) == (1, 64) -> (64, 64)
print(f"global: {global_batch} x {global_batch} = {global_batch ** 2} contrasts per step")
print(f"local:  {PAPER_NUM_GPUS} blocks of {per_gpu} x {per_gpu} = {int(same_device.sum())} "
      f"({same_device.float().mean():.1%} of them)")
# With HH's random batches, how many of the 63 other prompts of row i sit on row i's GPU?
print(f"other prompts a chosen response is contrasted with: {per_gpu - 1} (local) vs {global_batch - 1} (global)")

# %% [markdown]
# ## 6. The run
#
# Smoke mode runs the same command line with two CPU processes (gloo) and a tiny random Mistral
# (`--model tiny-random:mistral`: 2 layers of width 64, with the SmolLM2 tokenizer) on 16 rows of the demo
# dataset, with the global contrast matrix. The two CPU processes are started with `torchrun`
# (`accelerate launch` with a config of `use_cpu: true` and `num_processes: 2` starts two gloo processes
# too). On CPU processes accelerate always uses DDP, never FSDP: the run warns if FSDP was asked for.
# CI runs FSDP2 itself on two CPU processes against DDP in `tests/training/test_fsdp.py`. On GPUs,
# `accelerate launch` as in section 2.
#
# Every process writes the same metrics (the trainer reduces them over processes), and process 0 appends
# one JSON object per logging step to `metrics.jsonl`.

# %%
if SMOKE:
    shutil.rmtree(RUN_DIR, ignore_errors=True)  # a fresh smoke run (metrics.jsonl is appended to, never replaced)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(NUM_PROCESSES), "-m", "rpo_lab"]
    stages_to_run = {"RPO (smoke)": launch + ["train", "--preset", "smoke", "--model", "tiny-random:mistral",
                                              "--contrast-scope", "global", "--max-steps", str(SMOKE_STEPS),
                                              "--save-steps", "2", "--output-dir", str(RUN_DIR / "rpo")]}
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
else:
    launch = [sys.executable, "-m", "accelerate.commands.launch"] + fsdp_launch[2:]
    stages_to_run = {
        "SFT": launch + ["sft", "--preset", "paper", "--output-dir", str(RUN_DIR / "sft")],
        "RPO": launch + ["train", "--preset", "paper", "--model", str(RUN_DIR / "sft"), "--contrast-scope", "global",
                         "--output-dir", str(RUN_DIR / "rpo")],
    }
    environment = dict(os.environ)
CAN_RUN = SMOKE or torch.cuda.device_count() >= PAPER_NUM_GPUS
if not CAN_RUN:
    notice(f"The paper run needs {PAPER_NUM_GPUS} GPUs with at least 40 GB each (about 22 GB used per GPU, "
           f"section 3) and the Hugging Face hub; this machine has {torch.cuda.device_count()} GPU(s). "
           "Run the commands of section 2 on an 8-GPU machine, or set `RPO_SMOKE=1` for the same "
           "code path on two CPU processes. The cells below skip too.", kind="stop")
    stages_to_run = {}

for name, command in stages_to_run.items():
    print(f"$ {shlex.join(command[2:] if SMOKE else command)}")
    start = time.perf_counter()
    finished = subprocess.run(command, cwd=paths.REPO_ROOT, env=environment, capture_output=True, text=True)
    print(f"{name}: exit code {finished.returncode} after {time.perf_counter() - start:.0f} s")
    lines = [line for line in finished.stdout.splitlines() if line.startswith(("sft:", "train:"))]
    print("\n".join(dict.fromkeys(lines)))  # one summary per process; identical, so printed once
    if finished.returncode != 0:
        print(finished.stderr[-3000:])
        raise RuntimeError(f"{name} failed (exit code {finished.returncode})")

# %% [markdown]
# ### What the metrics say
#
# `contrast/accuracy` is the share of all $M \times N$ contrasts with $s_{ij} > 0$, here over the *global*
# matrix. `weights/row_entropy` is the mean entropy of the rows of the weight matrix (uniform rows over
# $N$ columns give $\log N$); `weights/diagonal_mass` is the mean weight a chosen response gives its own
# rejected response. In the 2-process smoke run of 2 x 4 pairs the global matrix is $8 \times 8$: row
# entropies above $\log 4 \approx 1.39$, the most a per-process $4 \times 4$ matrix allows, show that the
# weights really span both processes.

# %%
records = [r for r in read_metrics(RUN_DIR / "rpo" / "metrics.jsonl") if "loss" in r] if CAN_RUN else []
if not CAN_RUN:
    notice("No run, so no metrics: see section 6.", kind="stop")
print(f"{len(records)} logged steps")
for record in records:
    print(f"step {record['step']}: loss {record['loss']:.4f}  margins {record['rewards/margins']:+.4f}  "
          f"contrast/accuracy {record['contrast/accuracy']:.3f}  row entropy {record['weights/row_entropy']:.3f}")
assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
if SMOKE:  # a local 4 x 4 matrix could not have a row entropy above log 4
    per_process = get_preset("smoke").per_device_train_batch_size
    assert max(r["weights/row_entropy"] for r in records) > math.log(per_process), "contrast matrix is not global"
if CAN_RUN:
    plot_training_curves({"RPO, global contrast": RUN_DIR / "rpo"},
                         path=FIGURES_DIR / ("smoke_multigpu_curves.png" if SMOKE else "mistral7b_training_curves.png"));

# %% [markdown]
# ## 7. Resuming
#
# Every `save_steps` optimizer steps (500 in the paper preset, about a fifth of the epoch) the trainer
# writes `checkpoint-<step>/`: the sharded model and optimizer state (fast: no gather), the scheduler, `trainer_state.json`
# (the step, the logged history) and one random-number state per process (`rng_state_<rank>.pth`), which
# makes the data order after resuming the same as without the interruption. Rerun the same command with
# `--resume-from-checkpoint last` (section 2): it picks the newest `checkpoint-*` folder in `--output-dir`,
# skips the batches already seen and goes on, appending to the same `metrics.jsonl`.
# `tests/training/test_resume.py` checks that a resumed run reproduces the losses of an uninterrupted one, and
# `tests/training/test_fsdp.py` does the same for a sharded FSDP2 checkpoint on two processes.

# %%
checkpoints = sorted((RUN_DIR / "rpo").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
print("checkpoints:", [p.name for p in checkpoints])
if checkpoints:
    last = checkpoints[-1]
    state = json.loads((last / "trainer_state.json").read_text())
    print(f"{last.name}: global_step {state['global_step']}, files:")
    for item in sorted(last.iterdir()):
        print("  ", item.name)
else:
    notice("No checkpoints: the run of section 6 did not take place on this machine.", kind="stop")
print("\nto resume:", shlex.join(commands["resume an interrupted RPO run"]))
