# %% [markdown]
# # 01 · From Bradley-Terry to DPO, and what RPO has to assume
#
# Relative Preference Optimization (RPO; Yin et al., 2024, arXiv 2402.10958) is built on Direct
# Preference Optimization (DPO; Rafailov et al., 2023). This notebook derives DPO one step at a time,
# in the style of the Annotated Transformer: each equation is followed by the few lines of code that
# compute it, on numbers small enough to check by eye. The losses themselves live in the package
# (`rpo_tutorial/losses.py`); where we write a small teaching version here, we assert that it matches
# the package function.
#
# 1. Bradley-Terry: preferences from rewards
# 2. The KL-regularised objective and its optimal policy $\pi^*$
# 3. The implicit reward and the partition function $Z(x)$
# 4. The DPO loss: $Z(x)$ cancels within one prompt
# 5. Numeric check: the DPO gradient raises the chosen and lowers the rejected log-probability
# 6. Variants: conservative DPO, IPO and KTO
# 7. Across prompts: $Z(x)$ no longer cancels, and what RPO assumes (paper Eq. 13)
#
# Everything runs on a laptop CPU in seconds. The switch below makes CI runs smaller still.
#
# ## Who this tutorial is for, and what each notebook needs
#
# For readers who know PyTorch and the basics of fine-tuning language models, and want to understand RPO well
# enough to use it or to judge its claims: the derivation from DPO (01), the contrast matrix and its weights on
# real numbers (02, 03), a seeded comparison with DPO (04), the paper's full-size recipe (05), the evaluation (06),
# and the loss in your own trainer (07). No reinforcement-learning background is assumed; every equation is
# followed by the code that computes it, and every number comes from a run you can repeat.
#
# | notebook | CPU (real mode, 2 cores) | GPU | API key |
# |---|---|---|---|
# | 01 DPO derivation | under 1 min | no | no |
# | 02 contrast matrix | ~1-2 min | no | no |
# | 03 weighting strategies | ~1 min | no | no |
# | 04 small-scale training | ~7-8 min (the synthetic study: 8 seeds, both regimes) | no (the committed 24-seed study: `--preset synthetic`, ~40 min on 2 CPU cores) | no |
# | 05 Mistral-7B on 8 GPUs | stops with a message in seconds | 8 GPUs of >= 40 GB for the real run | no (the Hugging Face hub for the model) |
# | 06 evaluation | 4-10 min (offline judges, time budgets) | optional: faster sampling, the full AlpacaEval export | optional: `OPENAI_API_KEY` for the GPT-4 judge and AlpacaEval |
# | 07 RPO in your trainer | ~2 min (8 + 8 steps of SmolLM2-135M) | optional | no |
#
# The CPU minutes are wall-clock on the project's shared 2-core machine at load averages of 2-6 (the README gives
# each measurement with its load); an idle laptop is faster. Every long cell times its own first step and prints an estimate before
# it commits to the rest. Each notebook opens in Colab from its badge, and its first code cell installs the
# package there (and does nothing anywhere else).

# %%
import os

SMOKE = os.environ.get("RPO_SMOKE") == "1"  # CI sets RPO_SMOKE=1; the default is the full run

NUM_RESPONSES = 6  # size of the toy response space in sections 2-4 and 7
ASCENT_STEPS = 300 if SMOKE else 3000  # gradient ascent that re-discovers pi* numerically
SGD_STEPS = 1 if SMOKE else 5  # DPO steps on the tiny policy in section 5
BETA = 0.1  # the KL strength beta (the paper's default)

# %%
import copy
import math

import torch
import torch.nn.functional as F
from transformers.utils import logging as transformers_logging

from rpo_tutorial import models
from rpo_tutorial.losses import dpo_loss, ipo_loss, kto_loss
from rpo_tutorial.paths import cache_dir, figures_dir
from rpo_tutorial.plots.tutorial import plot_curves, plot_distributions, plt, save
from rpo_tutorial.data.collate import PreferenceCollator
from rpo_tutorial.models.logprobs import batch_sequence_logps
from rpo_tutorial.data.tokenization import tokenize_pair

