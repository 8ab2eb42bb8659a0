# %% [markdown]
# # 04 · Small-scale training: SFT, then DPO against four flavours of RPO
#
# The paper's two stages at a scale one GPU (or a laptop) handles:
#
# 1. **SFT**: fine-tune on the preferred responses; the result is the starting point *and* the frozen
#    reference $\pi_{\text{ref}}$ of every preference run.
# 2. **DPO** and **RPO** from that SFT model, on the same data, the same order and the same number of steps:
#    RPO with embedding weights on paired data (the paper's main setting), on *unpaired* data (chosen and
#    rejected responses from different prompts), with uniform weights, and with diagonal weights.
# 3. The logged metrics (`metrics.jsonl`), and what normal curves look like.
# 4. Win rates of every model against the SFT model, with the demo dataset's judge.
#
# **Where it runs.** With a GPU and internet (e.g. Colab): the `colab` preset, SmolLM2-360M-Instruct on a
# subset of Anthropic HH from the hub (about 15-25 minutes on a T4 for all six runs). Without a GPU or without
# internet: the `demo` preset, the bundled SmolLM2-135M-Instruct on the project's demo dataset, offline on a
# CPU (tens of minutes for all six runs; the README's `python -m rpo_tutorial demo` does SFT, DPO and RPO
# alone in about ten). `RPO_SMOKE=1`: the `smoke` preset (a tiny random model, a few steps), which only
# checks that the code runs. Set `RPO_PRESET=demo` or `RPO_PRESET=colab` to choose.

# %%
import os

SMOKE = os.environ.get("RPO_SMOKE") == "1"  # CI sets RPO_SMOKE=1; the default is the real run

import torch


def choose_preset() -> str:
    """smoke in CI; $RPO_PRESET when set; colab with a GPU and internet; else the offline demo."""
    if SMOKE:
        return "smoke"
    if os.environ.get("RPO_PRESET"):
        return os.environ["RPO_PRESET"]
    online = os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "")
    return "colab" if torch.cuda.is_available() and online else "demo"


PRESET = choose_preset()
SMOKE_STEPS = 1  # optimizer steps per smoke run (the other presets train their own number of steps)
HELDOUT_PROMPTS = 4 if SMOKE else None  # held-out demo prompts for the win rates (None: all 40)
MAX_NEW_TOKENS = 8 if SMOKE else 48  # as when the demo dataset was generated
print(f"SMOKE={SMOKE}, preset {PRESET!r}, GPU: {torch.cuda.is_available()}")

# %%
import shutil

from rpo_tutorial import paths
from rpo_tutorial.training.config import get_preset
from rpo_tutorial.data.demo import load_demo
from rpo_tutorial.demo.judge import DEFAULT_TIE_MARGIN, sentiment_score
from rpo_tutorial.data.run_logs import read_metrics
from rpo_tutorial.evaluation.offline import RewardJudge
from rpo_tutorial.plots.training import plot_training_curves
from rpo_tutorial.plots.winrates import plot_win_rates
from rpo_tutorial.evaluation.sampling import generate_responses
from rpo_tutorial.training.run import run_sft, run_training
from rpo_tutorial.evaluation.winrate import markdown_table, win_rate_table

RUN_DIR = paths.REPO_ROOT / "outputs" / f"04_{PRESET}"  # outputs/ is git-ignored
shutil.rmtree(RUN_DIR, ignore_errors=True)  # fresh runs (a leftover checkpoint would otherwise be resumed by hand only)
FIGURES_DIR = paths.cache_dir() / "smoke-figures" if SMOKE else paths.figures_dir()  # smoke leaves figures/ alone
base = get_preset(PRESET, **({"max_steps": SMOKE_STEPS} if SMOKE else {}))
print(f"model {base.model}, dataset {base.dataset}, {base.per_device_train_batch_size} pairs per device x "
      f"{base.gradient_accumulation_steps} accumulation, lr {base.learning_rate}, beta {base.beta}")

