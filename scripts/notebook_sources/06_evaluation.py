# %% [markdown]
# # 06 · Evaluation: sampling, judges, win rates with intervals, AlpacaEval 2.0
#
# The paper evaluates its dialogue models by a **win rate**: for each test prompt, GPT-4 is shown the
# model's response and a baseline response and asked which is better; the win rate is the share of prompts
# the model wins. This notebook does that end to end:
#
# 1. Sampling responses from each trained policy (top-p 0.95, as the paper's policies)
# 2. The GPT-4 pairwise judge: both orders, ties, a resumable cache of paid calls
#    (runs only when `OPENAI_API_KEY` is set)
# 3. Offline judges that need no API: a reward function (the demo dataset's judge) and the policy's own
#    implicit reward
# 4. The win-rate table and plot with 95 % intervals
# 5. AlpacaEval 2.0: the export of the 805 instructions, and the length-controlled win rate
#
# **Models.** By default the SFT, DPO and RPO (paired, embedding) models trained by notebook 04
# (`outputs/04_colab/` or `outputs/04_demo/`), else those of `python -m rpo_tutorial demo`, the README's main
# job (`outputs/demo/{sft,dpo,rpo}/model`); set `MODEL_DIRS` to evaluate others (e.g. notebook 05's
# Mistral-7B runs, on a GPU). Without them the bundled SmolLM2-135M-Instruct is
# evaluated alone. `RPO_SMOKE=1` uses the bundled model on a handful of prompts with a few tokens.

# %%
import os

SMOKE = os.environ.get("RPO_SMOKE") == "1"  # CI sets RPO_SMOKE=1; the default is the full evaluation

NUM_PROMPTS = 4 if SMOKE else None  # held-out demo prompts evaluated (None: all 40)
MAX_NEW_TOKENS = 12 if SMOKE else 64  # response length when sampling on the demo prompts
ALPACA_PROMPTS = 3 if SMOKE else None  # AlpacaEval instructions exported (None: all 805)
ALPACA_MAX_NEW_TOKENS = 8 if SMOKE else 512
JUDGE_MODEL = "gpt-4-0613"  # the paper's judge; any chat model of an OpenAI-compatible server works
JUDGE_BASE_URL = os.environ.get("OPENAI_BASE_URL")  # e.g. a local vLLM server; None: api.openai.com
USE_GPT4 = bool(os.environ.get("OPENAI_API_KEY")) and not SMOKE  # paid calls only in a real run, with a key
BETA = 0.1  # the beta the policies were trained with (implicit reward)

# %%
from functools import lru_cache

import torch

from rpo_tutorial import models, paths
from rpo_tutorial.evaluation.alpaca_eval import (
    alpaca_eval_command,
    export_alpaca_eval,
    generate_alpaca_eval,
    run_alpaca_eval,
)
from rpo_tutorial.data import load_alpaca_eval_prompts
from rpo_tutorial.data.demo import load_demo
from rpo_tutorial.demo.judge import DEFAULT_TIE_MARGIN, sentiment_score
from rpo_tutorial.evaluation.judges import OpenAIJudge
from rpo_tutorial.evaluation.prompts import DIALOGUE_TEMPLATE, combine_verdicts
from rpo_tutorial.evaluation.offline import (
    RewardJudge,
    implicit_reward_accuracy,
    implicit_reward_records,
    response_logps,
)
from rpo_tutorial.plots.winrates import plot_win_rates
from rpo_tutorial.evaluation.sampling import generate_responses
from rpo_tutorial.evaluation.winrate import markdown_table, win_rate, win_rate_table

OUTPUT_DIR = paths.REPO_ROOT / "outputs" / ("06_smoke" if SMOKE else "06_evaluation")  # outputs/ is git-ignored
OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
OUTPUTS = paths.REPO_ROOT / "outputs"
CANDIDATE_RUNS = [  # where trained SFT / DPO / RPO models are looked for, first complete set wins
    {name: OUTPUTS / f"04_{preset}" / folder for name, folder in
     (("SFT", "sft"), ("DPO", "dpo"), ("RPO", "rpo_paired_embedding"))} for preset in ("colab", "demo")
] + [{name: OUTPUTS / "demo" / folder / "model" for name, folder in (("SFT", "sft"), ("DPO", "dpo"), ("RPO", "rpo"))}]
MODEL_DIRS = next((run for run in CANDIDATE_RUNS if all((p / "config.json").is_file() for p in run.values())), {})