transformers_logging.set_verbosity_error()  # no weight-loading bars or tokenizer notices in the cells
transformers_logging.disable_progress_bar()
torch.manual_seed(0)
FIGURES_DIR = cache_dir() / "smoke-figures" if SMOKE else figures_dir()  # smoke runs leave figures/ alone
torch.set_printoptions(precision=4, sci_mode=False)
print(f"SMOKE={SMOKE}, beta={BETA}; float32 on the CPU whatever the hardware (toy sizes: no mixed precision, "
      "no activation checkpointing)")

# %% [markdown]
# ## 1. Bradley-Terry: preferences from rewards
#
# Suppose a hidden reward $r^*(x, y)$ scores response $y$ to prompt $x$. The Bradley-Terry model says
# a person prefers $y_1$ to $y_2$ with probability
#
# $$
# p^*(y_1 \succ y_2 \mid x) \;=\; \frac{\exp r^*(x, y_1)}{\exp r^*(x, y_1) + \exp r^*(x, y_2)}
# \;=\; \sigma\big(r^*(x, y_1) - r^*(x, y_2)\big),
# $$
#
# and a reward model $r_\phi$ is fitted to preference pairs $(x, y_w, y_l)$ by maximum likelihood,
# $\mathcal{L}_R = -\mathbb{E}\,\log \sigma\big(r_\phi(x, y_w) - r_\phi(x, y_l)\big)$.
#
# Only differences of rewards *for the same prompt* enter. Adding any function of the prompt alone,
# $r(x, y) + f(x)$, leaves every probability unchanged: preference data cannot tell us how good a
# prompt's responses are in absolute terms. Keep this in mind for section 7.

# %%
def bradley_terry(reward_1: torch.Tensor, reward_2: torch.Tensor) -> torch.Tensor:
    """p(y_1 > y_2) = exp(r_1) / (exp(r_1) + exp(r_2))."""
    return torch.exp(reward_1) / (torch.exp(reward_1) + torch.exp(reward_2))


rewards = torch.tensor([1.0, 0.2, -0.5])  # r*(x, y) for three responses to one prompt
probability = bradley_terry(rewards[0], rewards[1])
torch.testing.assert_close(probability, torch.sigmoid(rewards[0] - rewards[1]))  # the sigmoid form
shifted = rewards + 3.0  # add f(x) = 3 to every response of this prompt
torch.testing.assert_close(bradley_terry(shifted[0], shifted[1]), probability)  # nothing changes
print(f"p(y_1 > y_2) = {probability:.4f}; with rewards shifted by f(x) = 3: "
      f"{bradley_terry(shifted[0], shifted[1]):.4f}")

# %% [markdown]
# ## 2. The KL-regularised objective and its optimal policy
#
# RLHF maximises the reward while staying close to a reference policy $\pi_{\text{ref}}$ (the SFT
# model), with strength $\beta$:
#
# $$
# \max_{\pi}\; \mathbb{E}_{y \sim \pi(\cdot \mid x)}\big[r(x, y)\big]
# \;-\; \beta\, \mathrm{KL}\big(\pi(\cdot \mid x)\,\|\,\pi_{\text{ref}}(\cdot \mid x)\big).
# $$
#
# For each prompt this has a closed-form maximiser, a reweighting of the reference policy:
#
# $$
# \pi^*(y \mid x) = \frac{1}{Z(x)}\, \pi_{\text{ref}}(y \mid x)\, \exp\!\big(r(x, y) / \beta\big),
# \qquad
# Z(x) = \sum_{y} \pi_{\text{ref}}(y \mid x)\, \exp\!\big(r(x, y) / \beta\big).
# $$
#
# Why: substituting $\pi^*$ rewrites the objective as
# $\beta \log Z(x) - \beta\,\mathrm{KL}(\pi \,\|\, \pi^*)$, and a KL divergence is smallest (zero)
# exactly at $\pi = \pi^*$. So the maximum value is $\beta \log Z(x)$.
#
# We check all of this on a toy prompt with six possible responses: compute $\pi^*$ from the formula,
# then find the maximiser again by plain gradient ascent over softmax logits, and compare.

