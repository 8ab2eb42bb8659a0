# %% [markdown]
# # 06 · Evaluation: sampling, judges, win rates with intervals, AlpacaEval 2.0
#
# The paper evaluates its dialogue models by a **win rate**: for each test prompt, GPT-4 is shown the
# model's response and a baseline response and asked which is better; the win rate is the share of prompts
# the model wins. Here each preference-trained policy (DPO, RPO) is judged against the **SFT model it was
# trained from**, so the number says what preference training added. The paper's numbers for this kind of
# evaluation, on Anthropic HH with Mistral-7B and a GPT-4 judge, are **RPO-Paired 78.52 %** and **DPO 72.26 %**;
# section 4 puts them next to what you measure (a 135M model on the demo data will not come close, and the
# demo judge is not GPT-4: compare the *gap* between DPO and RPO, with its interval). This notebook:
#
# 1. Sampling responses from each trained policy (top-p 0.95, as the paper's policies)
# 2. The GPT-4 pairwise judge: both orders, ties, a resumable cache of paid calls
#    (runs only when `OPENAI_API_KEY` is set). Its default prompt *paraphrases* the paper's; the paper's own
#    prompts are in its Appendix D, and `JUDGE_TEMPLATE_FILE` / `JUDGE_ANSWER_PATTERN` below take them
# 3. Offline judges that need no API: a reward function (the demo dataset's judge) and the policy's own
#    implicit reward
# 4. The win-rate table and plot with 95 % intervals
# 5. AlpacaEval 2.0: the export of the 805 instructions, and the length-controlled win rate
#
# **Models.** By default the SFT, DPO and RPO (paired, embedding) models of `make demo`
# (`python -m rpo_lab demo`, the README's main job: `outputs/demo/{sft,dpo,rpo}/model`); notebook 04's study
# trains only the top layers and keeps no whole models. Set `MODEL_DIRS` to evaluate others (e.g. notebook 05's
# Mistral-7B runs, on a GPU). Without them the bundled SmolLM2-135M-Instruct is evaluated alone.
# `RPO_SMOKE=1` uses the bundled model on a handful of prompts with a few tokens.
#
# **Time.** Sampling is the slow part on a CPU. Each generating cell times its first batch, prints the estimate,
# and generates only what fits in its budget (`SAMPLING_TIME_BUDGET_MINUTES`, `ALPACA_TIME_BUDGET_MINUTES`,
# sized to the hardware below), saying so. Measured on 2 shared cores: 9 minutes with the three `make demo` models
# (load average 3), 4 minutes with the instruct model alone.

# %%
import os

import torch

SMOKE = os.environ.get("RPO_SMOKE") == "1"  # CI sets RPO_SMOKE=1; the default is the full evaluation
GPU = torch.cuda.is_available()

NUM_PROMPTS = 4 if SMOKE else None  # held-out demo prompts evaluated (None: all 40)
MAX_NEW_TOKENS = 12 if SMOKE else 64  # response length when sampling on the demo prompts
SAMPLE_BATCH_SIZE = 8  # prompts per generate() call on the demo prompts
SAMPLING_TIME_BUDGET_MINUTES = None if GPU or SMOKE else 4  # section 1, all models; None: no limit
ALPACA_PROMPTS = 3 if SMOKE else None  # AlpacaEval instructions exported (None: all 805)
ALPACA_MAX_NEW_TOKENS = 8 if SMOKE else 512
ALPACA_BATCH_SIZE = 8 if GPU else 4  # instructions per generate() call
ALPACA_TIME_BUDGET_MINUTES = 5 if GPU else 3  # section 5 stops before a batch that would pass it; None: no limit
JUDGE_TEMPLATE_FILE = None  # a text file with {prompt}, {response_a}, {response_b} (e.g. the paper's Appendix D)
JUDGE_ANSWER_PATTERN = None  # its answer regex, first group = the choice, e.g. r"Preferred:\s*Response\s*([12])"
JUDGE_MODEL = "gpt-4-0613"  # the paper's judge; any chat model of an OpenAI-compatible server works
JUDGE_BASE_URL = os.environ.get("OPENAI_BASE_URL")  # e.g. a local vLLM server; None: api.openai.com
USE_GPT4 = bool(os.environ.get("OPENAI_API_KEY")) and not SMOKE  # paid calls only in a real run, with a key
BETA = 0.1  # the beta the policies were trained with (implicit reward)