@lru_cache(maxsize=2)
def load_model(path: str) -> torch.nn.Module:
    """A policy in eval mode, loaded once (the two most recent are kept)."""
    return models.load_policy(path).eval()


print(f"SMOKE={SMOKE}; GPT-4 judge: {'on' if USE_GPT4 else 'off (no OPENAI_API_KEY, or smoke mode)'}")

# %% [markdown]
# ## 1. Sampling
#
# `generate_responses` renders each prompt exactly as training did (the chat template), pads the batch on
# the left, and samples with temperature 1 and nucleus top-p 0.95, the paper's policy sampling (its
# "temperature 0" is the *judge's* setting). A response stops at EOS or where the model starts a next user
# turn. Every row records its settings, so a table of results can always say how it was sampled.
#
# The prompts are the demo dataset's held-out prompts, with the dataset's preferred ("chosen") response to
# each: as in the paper, which judges each model against the test set's preferred responses.

# %%
heldout = load_demo("heldout")[:NUM_PROMPTS]
prompts = [row["prompt"] for row in heldout]
if SMOKE or not MODEL_DIRS:
    if not SMOKE:
        print(f"no trained models under {OUTPUTS}: run notebook 04 or `python -m rpo_tutorial demo` first. "
              "Evaluating the bundled instruct model alone.")
    policy_paths = {"instruct": models.BUNDLED_POLICY}
else:
    policy_paths = {name: str(path) for name, path in MODEL_DIRS.items()}
    print("evaluating", policy_paths)
tokenizer = models.load_tokenizer(next(iter(policy_paths.values())))

samples = {}
for name, path in policy_paths.items():
    policy = load_model(path)
    samples[name] = generate_responses(policy, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS, temperature=1.0,
                                       top_p=0.95, batch_size=8, seed=0, model_name=name,
                                       output_path=OUTPUT_DIR / f"samples_{name}.jsonl", progress=not SMOKE)
first = next(iter(samples))
print("settings:", samples[first][0]["settings"])
for name, rows in samples.items():
    print(f"\n[{name}] {rows[0]['prompt']}\n  -> {rows[0]['response']!r} ({rows[0]['stop_reason']})")
print(f"\n[chosen] {heldout[0]['chosen']!r}")

# %% [markdown]
# ## 2. The GPT-4 judge
#
# The paper asks GPT-4 (gpt-4-0613, temperature 0) which of two replies is "more helpful, harmless, and
# concise". Judges prefer whichever reply is shown first (or second) more often than they should, so
# `OpenAIJudge` asks **both orders**: the model's reply as A and the baseline as B, then swapped. A pair is
# a win only when both orders agree; a verdict that flips with the order is a **tie**; an answer the parser
# cannot read is recorded as unparseable, never counted as a loss. Every answer is appended to a JSONL cache
# the moment it arrives, keyed by a hash of (judge model, template, prompt, both replies, order), so an
# interrupted run resumes without paying twice. The key is read from the environment by the `openai` client
# and is never printed.
#
# The rule on the two orders, on every combination:

# %%
for first_order in ("candidate", "baseline"):
    for second_order in ("candidate", "baseline"):
        print(f"A/B order says {first_order:9s}, B/A order says {second_order:9s} -> "
              f"{combine_verdicts(first_order, second_order)}")
print("\nThe dialogue template (the paper's question):\n" + DIALOGUE_TEMPLATE[:400] + " ...")

# %%
baselines = [row["chosen"] for row in heldout]  # the dataset's preferred responses
gpt4_records = {}
if USE_GPT4:
    judge = OpenAIJudge(model=JUDGE_MODEL, base_url=JUDGE_BASE_URL, cache_path=OUTPUT_DIR / "judge_cache.jsonl",
                        task="dialogue")
    for name, rows in samples.items():
        gpt4_records[name] = judge.judge_pairs(prompts, [row["response"] for row in rows], baselines)
    print(f"{judge.requests_made} API requests made (cached answers are not asked again)")