# %%
def rlhf_objective(policy: torch.Tensor, reference: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """E_{y ~ pi}[r(y)] - beta KL(pi || pi_ref) for one prompt over a finite set of responses."""
    return (policy * rewards).sum() - beta * (policy * (policy.log() - reference.log())).sum()


def optimal_policy(reference: torch.Tensor, rewards: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """pi*(y) = pi_ref(y) exp(r(y) / beta) / Z and log Z, computed in log space for stability."""
    unnormalised = reference.log() + rewards / beta  # log pi_ref + r / beta
    log_partition = torch.logsumexp(unnormalised, dim=0)  # log Z
    return torch.exp(unnormalised - log_partition), log_partition


toy_reference = torch.softmax(torch.randn(NUM_RESPONSES), dim=0)  # pi_ref(y | x)
toy_rewards = 0.3 * torch.randn(NUM_RESPONSES)  # r(x, y), on the scale of beta
toy_optimal, toy_log_partition = optimal_policy(toy_reference, toy_rewards, BETA)

logits = torch.zeros(NUM_RESPONSES, requires_grad=True)  # start from the uniform policy
optimizer = torch.optim.Adam([logits], lr=0.05)
for _ in range(ASCENT_STEPS):
    loss = -rlhf_objective(torch.softmax(logits, dim=0), toy_reference, toy_rewards, BETA)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
found = torch.softmax(logits.detach(), dim=0)

best = rlhf_objective(toy_optimal, toy_reference, toy_rewards, BETA)
print(f"objective at pi*: {best:.5f}   beta log Z(x): {BETA * toy_log_partition:.5f}")
print(f"objective found by {ASCENT_STEPS} ascent steps: {rlhf_objective(found, toy_reference, toy_rewards, BETA):.5f}")
print(f"max |pi_ascent - pi*| = {(found - toy_optimal).abs().max():.2e}")
torch.testing.assert_close(best, BETA * toy_log_partition)  # the maximum value is beta log Z(x)
torch.testing.assert_close(found, toy_optimal, atol=5e-3 if SMOKE else 1e-4, rtol=0)

labels = [f"y{k} (r={r:+.2f})" for k, r in enumerate(toy_rewards.tolist())]
plot_distributions({"pi_ref": toy_reference, "pi* (formula)": toy_optimal, "pi (gradient ascent)": found}, labels,
                   title=f"The optimal policy reweights pi_ref by exp(r / beta), beta = {BETA}");

# %% [markdown]
# ## 3. The implicit reward and the partition function
#
# Take the log of the optimal policy and solve for the reward:
#
# $$
# r(x, y) \;=\; \beta \log \frac{\pi^*(y \mid x)}{\pi_{\text{ref}}(y \mid x)} \;+\; \beta \log Z(x).
# $$
#
# Any policy $\pi$ therefore defines an *implicit reward* $\beta \log \pi(y \mid x) / \pi_{\text{ref}}(y \mid x)$,
# which equals the true reward up to the per-prompt constant $\beta \log Z(x)$. For a language model
# $Z(x)$ is a sum over every possible response (with a 49,152-token vocabulary, $49152^{L}$ of them at
# length $L$), so it can never be computed. DPO's trick is to never need it.

# %%
implicit_reward = BETA * (toy_optimal.log() - toy_reference.log())  # beta log pi* / pi_ref
torch.testing.assert_close(implicit_reward + BETA * toy_log_partition, toy_rewards)
print("implicit reward + beta log Z(x):", implicit_reward + BETA * toy_log_partition)
print("true reward r(x, y):            ", toy_rewards)
print(f"number of 20-token responses with SmolLM2's vocabulary: 10^{20 * math.log10(49152):.0f}")

# %% [markdown]
# ## 4. The DPO loss: $Z(x)$ cancels within one prompt
#
# Plug the implicit reward into Bradley-Terry. Both responses answer the *same* prompt $x$, so the two
# $\beta \log Z(x)$ terms cancel in the difference:
#
# $$
# p(y_w \succ y_l \mid x) = \sigma\Big(\beta \log \frac{\pi(y_w \mid x)}{\pi_{\text{ref}}(y_w \mid x)}
# - \beta \log \frac{\pi(y_l \mid x)}{\pi_{\text{ref}}(y_l \mid x)}\Big).
# $$
#
# Maximum likelihood on preference pairs gives the DPO loss (paper Eq. 4; the implicit reward
# $\beta \log \pi / \pi_{\text{ref}}$ is the paper's Eq. 5). With the log-ratios
# $c = \log \pi(y_w \mid x) - \log \pi_{\text{ref}}(y_w \mid x)$ and
# $r = \log \pi(y_l \mid x) - \log \pi_{\text{ref}}(y_l \mid x)$ and the margin $h = c - r$:
#
# $$
# \mathcal{L}_{\text{DPO}} = -\,\mathbb{E}_{(x, y_w, y_l)}\, \log \sigma(\beta h).
# $$
#
# The policy is now trained directly as a classifier of preference pairs, with no reward model and no
# sampling. The inputs are four numbers per pair: summed response log-probabilities under the policy
# and the reference. Below, a teaching version is checked against `rpo_tutorial.losses.dpo_loss`, and
# the toy shows that the implicit rewards of $\pi^*$ give the true Bradley-Terry probabilities even
# though we never computed $Z(x)$ in the loss.

# %%
def dpo_loss_teaching(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta):
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)  # h = c - r
    return -F.logsigmoid(beta * margin)  # -log sigma(beta h), paper Eq. 4


logps = [-torch.rand(8) * 40 for _ in range(4)]  # summed log-probs of 8 pairs, as a model would give
package_losses, chosen_rewards, rejected_rewards = dpo_loss(*logps, beta=BETA)
torch.testing.assert_close(package_losses, dpo_loss_teaching(*logps, beta=BETA))
torch.testing.assert_close(chosen_rewards, BETA * (logps[0] - logps[2]))  # rewards are beta times log-ratios
print("DPO losses of 8 random pairs:", package_losses)

# In the toy: implicit-reward Bradley-Terry probabilities of pi* equal the true ones, Z(x) having cancelled.
implicit_p = torch.sigmoid(implicit_reward[:, None] - implicit_reward[None, :])  # (K, 1) - (1, K) -> (K, K)
true_p = torch.sigmoid(toy_rewards[:, None] - toy_rewards[None, :])  # (K, K)
torch.testing.assert_close(implicit_p, true_p)
print(f"max |p_implicit - p_true| over all {NUM_RESPONSES ** 2} ordered pairs: {(implicit_p - true_p).abs().max():.2e}")

# %% [markdown]
# ## 5. Numeric check: what the DPO gradient does
#
# Differentiating the loss gives
#
# $$
# \nabla_\theta \mathcal{L}_{\text{DPO}} = -\beta\, \sigma(-\beta h)\,
# \big[\nabla_\theta \log \pi(y_w \mid x) - \nabla_\theta \log \pi(y_l \mid x)\big].
# $$
#
# A gradient step therefore raises the chosen log-probability and lowers the rejected one, weighted by
# $\sigma(-\beta h)$: strongly while the pair is misordered, weakly once it is ordered. First on free
# log-probability tensors, where the derivative is exactly this formula:

# %%
policy_chosen = logps[0].clone().requires_grad_(True)
policy_rejected = logps[1].clone().requires_grad_(True)
losses, _, _ = dpo_loss(policy_chosen, policy_rejected, logps[2], logps[3], beta=BETA)
losses.mean().backward()
margin = (logps[0] - logps[2]) - (logps[1] - logps[3])
expected = -BETA * torch.sigmoid(-BETA * margin) / len(margin)  # d mean(loss) / d log pi(y_w)
torch.testing.assert_close(policy_chosen.grad, expected)
torch.testing.assert_close(policy_rejected.grad, -expected)
assert (policy_chosen.grad < 0).all() and (policy_rejected.grad > 0).all()
print("dL/d log pi(y_w):", policy_chosen.grad)
print("dL/d log pi(y_l):", policy_rejected.grad)

# %% [markdown]
# Now through a real network. We take a tiny randomly initialised Llama (`models.tiny_model`, two
# layers, hidden size 64) with SmolLM2's tokenizer, tokenize one real preference pair with the
# package's `tokenize_pair` (labels mask the prompt, so only response tokens are scored), freeze a copy
# as $\pi_{\text{ref}}$, and take DPO steps with plain SGD. The log-probabilities are sums over the
# response tokens, computed by `batch_sequence_logps`.

# %%
tokenizer = models.load_tokenizer()
pair = {
    "prompt": "Explain the process of photosynthesis.",
    "chosen": "Plants capture sunlight with chlorophyll and use its energy to turn carbon dioxide and water "
    "into glucose, releasing oxygen.",
    "rejected": "It is when animals sleep through the winter months.",
}
example = tokenize_pair(pair, tokenizer, max_prompt_length=64, max_length=128)
batch = PreferenceCollator(tokenizer.pad_token_id)([example])
print("batch input_ids", tuple(batch["input_ids"].shape), "(row 0: chosen, row 1: rejected)")

policy = models.tiny_model(vocab_size=len(tokenizer), seed=0)
reference = copy.deepcopy(policy).eval().requires_grad_(False)
with torch.no_grad():
    reference_logps = batch_sequence_logps(reference, batch)  # (2,): chosen, rejected
optimizer = torch.optim.SGD(policy.parameters(), lr=0.01)
history = [reference_logps]
for step in range(SGD_STEPS):
    policy_logps = batch_sequence_logps(policy, batch)  # (2,)
    losses, _, _ = dpo_loss(policy_logps[:1], policy_logps[1:], reference_logps[:1], reference_logps[1:], beta=BETA)
    optimizer.zero_grad()
    losses.mean().backward()
    optimizer.step()
    with torch.no_grad():
        history.append(batch_sequence_logps(policy, batch))
    print(f"step {step + 1}: loss before the step {losses.item():.4f}, "
          f"log pi(y_w) {history[-1][0]:.2f} ({history[-1][0] - history[-2][0]:+.2f}), "
          f"log pi(y_l) {history[-1][1]:.2f} ({history[-1][1] - history[-2][1]:+.2f})")
assert history[1][0] > history[0][0], "one DPO step must raise the chosen log-prob"
assert history[1][1] < history[0][1], "one DPO step must lower the rejected log-prob"

# %% [markdown]
# On a real, pretrained model the picture is often less tidy: DPO only constrains the *margin*, so both
# log-probabilities frequently fall during training, the rejected one faster. Notebook 04 shows this
# in real training curves.
#
# ## 6. Variants: conservative DPO, IPO and KTO
#
# **Conservative DPO (cDPO)** assumes each label is flipped with probability $\varepsilon$ and
# minimises the expected loss, $-(1-\varepsilon)\log\sigma(\beta h) - \varepsilon \log\sigma(-\beta h)$.
# It no longer rewards ever-larger margins: its minimum is at $\beta h = \log\frac{1-\varepsilon}{\varepsilon}$.
#
# **IPO** (paper Eq. 6) regresses the margin onto a fixed target: $\big(h - \tfrac{1}{2\tau}\big)^2$.
#
# **KTO** (paper Eqs. 7-9) needs no pairs at all. Each response is desirable or undesirable on its own;
# its value is $\sigma\big(\beta (c - z_{\text{ref}})\big)$ if desirable and
# $\sigma\big(\beta (z_{\text{ref}} - r)\big)$ if undesirable, and the loss is
# $w(y)\,(1 - \text{value})$. The reference point $z_{\text{ref}}$ is a (detached) estimate of
# $\mathrm{KL}(\pi \,\|\, \pi_{\text{ref}})$ that the caller supplies. RPO's unpaired mode solves the same
# problem differently: it builds contrasts between desirable and undesirable responses of *different*
# prompts (notebook 02).
#
# Below, each package loss is evaluated on a grid of margins (policy chosen log-prob $= h$, everything
# else 0), and the minima are checked against the formulas above.

# %%
margins = torch.linspace(-60.0, 100.0, 801)  # h = c - r in nats
zeros = torch.zeros_like(margins)
LABEL_SMOOTHING, IPO_TAU = 0.1, 0.05
curves = {
    f"DPO, beta={BETA}": dpo_loss(margins, zeros, zeros, zeros, beta=BETA)[0],
    f"cDPO, eps={LABEL_SMOOTHING}": dpo_loss(margins, zeros, zeros, zeros, beta=BETA,
                                            label_smoothing=LABEL_SMOOTHING)[0],
    f"IPO, tau={IPO_TAU} (scaled by 1/100)": ipo_loss(margins, zeros, zeros, zeros, tau=IPO_TAU)[0] / 100.0,
}
cdpo_minimum = margins[curves[f"cDPO, eps={LABEL_SMOOTHING}"].argmin()]
ipo_minimum = margins[curves[f"IPO, tau={IPO_TAU} (scaled by 1/100)"].argmin()]
step = (margins[1] - margins[0]).item()
assert abs(cdpo_minimum - math.log((1 - LABEL_SMOOTHING) / LABEL_SMOOTHING) / BETA) <= step
assert abs(ipo_minimum - 1 / (2 * IPO_TAU)) <= step
print(f"cDPO minimum at h = {cdpo_minimum:.1f} (formula {math.log(9) / BETA:.1f}); "
      f"IPO minimum at h = {ipo_minimum:.1f} (formula {1 / (2 * IPO_TAU):.1f})")

log_ratios = torch.linspace(-60.0, 60.0, 481)  # c (desirable) or r (undesirable)
Z_REF = 5.0  # an example KL estimate
kto_losses, _, _ = kto_loss(log_ratios, log_ratios, torch.zeros_like(log_ratios), torch.zeros_like(log_ratios),
                            kl_reference_point=Z_REF, beta=BETA)
kto_curves = {"desirable: 1 - sigma(beta (c - z_ref))": kto_losses[: len(log_ratios)],
              "undesirable: 1 - sigma(beta (z_ref - r))": kto_losses[len(log_ratios):]}

figure, axes = plt.subplots(1, 2, figsize=(12, 4))
plot_curves(margins, curves, "margin h = c - r (nats)", "loss", "Paired losses against the margin", ax=axes[0])
axes[0].set_ylim(0.0, 8.0)
for minimum, style, name in ((cdpo_minimum, ":", "cDPO minimum"), (ipo_minimum, "-.", "IPO minimum")):
    axes[0].axvline(minimum, color="black", linestyle=style, linewidth=1, label=f"{name}, h = {minimum:.0f}")
axes[0].legend(fontsize=8)
plot_curves(log_ratios, kto_curves, "log-ratio log pi/pi_ref of the response (nats)", "loss",
            f"KTO, z_ref = {Z_REF}", ax=axes[1])
axes[1].axvline(Z_REF, color="black", linestyle=":", linewidth=1, label=f"z_ref = {Z_REF:.0f}")
axes[1].legend(fontsize=8)
save(figure, FIGURES_DIR / "loss_vs_margin.png");

# %% [markdown]
# ## 7. Across prompts: what RPO has to assume
#
# RPO contrasts a chosen response to prompt $x$ with a rejected response to a *different* prompt $x'$
# (notebook 02). Write the implicit rewards of both and subtract:
#
# $$
# \beta \log \frac{\pi(y_w \mid x)}{\pi_{\text{ref}}(y_w \mid x)}
# - \beta \log \frac{\pi(y_l \mid x')}{\pi_{\text{ref}}(y_l \mid x')}
# \;=\; r(x, y_w) - r(x', y_l) \;-\; \beta\big(\log Z(x) - \log Z(x')\big).
# $$
#
# The partition functions no longer cancel. RPO's contrast (paper Eq. 10) drops the last term, i.e.
# it assumes $\log Z(x) \approx \log Z(x')$ (paper Eq. 13). Two readings of what that means:
#
# * $\beta \log Z(x)$ is a soft maximum of the rewards available for prompt $x$ under $\pi_{\text{ref}}$,
#   a soft *value* of the prompt. What the contrast really compares is each response's reward relative to
#   its own prompt's value, $r(x, y) - \beta \log Z(x)$ (an advantage).
# * Because Bradley-Terry ignores per-prompt offsets $f(x)$ (section 1), a reward offset of $\delta$ on
#   one prompt moves $\beta \log Z$ by exactly $\delta$. So the assumption is "related prompts have
#   comparable reward levels", which is plausible for prompts about the same thing and doubtful for
#   unrelated ones. That is why RPO weights contrasts by prompt similarity (notebook 03): the
#   contrasts whose assumption is weakest get the least weight.
#
# The check below builds two toy prompts with the same reference policy and rewards that differ by a
# per-prompt offset $\delta$ plus some noise, and measures how far the cross-prompt contrast is from the
# true reward difference.

# %%
def cross_prompt_gap(offset: float, noise: float, generator: torch.Generator) -> tuple[float, float]:
    """(contrast - true reward difference, beta (log Z(x) - log Z(x'))) for y_w of x versus y_l of x'."""
    rewards_x = 0.3 * torch.randn(NUM_RESPONSES, generator=generator)
    rewards_x_prime = rewards_x + offset + noise * torch.randn(NUM_RESPONSES, generator=generator)
    optimal_x, log_z_x = optimal_policy(toy_reference, rewards_x, BETA)
    optimal_x_prime, log_z_x_prime = optimal_policy(toy_reference, rewards_x_prime, BETA)
    w, l = rewards_x.argmax(), rewards_x_prime.argmin()  # chosen y_w for x, rejected y_l for x'
    contrast = BETA * (optimal_x[w] / toy_reference[w]).log() - BETA * (optimal_x_prime[l] / toy_reference[l]).log()
    true_difference = rewards_x[w] - rewards_x_prime[l]
    return (contrast - true_difference).item(), (BETA * (log_z_x - log_z_x_prime)).item()


generator = torch.Generator().manual_seed(0)
print(" offset delta | noise | contrast - true difference | -beta (log Z(x) - log Z(x'))")
for offset, noise in [(0.0, 0.0), (0.0, 0.1), (0.5, 0.0), (-1.0, 0.0), (0.5, 0.3)]:
    gap, log_z_gap = cross_prompt_gap(offset, noise, generator)
    assert abs(gap + log_z_gap) < 1e-4  # the error is exactly the log-partition difference
    if noise == 0.0:
        assert abs(gap - offset) < 1e-4  # a pure offset delta moves beta log Z by delta
    print(f"{offset:13.1f} | {noise:5.1f} | {gap:26.4f} | {-log_z_gap:.4f}")

# %% [markdown]
# Within one prompt the gap is zero by construction (DPO's diagonal). Across prompts it equals
# $-\beta(\log Z(x) - \log Z(x'))$: zero when the prompts have the same reward level, and exactly the
# offset $\delta$ when one prompt's responses are all better. RPO accepts this error in exchange for
# many more contrasts per batch, and limits it by weighting.
#
# **Next:** notebook 02 builds the contrast matrix of all these cross-prompt comparisons from a real
# model's log-probabilities.