# %%
import math
import time
from functools import lru_cache

from transformers.utils import logging as transformers_logging

from rpo_tutorial import models, paths
from rpo_tutorial.evaluation.alpaca_eval import (
    alpaca_eval_command,
    export_alpaca_eval,
    generate_alpaca_eval,
    run_alpaca_eval,
)
from rpo_tutorial.data import load_alpaca_eval_prompts
from rpo_tutorial.data.demo import load_demo
from rpo_tutorial.data.jsonl import write_jsonl
from rpo_tutorial.data.sentiment import DEFAULT_TIE_MARGIN, sentiment_score
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
from rpo_tutorial.training.threads import choose_num_threads
from rpo_lab.hardware import choose_precision, detect_device
from rpo_lab.notebook import notice  # a styled note instead of a traceback

OUTPUT_DIR = paths.REPO_ROOT / "outputs" / ("06_smoke" if SMOKE else "06_evaluation")  # outputs/ is git-ignored
OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
OUTPUTS = paths.REPO_ROOT / "outputs"
DEMO_MODELS = {name: OUTPUTS / "demo" / folder / "model"  # what `make demo` saves
               for name, folder in (("SFT", "sft"), ("DPO", "dpo"), ("RPO", "rpo"))}
MODEL_DIRS = DEMO_MODELS if all((path / "config.json").is_file() for path in DEMO_MODELS.values()) else {}


DEVICE = detect_device()
PRECISION = choose_precision(DEVICE)  # set for this hardware: bf16 on an A100 / L4, fp16 on a T4, fp32 on a CPU
DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[PRECISION]


@lru_cache(maxsize=2)
def load_model(path: str) -> torch.nn.Module:
    """A policy in eval mode on this notebook's device and precision, loaded once (the two most recent kept)."""
    return models.load_policy(path, dtype=DTYPE).to(DEVICE.kind).eval()


def tune_threads() -> int:
    """Torch CPU threads for the next cell: every core when idle, fewer when other processes are busy.

    On a busy 2-core machine two threads sampled ~9x slower than one (they wait for each other).
    """
    if not GPU:
        torch.set_num_threads(choose_num_threads(own_threads=torch.get_num_threads() if cells_busy else 0))
    return torch.get_num_threads()


transformers_logging.set_verbosity_error()  # no weight-loading bars or tokenizer notices in the cells
transformers_logging.disable_progress_bar()
PAPER_WIN_RATES = {"DPO": 72.26, "RPO": 78.52}  # %, the paper: Anthropic HH, Mistral-7B, GPT-4 judge (RPO-Paired)
samples, gpt4_records, offline_records, implicit_records = {}, {}, {}, {}  # filled section by section
prompt_limit = None  # set by section 1 when its budget allows fewer prompts; kept on a rerun
alpaca_outputs = []  # section 5's generations, batch by batch: an interrupted run keeps what finished
ALPACA_EXPORT = OUTPUT_DIR / "alpaca_eval" / "model_outputs.json"
cells_busy = False  # True once a cell has kept this process's threads busy (they are then part of the load)
print(f"SMOKE={SMOKE}; {DEVICE.name}, {PRECISION} (inference only: no checkpointing to choose); "
      f"{'GPU' if GPU else f'{tune_threads()} torch thread(s) at load {os.getloadavg()[0]:.1f}'}; "
      f"GPT-4 judge: {'on' if USE_GPT4 else 'off (no OPENAI_API_KEY, or smoke mode)'}")

# %% [markdown]
# ## 1. Sampling
#
# `generate_responses` renders each prompt exactly as training did (the chat template), pads the batch on
# the left, and samples with temperature 1 and nucleus top-p 0.95, the paper's policy sampling (its
# "temperature 0" is the *judge's* setting). A response stops at EOS or where the model starts a next user
# turn. Every row records its settings, so a table of results can always say how it was sampled.
#
# The prompts are the demo dataset's held-out prompts. The cell times the first batch, prints the estimate for
# every model, and keeps only as many prompts as fit in `SAMPLING_TIME_BUDGET_MINUTES` (every model gets the same
# prompts, so the judges compare like with like). Each model's samples are written to a JSONL file, and the cell
# fills `samples` model by model, so an interrupted run leaves the finished models' samples usable and the later
# cells say what is missing instead of failing.