else:
    print("GPT-4 judge skipped: set OPENAI_API_KEY in the shell that starts Jupyter (never in the notebook), "
          "or OPENAI_BASE_URL for a local OpenAI-compatible server, and rerun this cell.")

# %% [markdown]
# ## 3. Offline judges
#
# **A reward function as judge.** The demo dataset was labelled by a known reward: the positive sentiment of
# the reply (VADER compound score, with degenerate repetitive text scored $-1$). `RewardJudge` scores both
# replies and the higher score wins; a difference of at most 0.05 is a tie. A reward has no position bias, so
# both orders agree by construction. On the demo data this judge *is* the ground truth that the preferences
# came from, so a win rate under it measures exactly what DPO and RPO were trained to improve.
#
# **The policy's implicit reward.** DPO and RPO train $r(x, y) = \beta \log \frac{\pi(y\mid x)}{\pi_{\text{ref}}(y\mid x)}$
# (paper Eq. 5, the quantity in every cell of RPO's contrast matrix). On held-out preference pairs, the
# share with $r(x, y^+) > r(x, y^-)$ is the implicit-reward accuracy, the held-out version of the training
# metric `rewards/accuracies`. It needs no sampling, only two forward passes per model.

# %%
sentiment_judge = RewardJudge(sentiment_score, margin=DEFAULT_TIE_MARGIN, name="demo_judge.sentiment_score")
offline_records = {name: sentiment_judge.judge_pairs(prompts, [row["response"] for row in rows], baselines)
                   for name, rows in samples.items()}
record = offline_records[first][0]
print({key: record[key] for key in ("winner", "verdict_candidate_first", "verdict_baseline_first", "judge")})

# %%
chosen = [row["chosen"] for row in heldout]
rejected = [row["rejected"] for row in heldout]