# %% [markdown]
# ## 1. SFT
#
# Stage one maximises the likelihood of the preferred responses given their prompts,
# $\mathcal{L}_{\text{SFT}} = -\frac{1}{|\mathcal D|}\sum_{(x, y^+)} \log \pi_\theta(y^+ \mid x)$, with the
# prompt tokens masked out of the loss. It moves the model onto the distribution of the preference data, so
# that the preference stage starts from (and is regularised towards) a model that already writes responses
# like the ones it will compare.

# %%
sft = run_sft(base.replace(output_dir=str(RUN_DIR / "sft")))
print(f"SFT: {sft.global_step} steps, mean loss {sft.train_loss:.3f}; {sft.tokenization.summary()}")

# %% [markdown]
# ## 2. DPO and RPO from the SFT model
#
# Every run starts from the SFT model, which is also its frozen reference. With $c_i$ and $r_j$ the
# log-ratios $\log\frac{\pi_\theta}{\pi_{\text{ref}}}$ of chosen response $i$ and rejected response $j$:
#
# * **DPO** (paper Eq. 7): $-\log\sigma\big(\beta (c_i - r_i)\big)$, each chosen response against its own
#   rejected one.
# * **RPO** (paper Eqs. 10-15): every chosen response against every rejected response of the batch,
#   $s_{ij} = \beta (c_i - r_j)$, weighted: $\frac{1}{M}\sum_i \frac1N \sum_j -\log\sigma(w_{ij}\, s_{ij})$ with
#   * **embedding** weights $w_{ij} = \operatorname{softmax}_j(-d_{ij}/\tau)$ from the distance of the two prompts'
#     sentence embeddings (Eq. 12; $\tau = 0.5$ paired, 0.75 unpaired);
#   * **unpaired**: the same on data where the chosen and rejected responses come from *different* prompts
#     (each pair is split and the halves shuffled apart), which DPO cannot train on at all;
#   * **uniform** $w_{ij} = 1/N$: every contrast counts the same, related prompt or not;
#   * **diagonal** (Eq. 14): $w_{ii} = \alpha$, $w_{ij} = (1-\alpha)/(M-1)$: own pair first, the rest evenly.

# %%
VARIANTS = {
    "DPO": dict(loss="dpo"),
    "RPO paired, embedding": dict(loss="rpo", weighting="embedding"),
    "RPO unpaired, embedding": dict(loss="rpo", weighting="embedding", paired=False),
    "RPO paired, uniform": dict(loss="rpo", weighting="uniform"),
    "RPO paired, diagonal": dict(loss="rpo", weighting="diagonal", alpha=0.5),
}
runs = {"SFT": sft}
for name, overrides in VARIANTS.items():
    folder = RUN_DIR / name.lower().replace(",", "").replace(" ", "_")
    config = base.replace(model=str(sft.output_dir), output_dir=str(folder), **overrides)
    runs[name] = run_training(config)
    print(f"{name}: {runs[name].global_step} steps, mean loss {runs[name].train_loss:.4f}")