# %%
heldout = load_demo("heldout")[:NUM_PROMPTS][:prompt_limit]
prompts = [row["prompt"] for row in heldout]
if SMOKE or not MODEL_DIRS:
    if not SMOKE:
        notice(f"No trained models in `{OUTPUTS / 'demo'}`: run `make demo` (`python -m rpo_lab demo`) first "
               "to compare DPO and RPO. Evaluating the bundled instruct model alone.")
    policy_paths = {"instruct": models.BUNDLED_POLICY}
else:
    policy_paths = {name: str(path) for name, path in MODEL_DIRS.items()}
    print("evaluating", policy_paths)
tokenizer = models.load_tokenizer(next(iter(policy_paths.values())))
BASELINE = "SFT" if "SFT" in policy_paths else None  # None: no SFT model, judge against the chosen responses


def sample(policy: torch.nn.Module, name: str, first_batch: int = 0, last_batch: int | None = None) -> list[dict]:
    """Responses of one model to the prompts of batches ``first_batch`` to ``last_batch`` (batch b is seeded b)."""
    end = None if last_batch is None else last_batch * SAMPLE_BATCH_SIZE
    rows = generate_responses(policy, tokenizer, prompts[first_batch * SAMPLE_BATCH_SIZE:end],
                              max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, top_p=0.95,
                              batch_size=SAMPLE_BATCH_SIZE, seed=first_batch, model_name=name, progress=False)
    return [dict(row, settings=dict(row["settings"], seed=0)) for row in rows]  # as one call with seed 0


pending = [name for name in policy_paths if name not in samples]  # a rerun skips the models already done
print(f"{len(prompts)} prompts x {len(pending)} models x up to {MAX_NEW_TOKENS} new tokens, "
      f"{tune_threads()} thread(s)")
cells_busy = True
for name in pending:
    policy = load_model(policy_paths[name])
    if samples or len(prompts) <= SAMPLE_BATCH_SIZE:  # sized already (or nothing to size)
        rows = sample(policy, name)
    else:  # the first model of a fresh run: time its first batch, then size every model's prompts to the budget
        start = time.perf_counter()
        rows = sample(policy, name, last_batch=1)
        batch_seconds = time.perf_counter() - start
        batches = math.ceil(len(prompts) / SAMPLE_BATCH_SIZE)
        needed_minutes = batch_seconds * (batches * len(pending) - 1) / 60
        print(f"first batch {batch_seconds:.0f} s: the rest needs about {needed_minutes:.1f} min")
        if SAMPLING_TIME_BUDGET_MINUTES is not None and needed_minutes > SAMPLING_TIME_BUDGET_MINUTES:
            affordable = max(1, int((SAMPLING_TIME_BUDGET_MINUTES * 60 / batch_seconds + 1) / len(pending)))
            prompt_limit = min(len(prompts), affordable * SAMPLE_BATCH_SIZE)  # the same prompts for every model
            notice(f"**Sampling all {len(prompts)} prompts would take about {needed_minutes:.0f} more min on this "
                   f"{'GPU' if GPU else 'CPU'}**, more than `SAMPLING_TIME_BUDGET_MINUTES = "
                   f"{SAMPLING_TIME_BUDGET_MINUTES}`. Sampling the first {prompt_limit} for every model (wider "
                   "intervals below); set the budget to `None` for all of them.")
            heldout, prompts = heldout[:prompt_limit], prompts[:prompt_limit]
        rows += sample(policy, name, first_batch=1) if len(prompts) > SAMPLE_BATCH_SIZE else []
    write_jsonl(OUTPUT_DIR / f"samples_{name}.jsonl", rows)
    samples[name] = rows
    print(f"{name}: {len(rows)} responses")
for name, rows in samples.items():
    print(f"\n[{name}] {rows[0]['prompt']}\n  -> {rows[0]['response']!r} ({rows[0]['stop_reason']})")
print("\nsettings:", next(iter(samples.values()))[0]["settings"])

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
print("\nThe default dialogue template (a paraphrase of the paper's Appendix D prompt, not its text):\n"
      + DIALOGUE_TEMPLATE[:400] + " ...")

