# %% [markdown]
# # 04 · Small-scale training: a seeded study of DPO against RPO
#
# Does RPO change anything, at a scale a laptop can train? One run per method says little: two runs of the
# same method with another seed differ by several points. This notebook runs a **study**
# (`rpo_lab.study`, also `python -m rpo_lab study`): every method, several seeds, the same SFT
# reference and data order for every method of a seed, and a report with intervals.
#
# 1. **The controlled setting**, where the paper's mechanism can show: demo prompts in 8 topic clusters whose
#    preference *depends on the cluster* (happier answers win in cooking, travel, pets, gardening; gloomier
#    answers win in sports, music, school, work). The ground-truth reward is known:
#    $r^*(x, y) = \operatorname{sign}(\text{cluster}(x)) \cdot \text{sentiment}(y)$.
# 2. **Fair by construction**: one SFT reference per seed, one data order per seed, one learning rate for all;
#    RPO at the paper's $\beta$ *and* at the matched effective $\beta \times N$ (notebook 03: each weight row
#    sums to 1, so one contrast acts like DPO with $\beta / N$).
# 3. **Measured by forward passes**: held-out implicit-reward accuracy (ties count half) and drift from the
#    reference; intervals across seeds, and each method's paired difference to DPO.
#
# **Where it runs.** `RPO_SMOKE=1` (CI): a tiny random model, two seeds, two steps: it only checks the code.
# On a CPU: the `small` study preset, **a smaller study** than the committed one: the controlled setting only,
# DPO and RPO (embedding weights) at the paper's and at the matched $\beta$, 3 seeds of 16 steps each: 9 runs,
# 3 SFT references and one pass of the frozen layers. Each run has the same budget as in the full study, so its
# rows compare with the full report's. Measured end to end: 17 minutes on the project's 2-core machine while
# other jobs kept its load average at 4-7 and left the notebook half a core on average (expect under 10 minutes
# on 2 idle cores). The study cell prints an estimate first, then re-estimates after every run. To add methods:
# `SETTINGS = SETTINGS.replace(methods=(..., "rpo-uniform-matched"))`; on the command line
# `python -m rpo_lab study --preset small --methods ...`. With a GPU: the `full` preset, every method on the
# controlled, control and HH settings plus the $\tau$ ablation (the committed report below).
# `RPO_STUDY_PRESET` overrides the choice.
#
# The full study's committed report: [`docs/study/study.md`](../docs/study/study.md) (made by
# `python -m rpo_lab study --output-dir outputs/study --report-dir docs/study`).

# %%
import os
import time

SMOKE = os.environ.get("RPO_SMOKE") == "1"  # CI sets RPO_SMOKE=1; the default is the real run

import torch
from IPython.display import Image, Markdown, display
from transformers.utils import logging as transformers_logging

from rpo_tutorial import paths
from rpo_lab.study.cli import STUDY_PRESETS

PRESET = os.environ.get("RPO_STUDY_PRESET") or ("smoke" if SMOKE else "full" if torch.cuda.is_available() else "small")
SETTINGS = STUDY_PRESETS[PRESET]
OUTPUT_DIR = paths.REPO_ROOT / "outputs" / f"04_study_{PRESET}"  # git-ignored; a rerun reads finished runs back
CPU_RUN_SECONDS, CPU_SFT_SECONDS, CPU_SETUP_SECONDS = 45, 25, 60  # one run, one SFT, the frozen layers: 2 idle cores


def notice(text: str) -> None:
    """A styled note in the notebook (a quoted block) instead of a traceback."""
    display(Markdown("> " + text.replace("\n", "\n> ")))


transformers_logging.set_verbosity_error()  # no weight-loading bars or tokenizer notices in the cells
transformers_logging.disable_progress_bar()
print(f"SMOKE={SMOKE}, study preset {PRESET!r}, GPU: {torch.cuda.is_available()}")
print(f"settings {SETTINGS.settings}, methods {SETTINGS.methods}, seeds {SETTINGS.seeds}, {SETTINGS.steps} steps of "
      f"{SETTINGS.batch_size} pairs, lr {SETTINGS.learning_rate:g} for every method, top {SETTINGS.trainable_layers} "
      "layers trained")

# %% [markdown]
# ## 1. The controlled data
#
# Each demo row holds two responses sampled from SmolLM2-135M-Instruct and their sentiment scores (VADER,
# the demo judge). In the controlled setting the chosen and rejected responses are swapped in the four
# "gloomy" clusters, so the chosen response is the one with the higher $r^*$ in every row. A contrast between
# a chosen cooking answer and a rejected sports answer then compares texts judged by opposite criteria; the
# control setting keeps one criterion everywhere.

# %%
from rpo_lab.study.controlled import NEGATIVE_CLUSTERS, control_rows, controlled_rows