@lru_cache(maxsize=None)
def pair_logps(model_path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the held-out chosen and rejected responses under one model. Shape: (P,), (P,)."""
    model = load_model(model_path)
    return (response_logps(model, tokenizer, prompts, chosen, progress=False),
            response_logps(model, tokenizer, prompts, rejected, progress=False))


reference_path = policy_paths.get("SFT", models.BUNDLED_POLICY)  # DPO and RPO were trained against the SFT model
reference_chosen_logps, reference_rejected_logps = pair_logps(reference_path)
implicit_records = {}
for name, path in policy_paths.items():
    if name == "SFT":
        continue  # the reference itself: every implicit reward is 0
    policy_chosen_logps, policy_rejected_logps = pair_logps(path)
    accuracy = implicit_reward_accuracy(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                                        reference_rejected_logps, beta=BETA)
    implicit_records[name] = implicit_reward_records(policy_chosen_logps, policy_rejected_logps,
                                                     reference_chosen_logps, reference_rejected_logps, beta=BETA)
    print(f"{name}: implicit-reward accuracy {accuracy:.2f} on {len(prompts)} held-out pairs")
if SMOKE:
    print("(smoke mode: the policy is its own reference, so every reward is 0 and every pair a tie)")

# %% [markdown]
# ## 4. Win rates with intervals
#
# With $W$ wins, $T$ ties and $L$ losses over $n = W + T + L$ judged pairs (failed and unparseable pairs are
# counted separately, never as losses), the win rate is $\hat p = (W + T/2)/n$. Its 95 % **Wilson** interval,
# with $z = 1.96$,
#
# $$
# \frac{\hat p + \frac{z^2}{2n} \pm z \sqrt{\frac{\hat p (1-\hat p)}{n} + \frac{z^2}{4n^2}}}{1 + \frac{z^2}{n}},
# $$
#
# stays inside $[0, 1]$ and behaves for small $n$ and for rates near 0 or 1, where the textbook
# $\hat p \pm z\sqrt{\hat p(1-\hat p)/n}$ does not. With 40 prompts the interval is about $\pm 15$ points:
# differences between methods smaller than that are noise. The paper's Table 3 has the same shape: one row
# per method, the win rate against the preferred responses.

# %%
results = {f"{name} (sentiment judge)": records for name, records in offline_records.items()}
results.update({f"{name} (GPT-4)": records for name, records in gpt4_records.items()})
results.update({f"{name} (implicit reward)": records for name, records in implicit_records.items()})
rows = win_rate_table(results)
table = markdown_table(rows)
print(table)
(OUTPUT_DIR / "win_rates.md").write_text(table + "\n")

summary = win_rate(offline_records[first])  # check the interval against the formula above
z, n, p = 1.959963984540054, summary["n"], summary["win_rate"]
centre, spread = p + z * z / (2 * n), z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
torch.testing.assert_close(torch.tensor([summary["ci_low"], summary["ci_high"]], dtype=torch.float64),
                           torch.tensor([(centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n)],
                                        dtype=torch.float64))

# %%
figure_path = (paths.cache_dir() / "smoke-figures" if SMOKE else paths.figures_dir()) / "win_rates.png"
plot_win_rates(rows, path=figure_path, title="Win rate against the preferred responses (95% Wilson interval)");
print("saved", figure_path if not SMOKE else "(smoke run: figure kept out of figures/)")

# %% [markdown]
# ## 5. AlpacaEval 2.0
#
# AlpacaEval 2.0 (which the paper reports for its Mistral models) asks a GPT-4 Turbo annotator (the config
# `alpaca_eval_gpt4_turbo_fn`) to compare the model's output on each of 805 instructions with GPT-4 Turbo's
# own output, and reports two numbers:
#
# * the **win rate**, the share of instructions where the annotator prefers the model's output;
# * the **length-controlled (LC) win rate**. Judges like longer answers, so a raw win rate can be bought with
#   verbosity. AlpacaEval fits a logistic regression of the annotator's preference on the model's identity,
#   the (squashed) length difference between the two outputs and each instruction's difficulty, then reports
#   the win rate predicted with the length difference set to zero: how often the model would win if its
#   answers were as long as the reference's. The paper (February 2024) predates LC and reports the raw win
#   rate, so compare like with like.
#
# The export is `model_outputs.json`, a list of `{instruction, output, generator, dataset}`. The 805
# instructions come from `../shared/data` when it exists, else from the hub (`tatsu-lab/alpaca_eval`).

# %%
shared = paths.shared_data_dir()
local_prompts = shared / "alpaca_eval" / "alpaca_eval_prompts.json" if shared else None
if local_prompts is not None and local_prompts.exists():
    alpaca_rows = load_alpaca_eval_prompts(local_prompts)
elif SMOKE:  # no shared data and no internet in CI: a few demo prompts in the same format
    alpaca_rows = [{"instruction": prompt, "dataset": "demo"} for prompt in prompts]
else:
    alpaca_rows = load_alpaca_eval_prompts()  # the hub's evaluation set
alpaca_rows = list(alpaca_rows)[:ALPACA_PROMPTS]
print(f"{len(alpaca_rows)} AlpacaEval instructions")

generator_name, generator_path = list(policy_paths.items())[-1]  # RPO when trained, else the instruct model
generator = load_model(generator_path)
outputs = generate_alpaca_eval(generator, tokenizer, alpaca_rows, generator=f"rpo-tutorial-{generator_name}",
                               max_new_tokens=ALPACA_MAX_NEW_TOKENS, batch_size=8, progress=not SMOKE)
export_path = export_alpaca_eval(outputs, f"rpo-tutorial-{generator_name}", OUTPUT_DIR / "alpaca_eval" / "model_outputs.json")
print(f"wrote {export_path}; first entry: {outputs[0]}")

# %% [markdown]
# Then run the annotator (`pip install -e ".[alpaca]"`, a few dollars of OpenAI credit per model). The
# helper runs it only when the command is installed and `OPENAI_API_KEY` is set, and otherwise prints what
# to do. Its output folder gets `leaderboard.csv` with `win_rate` and `length_controlled_winrate`.

# %%
if SMOKE:
    print("smoke mode, not running:", " ".join(alpaca_eval_command(export_path, output_path=export_path.parent)))
else:
    run_alpaca_eval(export_path)