# %%
if BASELINE in samples:
    baselines = [row["response"] for row in samples[BASELINE]]  # the SFT model's samples
    baseline_name = "the SFT model's samples"
else:
    baselines = [row["chosen"] for row in heldout]  # no SFT model: the dataset's preferred responses
    baseline_name = "the preferred (chosen) responses"
candidates = {name: rows for name, rows in samples.items() if name != BASELINE}
if len(candidates) < len(policy_paths) - (BASELINE is not None):
    notice(f"Only {sorted(samples)} have samples (section 1 was interrupted?): rerun section 1 to finish.")
print(f"judging {sorted(candidates)} against {baseline_name}")
if USE_GPT4:
    from rpo_tutorial.evaluation.prompts import load_template

    template = load_template(JUDGE_TEMPLATE_FILE) if JUDGE_TEMPLATE_FILE else None
    judge = OpenAIJudge(model=JUDGE_MODEL, base_url=JUDGE_BASE_URL, cache_path=OUTPUT_DIR / "judge_cache.jsonl",
                        task="dialogue", template=template, answer_pattern=JUDGE_ANSWER_PATTERN)
    for name, rows in candidates.items():
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
                   for name, rows in candidates.items()}
for name, records in offline_records.items():
    print(name, {key: records[0][key] for key in ("winner", "verdict_candidate_first", "verdict_baseline_first")})

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
# differences between methods smaller than that are noise. The implicit-reward accuracy is not a win rate
# (no sampling, no judge) and gets its own table.

# %%
judged = {f"{name} (sentiment judge)": records for name, records in offline_records.items()}
judged.update({f"{name} (GPT-4)": records for name, records in gpt4_records.items()})
rows = win_rate_table(judged) if judged else []
table = markdown_table(rows)
print(f"win rate against {baseline_name}:\n{table}\n")
print("implicit-reward accuracy on held-out preference pairs:\n"
      + markdown_table(win_rate_table({f"{name}": records for name, records in implicit_records.items()})))
(OUTPUT_DIR / "win_rates.md").write_text(f"Win rate against {baseline_name}\n\n{table}\n")

print("\n| method | the paper (HH, Mistral-7B, GPT-4) | here, sentiment judge | here, GPT-4 |\n|---|---|---|---|")
for method, paper in PAPER_WIN_RATES.items():
    measured = {judge_name: win_rate(records[method])["win_rate"] if method in records else None
                for judge_name, records in (("sentiment", offline_records), ("gpt4", gpt4_records))}
    cells = [f"{100 * value:.1f} %" if value is not None else "-" for value in measured.values()]
    print(f"| {method} | {paper:.2f} % | {cells[0]} | {cells[1]} |")

if not offline_records:
    notice("No win rates yet: section 1 has no candidate samples. Run section 1, then this section again.")
else:
    summary = win_rate(next(iter(offline_records.values())))  # check the interval against the formula above
    z, n, p = 1.959963984540054, summary["n"], summary["win_rate"]
    centre, spread = p + z * z / (2 * n), z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    torch.testing.assert_close(torch.tensor([summary["ci_low"], summary["ci_high"]], dtype=torch.float64),
                               torch.tensor([(centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n)],
                                            dtype=torch.float64))

# %%
figure_path = (paths.cache_dir() / "smoke-figures" if SMOKE else paths.figures_dir()) / "win_rates.png"
if rows:
    plot_win_rates(rows, path=figure_path, title=f"Win rate against {baseline_name} (95% Wilson interval)");
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
    try:
        alpaca_rows = load_alpaca_eval_prompts()  # the hub's evaluation set
    except OSError as error:  # no ../shared/data and no Hugging Face hub (offline): a clean stop, not a traceback
        notice(f"The 805 AlpacaEval instructions could not be loaded ({type(error).__name__}): there is no "
               "`../shared/data/alpaca_eval` and the Hugging Face hub cannot be reached from here. Exporting the "
               "held-out demo prompts in the same format instead: a check of the pipeline, **not** an AlpacaEval "
               "result.", kind="stop")
        alpaca_rows = [{"instruction": prompt, "dataset": "demo"} for prompt in prompts]