# %% [markdown]
# ## 3. The curves, and what normal looks like
#
# Every run appended one JSON object per logging step to `metrics.jsonl`; `plot_training_curves` reads them.
# What to expect in a healthy run:
#
# * **`loss`** starts at $\log 2 \approx 0.693$ (the policy equals the reference, every $s_{ij} = 0$) and
#   falls slowly. RPO's loss falls more slowly than DPO's: with weights inside the sigmoid and rows summing to
#   1, each contrast has an effective $\beta w_{ij} \approx \beta / N$ (notebook 03).
# * **`rewards/margins`** $=\beta(c_i - r_i)$ on the own pairs grows from 0; **`rewards/accuracies`**, the share
#   of own pairs with a positive margin, climbs from 0 (ties at the first step) towards 0.6-0.9.
# * **`logps/chosen` often falls too.** The losses only reward the *gap* between chosen and rejected, and the
#   cheapest way to widen it is usually to push probability mass off both, the rejected one faster. A
#   falling chosen log-prob is normal; a collapse of both by hundreds of nats in a few steps means the
#   learning rate is too high.
# * **`contrast/accuracy`**, the share of *all* pairs $(i, j)$ with $s_{ij} > 0$, rises like the accuracy; for
#   DPO it is logged over the same matrix, though DPO only trains its diagonal.
# * **`weights/row_entropy`** stays constant for a given batch composition: the weights depend on the prompts,
#   not on the model. Uniform rows over $N$ columns give $\log N$ (the maximum); embedding weights give less
#   (mass concentrated on related prompts); diagonal weights with $\alpha = 0.5$ sit in between.

# %%
METRICS = ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "contrast/accuracy",
           "weights/row_entropy")
preference_runs = {name: result.output_dir for name, result in runs.items() if name != "SFT"}
plot_training_curves(preference_runs, metrics=METRICS, path=FIGURES_DIR / "training_curves.png");
for name, result in runs.items():
    records = [r for r in read_metrics(result.metrics_path) if "loss" in r]
    last = records[-1]
    shown = {key: round(last[key], 3) for key in ("loss", "rewards/accuracies", "logps/chosen", "weights/row_entropy")
             if key in last}
    print(f"{name:24s} last logged step {last['step']}: {shown}")

# %% [markdown]
# ## 4. Win rates against the SFT model
#
# Each model answers the demo dataset's 40 held-out prompts (top-p 0.95, the same seeds for every model),
# and the demo dataset's own judge, a sentiment reward (`rpo_tutorial.demo.judge`), compares each answer with
# the SFT model's answer to the same prompt: a win, a tie (scores within 0.05) or a loss. On the demo data
# that reward is the ground truth the preferences were labelled with. On HH (the `colab` preset) it is only
# a rough proxy for helpfulness; use notebook 06's GPT-4 judge there. The win rate is $(W + T/2)/n$ with a
# 95 % Wilson interval; with 40 prompts the interval is wide, about $\pm 15$ points.

# %%
heldout_prompts = [row["prompt"] for row in load_demo("heldout")][:HELDOUT_PROMPTS]
tokenizer = sft.trainer.processing_class
samples = {}
for name, result in runs.items():
    policy = result.trainer.accelerator.unwrap_model(result.trainer.model).eval()
    samples[name] = generate_responses(policy, tokenizer, heldout_prompts, max_new_tokens=MAX_NEW_TOKENS,
                                       temperature=1.0, top_p=0.95, seed=0, model_name=name, progress=not SMOKE)
judge = RewardJudge(sentiment_score, margin=DEFAULT_TIE_MARGIN, name="demo_judge.sentiment_score")
sft_answers = [row["response"] for row in samples["SFT"]]
records = {name: judge.judge_pairs(heldout_prompts, [row["response"] for row in rows], sft_answers)
           for name, rows in samples.items() if name != "SFT"}
rows = win_rate_table(records)
print(markdown_table(rows))
plot_win_rates(rows, path=FIGURES_DIR / "small_scale_win_rates.png",
               title=f"Win rate against SFT, demo judge ({PRESET} preset, 95% Wilson interval)");

# %% [markdown]
# With the `demo` preset a few dozen steps move a 135M model only a little, so expect win rates near 50 %
# with intervals that overlap; the point of this notebook is the machinery and the curves. The README's main
# job (`python -m rpo_tutorial demo`, `rpo_tutorial.demo.pipeline.run_demo_pipeline`) trains only the top layers
# with a larger learning rate to get a visible effect on a CPU in ten minutes. Notebook 05 scales the same
# code to Mistral-7B on 8 GPUs; notebook 06 evaluates any of these models with the GPT-4 judge and AlpacaEval.