for plain, flipped in list(zip(control_rows(), controlled_rows()))[:4]:
    print(f"{plain['cluster']:9s} chosen r* {flipped['chosen_score']:+.2f}  rejected r* {flipped['rejected_score']:+.2f}"
          f"  swapped: {plain['cluster'] in NEGATIVE_CLUSTERS}")
assert all(row["chosen_score"] > row["rejected_score"] for row in controlled_rows())

# %% [markdown]
# ## 2. How ties and intervals enter
#
# For a held-out pair the implicit reward of a response is $r(x, y) = \beta \log\frac{\pi(y|x)}{\pi_{\text{ref}}(y|x)}$
# (paper Eq. 5). The pair is a win when the chosen response's reward is higher, a loss when lower, a **tie**
# when equal: every pair of a model equal to its reference. The accuracy is $(W + T/2)/n$, so an untrained
# model scores exactly 0.5, not 0. Below, a hand version checked against the package.

# %%
from rpo_tutorial.evaluation.evaluate import preference_accuracy

chosen_ratio = torch.tensor([0.4, 0.0, -0.2, 1.0])  # log pi - log pi_ref of each chosen response
rejected_ratio = torch.tensor([0.1, 0.0, 0.3, -1.0])
by_hand = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen_ratio, rejected_ratio)) / 4
summary = preference_accuracy(chosen_ratio, rejected_ratio)
assert summary["accuracy"] == by_hand == 0.625
print(summary)

# %% [markdown]
# Across seeds, the table gives the mean and a Student-t 95 % interval of the per-seed accuracies. Against
# DPO it gives the **paired** difference: both methods are scored on the same held-out pairs with the same
# SFT reference, so per pair and seed $d = o_{\text{method}} - o_{\text{DPO}}$ with $o \in \{0, \tfrac12, 1\}$,
# and the interval is a bootstrap that resamples seeds, then pairs within each seed.
#
# ## 3. The study
#
# Training runs only the top layers; the frozen lower layers run once per setting and their outputs are
# reused by every run (`rpo_lab.study.trunk`, checked against a full forward in the tests). Each finished
# run is cached in `OUTPUT_DIR/runs`, so rerunning this cell resumes.

# %%
from rpo_lab.study.cache import read_run, run_path
from rpo_lab.study.runner import run_study

plan = [(setting, seed, method.key) for setting in SETTINGS.settings for method in SETTINGS.method_list(setting)
        for seed in SETTINGS.seeds]
results = {}
try:
    to_train = [run for run in plan if read_run(run_path(OUTPUT_DIR, *run), SETTINGS) is None]
except ValueError as error:  # a cache of other settings (an older version of the preset) is never mixed in
    to_train = None
    notice(f"**`{OUTPUT_DIR}` holds runs trained with other settings**, so this study cannot resume there: "
           f"delete that folder (or move it away) and rerun this cell. ({error})")
if to_train is not None:
    references = len({(setting, seed) for setting, seed, _ in to_train})
    print(f"{len(to_train)} of {len(plan)} runs to train ({len(plan) - len(to_train)} cached), "
          f"{references} SFT reference(s) to make or read back")
    if to_train and not SMOKE and not torch.cuda.is_available():
        minutes = (len(to_train) * CPU_RUN_SECONDS + references * CPU_SFT_SECONDS + CPU_SETUP_SECONDS) / 60
        print(f"estimate: about {minutes:.0f} min on 2 idle CPU cores (load average now "
              f"{os.getloadavg()[0]:.1f}: other programs make it slower); each progress line below re-estimates "
              "from the runs measured so far")
    began = time.perf_counter()
    results = run_study(OUTPUT_DIR, SETTINGS, progress=not SMOKE)
    print(f"{len(results)} runs in {time.perf_counter() - began:.0f} s")

# %% [markdown]
# ## 4. The report
#
# `study.md` has one table per setting. Read the accuracy together with its interval, and the drift with the
# train margin: a method that moved far from its reference (large drift, margin of many nats) and one that
# barely moved are not comparable at the same accuracy.

# %%
if results:
    display(Markdown((OUTPUT_DIR / "study.md").read_text()))
    for figure in ("study_learning_curves.png", "study_accuracy.png"):
        if (OUTPUT_DIR / figure).exists():
            display(Image(filename=str(OUTPUT_DIR / figure)))
else:
    notice("No report yet: the study cell above did not finish. Rerun it (finished runs are read back, not "
           "retrained), then this cell.")

# %% [markdown]
# Which way the comparison went here is in the table above: the notebook does not assume it. The committed full
# study, with the control and HH settings, the unpaired methods, KTO and the $\tau$ ablation, is in
# [`docs/study/study.md`](../docs/study/study.md). Notebook 05 scales the same losses to Mistral-7B on 8 GPUs;
# notebook 06 evaluates models with a GPT-4 judge and AlpacaEval, and `python -m rpo_lab evaluate` measures
# held-out implicit-reward accuracy of any trained model against its reference.