alpaca_rows = list(alpaca_rows)[:ALPACA_PROMPTS]
print(f"{len(alpaca_rows)} AlpacaEval instructions")

generator_name, generator_path = list(policy_paths.items())[-1]  # RPO when trained, else the instruct model
generator, generator_label = load_model(generator_path), f"rpo-tutorial-{generator_name}"
if alpaca_outputs and alpaca_outputs[0]["generator"] != generator_label:
    alpaca_outputs = []  # another model's outputs, from an earlier run of this cell
budget_seconds = None if ALPACA_TIME_BUDGET_MINUTES is None else 60 * ALPACA_TIME_BUDGET_MINUTES
print(f"{generator_label}: batches of {ALPACA_BATCH_SIZE}, up to {ALPACA_MAX_NEW_TOKENS} new tokens, "
      f"{'GPU' if GPU else f'{tune_threads()} CPU thread(s)'}; budget {ALPACA_TIME_BUDGET_MINUTES} min")
start, slowest_batch, stopped = time.perf_counter(), None, False
try:
    while len(alpaca_outputs) < len(alpaca_rows):
        if slowest_batch is not None and budget_seconds is not None \
                and time.perf_counter() - start + slowest_batch > budget_seconds:
            stopped = True  # the next batch would pass the budget
            break
        done, began = len(alpaca_outputs), time.perf_counter()
        alpaca_outputs += generate_alpaca_eval(  # batch b seeded b: the same outputs as one call with seed 0
            generator, tokenizer, alpaca_rows[done:done + ALPACA_BATCH_SIZE], generator=generator_label,
            max_new_tokens=ALPACA_MAX_NEW_TOKENS, batch_size=ALPACA_BATCH_SIZE, seed=done // ALPACA_BATCH_SIZE,
            progress=False)
        seconds = time.perf_counter() - began
        if slowest_batch is None:
            per_instruction = seconds / (len(alpaca_outputs) - done)
            needed_minutes = per_instruction * (len(alpaca_rows) - done) / 60
            print(f"first batch {seconds:.0f} s, {per_instruction:.1f} s per instruction: all {len(alpaca_rows)} "
                  f"would take about {needed_minutes:.0f} min")
            if budget_seconds is not None and 60 * needed_minutes > budget_seconds:
                notice(f"**The full AlpacaEval export needs about {needed_minutes / 60:.1f} h on this "
                       f"{'GPU' if GPU else 'CPU'}**, more than `ALPACA_TIME_BUDGET_MINUTES = "
                       f"{ALPACA_TIME_BUDGET_MINUTES}`. Generating only what fits: enough to check the pipeline, "
                       "**not** a valid AlpacaEval result (the leaderboard needs all 805). For the real export use a "
                       "GPU (a T4 does 805 x 512 tokens of a 135M model in well under an hour) or set "
                       "`ALPACA_TIME_BUDGET_MINUTES = None`.")
        slowest_batch = max(slowest_batch or 0.0, seconds)
finally:  # also after an interruption: export what finished
    if alpaca_outputs:
        export_alpaca_eval(alpaca_outputs, generator_label, ALPACA_EXPORT)
print(f"generated {len(alpaca_outputs)} of {len(alpaca_rows)} in {(time.perf_counter() - start) / 60:.1f} min"
      + (" (stopped at the time budget)" if stopped else ""))
first = alpaca_outputs[0]
print(f"wrote {ALPACA_EXPORT}; first entry: {dict(first, output=first['output'][:300] + ' ...')}")

# %% [markdown]
# Then run the annotator (`pip install -e ".[alpaca]"`, a few dollars of OpenAI credit per model). The
# helper runs it only when the command is installed and `OPENAI_API_KEY` is set, and otherwise prints what
# to do. Its output folder gets `leaderboard.csv` with `win_rate` and `length_controlled_winrate`.

# %%
command = " ".join(alpaca_eval_command(ALPACA_EXPORT, output_path=ALPACA_EXPORT.parent))
if SMOKE:
    print("smoke mode, not running:", command)
elif len(alpaca_outputs) < 805:
    notice(f"Not running the annotator on a partial export ({len(alpaca_outputs)} of 805 instructions). Command "
           f"for a full export: `{command}`")
else:
    run_alpaca_eval(ALPACA_EXPORT)
