# %% [markdown]
# # 03 · Weighting strategies: who is compared with whom, and how much
#
# RPO's contrast matrix (notebook 02) compares every chosen response $y_{w,i}$ with every rejected
# response $y_{l,j}$ in the batch, including responses to unrelated prompts. A weight matrix $w$
# decides how much each contrast counts. This notebook computes every weighting strategy on real
# sentence embeddings of related and unrelated prompts (the bundled all-MiniLM-L6-v2), then shows, with
# numbers, every place where the paper and the official code differ.
#
# 1. Real prompt embeddings and their distances (paper Eq. 11)
# 2. Embedding weights across the temperature $\tau$ (paper Eq. 12; the values of the paper's Table 2)
# 3. The other strategies: uniform, diagonal (paper Eq. 14) and Sinkhorn (beyond the paper)
# 4. The effective $\beta$ of each contrast: weights sit inside the sigmoid
# 5. Matched $\beta$: RPO is DPO to first order, and where the curvature makes them differ (reading the paper's
#    Table 1)
# 6. Paper versus official code, numerically:
#    (a) weights inside or outside the log-sigmoid, (b) uniform $1/N$ or $1$,
#    (c) per-device or global contrast matrix, (d) embedding every step or once,
#    (e) one switch, `official_convention`, that reproduces the official code's loss
#
# The weighting code lives in `rpo_tutorial/weighting.py`, the loss in `rpo_tutorial/losses.py`.

# %%
import os

SMOKE = os.environ.get("RPO_SMOKE") == "1"  # CI sets RPO_SMOKE=1; the default is the full run

TAUS = (0.25, 0.5, 0.75, 1.0)  # the temperatures of the paper's Table 2
TAU = 0.5  # the temperature used where one is needed
ALPHA = 0.5  # the diagonal strategy's weight on the own pair
BETA = 0.1
TIMING_REPEATS = 2 if SMOKE else 30  # timed calls per method in section 6(d)
SHUFFLES = 200 if SMOKE else 5000  # random batch orders in section 6(c)

# %%
import time

import torch
import torch.nn.functional as F
from transformers.utils import logging as transformers_logging

from rpo_tutorial.data.embeddings import PromptEmbedder, add_prompt_embeddings, stack_prompt_embeddings
from rpo_tutorial.data.examples import example_texts, example_topics
from rpo_tutorial.losses import contrast_matrix, dpo_loss, rpo_loss
from rpo_tutorial.paths import cache_dir, figures_dir
from rpo_tutorial.plots.tutorial import plot_coverage, plot_weight_panels, plt, save, weight_shares
from rpo_tutorial.weighting import (
    compute_weights,
    diagonal_mass,
    diagonal_weights,
    embedding_weights,
    prompt_distances,
    row_entropy,
    sinkhorn_weights,
    uniform_weights,
)

transformers_logging.set_verbosity_error()  # no weight-loading bars or tokenizer notices in the cells
transformers_logging.disable_progress_bar()
FIGURES_DIR = cache_dir() / "smoke-figures" if SMOKE else figures_dir()  # smoke runs leave figures/ alone
torch.set_printoptions(precision=3, sci_mode=False, linewidth=140)
print(f"SMOKE={SMOKE}; float32 on the CPU whatever the hardware (no training here: nothing to checkpoint)")

# %% [markdown]
# ## 1. Real prompt embeddings
#
# The first two prompts are the paper's motivating example: two differently worded questions about
# photosynthesis. A good answer to one teaches something about the other, which is the contrast DPO
# never sees. The other prompts come in related pairs from three more topics.
#
# Each prompt $x$ is embedded by a sentence encoder into a vector $e$, and prompts are compared by
# cosine distance (paper Eq. 11):
#
# $$ d_{ij} = 1 - \frac{e_i \cdot e'_j}{\lVert e_i \rVert\, \lVert e'_j \rVert}. $$

# %%
texts, topics = example_texts(), example_topics()
embedder = PromptEmbedder()  # the bundled all-MiniLM-L6-v2, offline; vectors cached on disk
prompt_embeddings = embedder.embed(texts, show_progress=False)  # (8, 384), unit norm
labels = [f"[{i}] {text}" for i, text in enumerate(texts)]
for label, topic in zip(labels, topics):
    print(f"{topic:8s} {label}")
print("embeddings:", tuple(prompt_embeddings.shape))

distances = prompt_distances(prompt_embeddings, prompt_embeddings)  # (8, 8), Eq. 11
teaching_distances = 1.0 - F.cosine_similarity(prompt_embeddings[:, None, :], prompt_embeddings[None, :, :], dim=-1)
torch.testing.assert_close(distances, teaching_distances.clamp(0.0, 2.0), atol=1e-6, rtol=0)
print("cosine similarity 1 - d_ij:\n", 1.0 - distances)
same_topic = torch.tensor([[a == b for b in topics] for a in topics]) & ~torch.eye(len(texts), dtype=torch.bool)
print(f"mean similarity: same topic {(1 - distances)[same_topic].mean():.3f}, "
      f"other topics {(1 - distances)[~same_topic & ~torch.eye(len(texts), dtype=torch.bool)].mean():.3f}")
assert (1 - distances)[0, 1] > 0.5 > (1 - distances)[0, 2:].max()  # photosynthesis ~ sunlight, not ~ the rest

# %% [markdown]
# ## 2. Embedding weights across the temperature
#
# Each row of the weight matrix is a softmax over the rejected responses, sharper for smaller $\tau$
# (paper Eq. 12):
#
# $$ w_{ij} = \frac{\exp(-d_{ij} / \tau)}{\sum_{j'} \exp(-d_{ij'} / \tau)}, \qquad \sum_j w_{ij} = 1. $$
#
# In a paired batch the own pair has $d_{ii} = 0$ and gets the largest weight; related prompts get more
# than unrelated ones; as $\tau \to \infty$ every row becomes uniform, $1/N$. MiniLM's cosine distances
# between different prompts lie roughly in $[0.3, 1.1]$, so even $\tau = 0.25$ leaves visible weight off
# the diagonal. The paper's Table 2 compares exactly these four temperatures.

# %%
def embedding_weights_teaching(chosen_embeddings, rejected_embeddings, tau):
    weights = torch.empty(len(chosen_embeddings), len(rejected_embeddings))
    for i, e_i in enumerate(chosen_embeddings):
        d_i = torch.stack([1 - F.cosine_similarity(e_i, e_j, dim=0) for e_j in rejected_embeddings])  # Eq. 11
        weights[i] = torch.exp(-d_i / tau) / torch.exp(-d_i / tau).sum()  # Eq. 12
    return weights


weights_by_tau = {}
for tau in TAUS:
    weights = embedding_weights(prompt_embeddings, prompt_embeddings, tau=tau)  # (8, 8)
    torch.testing.assert_close(weights, embedding_weights_teaching(prompt_embeddings, prompt_embeddings, tau))
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(len(texts)))
    weights_by_tau[f"embedding, tau={tau}"] = weights

print("  tau | own pair | related prompt | unrelated | row entropy (uniform = log 8 = 2.079)")
for tau, weights in zip(TAUS, weights_by_tau.values()):
    shares = weight_shares(weights, topics)
    print(f"{tau:5.2f} | {shares['own']:8.3f} | {shares['related']:14.3f} | {shares['unrelated']:9.3f} | "
          f"{row_entropy(weights).mean():.3f}")
very_large_tau = embedding_weights(prompt_embeddings, prompt_embeddings, tau=1e6)
torch.testing.assert_close(very_large_tau, uniform_weights(8, 8))  # tau -> infinity: uniform 1/N

plot_weight_panels(weights_by_tau, labels, topics, "share of each row's weight, by tau",
                   path=FIGURES_DIR / "weights_across_tau.png");

# %% [markdown]
# ## 3. The other strategies
#
# * **Uniform**: $w_{ij} = 1/N$. Every contrast counts the same, related or not (the paper's "naive"
#   baseline; section 6(b) shows the official code's variant).
# * **Diagonal** (paper Eq. 14, paired data only): $w_{ii} = \alpha$ and $w_{ij} = (1-\alpha)/(M-1)$ for
#   $j \ne i$. $\alpha = 1$ keeps only DPO's own pairs; $\alpha = 1/M$ is uniform. It ignores the prompts'
#   meaning.
# * **Sinkhorn** (beyond the paper; its stated future work on optimal transport): entropic optimal
#   transport with cost $d_{ij}/\tau$. Rows still sum to 1 and still favour similar prompts, but every
#   column also receives the same total weight $M/N$.
#
# Why balance the columns? With embedding weights a rejected response whose prompt resembles *many*
# chosen prompts collects weight from every one of those rows, so it is pushed down harder than the
# others. In the balanced paired batch above (two prompts per topic) the columns are already nearly
# balanced, so Sinkhorn and embedding weights almost coincide. The unpaired batch below is not balanced:
# four bread questions among its chosen prompts and one bread question among its rejected ones. Look at
# that column's total.

# %%
strategies = {
    f"embedding, tau={TAU}": compute_weights("embedding", prompt_embeddings, prompt_embeddings, tau=TAU),
    "uniform (paper: 1/N)": compute_weights("uniform", prompt_embeddings, prompt_embeddings),
    f"diagonal, alpha={ALPHA}": compute_weights("diagonal", prompt_embeddings, prompt_embeddings, alpha=ALPHA),
    f"sinkhorn, tau={TAU}": compute_weights("sinkhorn", prompt_embeddings, prompt_embeddings, tau=TAU),
}
for name, weights in strategies.items():
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(len(texts)))  # every strategy: rows sum to 1
    shares = weight_shares(weights, topics)
    print(f"{name:22s} own {shares['own']:.3f}  related {shares['related']:.3f}  unrelated {shares['unrelated']:.3f}"
          f"  (diagonal mass {diagonal_mass(weights):.3f})")
print("diagonal, alpha=1 is the identity (DPO):", torch.equal(diagonal_weights(8, alpha=1.0), torch.eye(8)))

plot_weight_panels(strategies, labels, topics, "share of each row's weight, by strategy",
                   path=FIGURES_DIR / "strategy_comparison.png");

# %%
chosen_prompts = [
    "How do I bake a simple loaf of bread at home?",
    "What is the easiest way to make sourdough bread?",
    "How long should I knead bread dough?",
    "Why did my homemade bread come out dense?",
    "Explain the process of photosynthesis.",
    "How do plants turn sunlight into energy?",
    "How can I start saving money for retirement?",
    "What are good ways to build an emergency fund?",
]
rejected_prompts = [
    "Can I bake bread without yeast?",
    "Why are leaves green?",
    "Should I pay off debt before investing?",
    "What should I pack for a week-long hiking trip?",
]
chosen_embeddings = embedder.embed(chosen_prompts, show_progress=False)  # (M=8, D)
rejected_embeddings = embedder.embed(rejected_prompts, show_progress=False)  # (N=4, D)
unpaired_embedding = embedding_weights(chosen_embeddings, rejected_embeddings, tau=TAU)  # (8, 4)
unpaired_sinkhorn = sinkhorn_weights(chosen_embeddings, rejected_embeddings, tau=TAU)  # (8, 4)
print("rejected prompts:          ", [p[:22] for p in rejected_prompts])
print("column sums, embedding:    ", unpaired_embedding.sum(dim=0))
print("column sums, sinkhorn:     ", unpaired_sinkhorn.sum(dim=0), f"(target M/N = {8 / 4:.0f})")
print("row of 'knead bread dough', embedding:", unpaired_embedding[2])
print("row of 'knead bread dough', sinkhorn: ", unpaired_sinkhorn[2])
torch.testing.assert_close(unpaired_sinkhorn.sum(dim=0), torch.full((4,), 2.0), atol=1e-3, rtol=0)
assert unpaired_embedding.sum(dim=0)[0] == unpaired_embedding.sum(dim=0).max()  # the bread column is overloaded

# %% [markdown]
# ## 4. The effective $\beta$ of each contrast
#
# The paper puts the weight *inside* the sigmoid (paper Eq. 15), with a mean over $j$:
#
# $$
# \mathcal{L}_{\text{RPO}} = \frac{1}{M} \sum_{i=1}^{M} \frac{1}{N} \sum_{j=1}^{N}
# -\log \sigma\big(w_{ij}\, s_{ij}\big),
# \qquad s_{ij} = \beta\,(c_i - r_j).
# $$
#
# So the contrast $(i, j)$ behaves like a DPO pair with its own temperature $\beta\, w_{ij}$. Rows sum
# to 1, so $w_{ij}$ averages $1/N$ and the effective $\beta$ is about $\beta / N$: with $\beta = 0.1$ and a batch
# of 8, a contrast acts like DPO with $\beta \approx 0.0125$, a little more on the diagonal and on related
# prompts. At the start of training ($s = 0$) the gradient with respect to a chosen log-ratio is then
# $N$ times smaller than DPO's. When comparing with DPO, scale $\beta$ (or the learning rate) accordingly.

# %%
effective_beta = BETA * strategies[f"embedding, tau={TAU}"]  # (8, 8): beta * w_ij
print(f"effective beta, embedding tau={TAU}: own pair {effective_beta.diagonal().mean():.4f}, "
      f"related {effective_beta[same_topic].mean():.4f}, "
      f"unrelated {effective_beta[~same_topic & ~torch.eye(8, dtype=torch.bool)].mean():.4f}, "
      f"mean {effective_beta.mean():.4f} = beta / N = {BETA / 8:.4f}")

# Gradient at the start of training (policy = reference, every s_ij = 0): RPO against DPO.
zeros = torch.zeros(8)
chosen = zeros.clone().requires_grad_(True)
rpo_loss(chosen, zeros, zeros, zeros, strategies[f"embedding, tau={TAU}"], beta=BETA)[0].mean().backward()
rpo_gradient = chosen.grad.clone()
chosen.grad = None
dpo_loss(chosen, zeros, zeros, zeros, beta=BETA)[0].mean().backward()
print(f"d loss / d c_i at s = 0: RPO {rpo_gradient[0]:.6f}, DPO {chosen.grad[0]:.6f} "
      f"(ratio {chosen.grad[0] / rpo_gradient[0]:.1f})")
torch.testing.assert_close(chosen.grad / rpo_gradient, torch.full((8,), 8.0))  # exactly N times

# %% [markdown]
# ## 5. Matched $\beta$: RPO is DPO to first order
#
# Section 4 says that at the paper's $\beta$ an RPO contrast acts like DPO with $\beta / N$. The fair
# comparison therefore gives RPO $N$ times DPO's $\beta$ (the *matched* $\beta \times N$ of the demo and the study).
# Then something stronger holds. Write the batch loss with $\beta_{\text{RPO}} = N\beta$,
# $\mathcal{L} = \frac{1}{M}\sum_i \frac{1}{N}\sum_j -\log\sigma\big(N\beta\, w_{ij}(c_i - r_j)\big)$, and differentiate
# ($\frac{d}{dx}\,{-\log\sigma(x)} = -\sigma(-x)$):
#
# $$
# \frac{\partial \mathcal{L}}{\partial c_i} = -\frac{\beta}{M}\sum_{j} w_{ij}\,\sigma\big(-N\beta\, w_{ij}(c_i - r_j)\big),
# \qquad
# \frac{\partial \mathcal{L}}{\partial r_j} = +\frac{\beta}{M}\sum_{i} w_{ij}\,\sigma\big(-N\beta\, w_{ij}(c_i - r_j)\big).
# $$
#
# DPO's are $\mp\frac{\beta}{M}\,\sigma\big(-\beta(c_i - r_i)\big)$. At the reference every log-ratio is 0, so every
# sigmoid is $\tfrac12$, and rows of $w$ sum to 1:
#
# * **chosen**: $\partial\mathcal{L}/\partial c_i = -\frac{\beta}{2M}\sum_j w_{ij} = -\frac{\beta}{2M}$, **exactly DPO's**;
# * **rejected**: $\partial\mathcal{L}/\partial r_j = \frac{\beta}{2M}\sum_i w_{ij}$, **DPO's times the column sum**
#   $\sum_i w_{ij}$: how much weight all chosen responses give rejected response $j$.
#
# So at the start of training the only cross-prompt information in matched RPO is the column sums. The rest
# enters through the sigmoid's curvature: a contrast's factor $\sigma(-x_{ij})$ with
# $x_{ij} = N\beta\,w_{ij}(c_i - r_j)$ leaves $\tfrac12$ by about $x_{ij}/4$, so the two methods part only once
# $N w_{ij}\beta\,|c_i - r_j|$ is no longer small. First the reference, with the real embedding weights of section 1:

# %%
N = len(texts)  # 8 prompts, a paired batch: M = N
matched_beta = BETA * N
embedding = strategies[f"embedding, tau={TAU}"]  # (8, 8), real MiniLM weights
column_sums = embedding.sum(dim=0)  # (8,): sum_i w_ij


def gradients(loss_function, chosen_logratios, rejected_logratios):
    """d mean(loss) / d (c, r) by autograd, the reference log-probs fixed at 0. Shape: (M,), (N,)."""
    c = chosen_logratios.clone().requires_grad_(True)
    r = rejected_logratios.clone().requires_grad_(True)
    loss_function(c, r).mean().backward()
    return c.grad, r.grad


def matched_rpo(c, r, weights=embedding):
    return rpo_loss(c, r, torch.zeros_like(c), torch.zeros_like(r), weights, beta=matched_beta)[0]


def dpo(c, r):
    return dpo_loss(c, r, torch.zeros_like(c), torch.zeros_like(r), beta=BETA)[0]


rpo_chosen, rpo_rejected = gradients(matched_rpo, zeros, zeros)
dpo_chosen, dpo_rejected = gradients(dpo, zeros, zeros)
torch.testing.assert_close(rpo_chosen, dpo_chosen)  # chosen: exactly DPO's
torch.testing.assert_close(rpo_rejected, dpo_rejected * column_sums)  # rejected: DPO's times the column sums
print(f"at the reference (beta = {BETA} for DPO, {matched_beta:.1f} = beta x N for RPO):")
print(f"  d L / d c_i: RPO {rpo_chosen[0]:+.6f}, DPO {dpo_chosen[0]:+.6f} (every i)")
print(" prompt                                      | column sum | d L / d r_j: RPO  | DPO x column sum")
for j, text in enumerate(texts):
    print(f" [{j}] {text[:40]:40s} | {column_sums[j]:10.3f} | {rpo_rejected[j]:+.6f}        | "
          f"{dpo_rejected[j] * column_sums[j]:+.6f}")
print(f"column sums range {column_sums.min():.3f} - {column_sums.max():.3f}; uniform and diagonal weights: all 1")
for name in ("uniform (paper: 1/N)", f"diagonal, alpha={ALPHA}"):
    torch.testing.assert_close(strategies[name].sum(dim=0), torch.ones(N))  # these ARE DPO at the reference

# %% [markdown]
# The embedding weights' column sums stay close to 1 in this balanced batch (two prompts per topic), so at the
# reference matched RPO pushes each rejected response down about as hard as DPO does; uniform and diagonal
# weights have column sums of exactly 1 and *are* DPO there. Now move away from the reference. We scale a seeded
# draw of log-ratios (chosen around $+1$, rejected around $-1$ nat) by a factor from 0 to 12, which takes the
# own-pair margins $c_i - r_i$ from 0 to about 25 nats (a trained policy's margins are tens of nats: the demo ends
# near 18), and compare the gradients at each scale: for the chosen log-ratios against DPO's, for the rejected
# ones against DPO's times the column sums. The horizontal axis is the largest $N w_{ij}\beta\,|c_i - r_j|$ in the
# batch; both axes are logarithmic, so growth in proportion to it is a line of slope 1.

# %%
draw = torch.Generator().manual_seed(3)
unit_chosen = 1.0 + torch.randn(N, generator=draw)  # c at scale 1 (nats)
unit_rejected = -1.0 + torch.randn(N, generator=draw)  # r at scale 1
scales = torch.cat([torch.zeros(1), torch.logspace(-2, 1.08, 48)])  # 0, then 0.01 to 12 (log-spaced)
curvature, chosen_gap, rejected_gap = [], [], []
for scale in scales:
    c, r = scale * unit_chosen, scale * unit_rejected
    rpo_c, rpo_r = gradients(matched_rpo, c, r)
    dpo_c, dpo_r = gradients(dpo, c, r)
    first_order_r = dpo_r * column_sums  # what the reference-point identity predicts
    curvature.append((N * BETA * embedding * (c[:, None] - r[None, :]).abs()).max().item())  # (M, N) -> max
    chosen_gap.append(((rpo_c - dpo_c).norm() / dpo_c.norm()).item())
    rejected_gap.append(((rpo_r - first_order_r).norm() / first_order_r.norm()).item())
assert chosen_gap[0] < 1e-6 and rejected_gap[0] < 1e-6  # scale 0 is the reference
near = [(x, gap) for x, gap in zip(curvature, chosen_gap) if 0 < x < 0.2]
slopes = [gap / x for x, gap in near]
assert max(slopes) < 1.2 * min(slopes)  # near the reference the gap grows in proportion to N w beta |c - r|
print(" max N w beta |c - r| | chosen: |RPO - DPO| / |DPO| | rejected: |RPO - DPO x colsum| / |DPO x colsum|")
for k in range(0, len(scales), 6):
    print(f" {curvature[k]:20.3f} | {chosen_gap[k]:28.4f} | {rejected_gap[k]:.4f}")
print(f"near the reference (largest contrast < 0.2): chosen gap / (N w beta |c - r|) between {min(slopes):.3f} "
      f"and {max(slopes):.3f}")

figure, axis = plt.subplots(figsize=(7, 4))
axis.loglog(curvature[1:], chosen_gap[1:], marker="o", markersize=3, label="chosen log-ratios: vs DPO")
axis.loglog(curvature[1:], rejected_gap[1:], marker="s", markersize=3,
            label="rejected log-ratios: vs DPO x column sums")
axis.axvline(1.0, color="grey", linestyle=":", linewidth=1)
axis.set_xlabel(r"largest $N\, w_{ij}\, \beta\, |c_i - r_j|$ in the batch")
axis.set_ylabel("relative gradient difference")
axis.set_title(f"Matched RPO (beta x N = {matched_beta:.1f}) against DPO (beta = {BETA}), embedding tau = {TAU}")
axis.legend(fontsize=8)
save(figure, FIGURES_DIR / "first_order_equivalence.png");

# %% [markdown]
# Near the reference both differences grow in proportion to $N w_{ij}\beta\,|c_i - r_j|$ (the first-order term
# of each sigmoid; on this batch about a sixteenth of it, so about 6 % when the largest contrast reaches 1), and
# while that quantity is well below 1 the two methods take nearly the same steps. Once it
# reaches a few, the sigmoids of the own pairs (largest $w_{ii}$, largest margins) saturate first, so RPO keeps
# pushing through the cross-prompt contrasts that are still unsaturated while DPO's gradient on that pair fades:
# that is where cross-prompt information can change training, and only there.
#
# **Reading the paper's Table 1.** Its RPO rows use the paper's $\beta = 0.1$ with the weights inside the
# sigmoid, against DPO at $\beta = 0.1$. Each RPO contrast then acts with $\beta w_{ij} \approx \beta / N$
# ($N = 8$ per GPU in the official code), so the comparison changes two things at once: cross-prompt contrasts,
# and an $N$ times weaker effective $\beta$ (a weaker pull towards the reference, and section 4's $N$ times
# smaller starting gradient). DPO itself is sensitive to $\beta$, so a gap in that table cannot be credited to the
# cross-prompt contrasts alone. A matched-$\beta$ comparison ($\beta \times N$ for RPO) removes the second change;
# what is left is the column-sum reweighting at the start and the curvature terms above, which need margins large
# enough for $N w_{ij}\beta\,|c_i - r_j|$ to reach about 1. The project's study (notebook 04,
# `docs/study/study.md`) reports RPO at both $\beta$ for this reason.

# %% [markdown]
# ## 6. Paper versus official code, numerically
#
# For the rest of the notebook we need log-ratios. Real ones come from a model (notebook 02); here a
# seeded random draw of plausible size (a few nats) is enough, because every comparison below is between
# two formulas applied to the *same* numbers.
#
# ### (a) Weights inside or outside the log-sigmoid
#
# | `placement` | per-row loss | used by |
# |---|---|---|
# | `"score"` | $\frac{1}{N}\sum_j -\log\sigma(w_{ij}\, s_{ij})$ | paper (Eq. 15); official code, embedding weights |
# | `"loss"` | $\sum_j w_{ij}\,\big(-\log\sigma(s_{ij})\big)$ | official code for its diagonal strategy |
#
# Outside, a weight scales the *loss* of a contrast (each contrast keeps the full $\beta$); inside, it
# scales the contrast's *temperature*. Two consequences, checked below against brute-force loops:
# at the start of training "loss" has $N$ times the gradient of "score"; and a zero weight removes a
# contrast under "loss" but leaves the constant $\log 2$ under "score" (the term $-\log\sigma(0)$ stays).

# %%
generator = torch.Generator().manual_seed(0)
policy_chosen, policy_rejected, reference_chosen, reference_rejected = (
    -30 + 3 * torch.randn(8, generator=generator) for _ in range(4))  # summed log-probs of 8 pairs
logps = (policy_chosen, policy_rejected, reference_chosen, reference_rejected)
scores = contrast_matrix(policy_chosen - reference_chosen, policy_rejected - reference_rejected, BETA)  # (8, 8)


def rpo_teaching(scores, weights, placement):
    M, N = scores.shape
    losses = torch.zeros(M)
    for i in range(M):
        for j in range(N):
            if placement == "score":
                losses[i] += -F.logsigmoid(weights[i, j] * scores[i, j]) / N
            else:
                losses[i] += weights[i, j] * -F.logsigmoid(scores[i, j])
    return losses


weights = strategies[f"embedding, tau={TAU}"]
for placement in ("score", "loss"):
    package = rpo_loss(*logps, weights, beta=BETA, placement=placement)[0]
    torch.testing.assert_close(package, rpo_teaching(scores, weights, placement))
    print(f"placement={placement!r:8s} batch loss {package.mean():.4f}   per row {package}")

# The gradient at the start of training (every s_ij = 0): "loss" is N times "score".
start_gradients = {}
for placement in ("score", "loss"):
    chosen = zeros.clone().requires_grad_(True)
    rpo_loss(chosen, zeros, zeros, zeros, weights, beta=BETA, placement=placement)[0].mean().backward()
    start_gradients[placement] = chosen.grad
torch.testing.assert_close(start_gradients["loss"], 8 * start_gradients["score"])
print(f"d loss / d c_i at s = 0: 'score' {start_gradients['score'][0]:.6f}, 'loss' {start_gradients['loss'][0]:.6f}")

# A zero weight: with the diagonal strategy at alpha = 1 only DPO's own pairs should count.
identity = diagonal_weights(8, alpha=1.0)
dpo_losses = dpo_loss(*logps, beta=BETA)[0]
as_score = rpo_loss(*logps, identity, beta=BETA, placement="score")[0]
as_loss = rpo_loss(*logps, identity, beta=BETA, placement="loss")[0]
torch.testing.assert_close(as_loss, dpo_losses)  # outside: exactly DPO
torch.testing.assert_close(as_score, (dpo_losses + 7 * torch.log(torch.tensor(2.0))) / 8)  # inside: DPO/N + log 2 terms
print(f"alpha=1: DPO {dpo_losses.mean():.4f} | 'loss' placement {as_loss.mean():.4f} | "
      f"'score' placement {as_score.mean():.4f} = (DPO + 7 log 2) / 8")

# %% [markdown]
# ### (b) Uniform weights: $1/N$ (paper) or $1$ (official code)
#
# The official code's uniform strategy puts ones inside the sigmoid: the plain mean of
# $-\log\sigma(s_{ij})$ over all $M \times N$ contrasts, each with the full $\beta$. The paper's $1/N$ gives
# each contrast $\beta/N$. The official variant is exactly the paper's $1/N$ placed *outside*.

# %%
uniform_paper = uniform_weights(8, 8, convention="paper")  # 1/N
uniform_official = uniform_weights(8, 8, convention="official")  # 1
loss_paper = rpo_loss(*logps, uniform_paper, beta=BETA)[0]
loss_official = rpo_loss(*logps, uniform_official, beta=BETA)[0]
torch.testing.assert_close(loss_official, -F.logsigmoid(scores).mean(dim=1))  # mean over all pairs, full beta
torch.testing.assert_close(loss_official, rpo_loss(*logps, uniform_paper, beta=BETA, placement="loss")[0])
print(f"effective beta per contrast: paper {BETA / 8:.4f}, official {BETA:.4f}")
print(f"batch loss: paper {loss_paper.mean():.4f}, official {loss_official.mean():.4f}")

for name, uniform in (("paper", uniform_paper), ("official", uniform_official)):
    chosen = zeros.clone().requires_grad_(True)
    rpo_loss(chosen, zeros, zeros, zeros, uniform, beta=BETA)[0].mean().backward()
    print(f"gradient at the start, {name:8s}: {chosen.grad[0]:.5f} per chosen log-ratio")

# %% [markdown]
# ### (c) A per-device (local) or a global contrast matrix
#
# With data parallelism each GPU holds a slice of the batch. The official code builds the contrast
# matrix from each device's own slice, so with 2 devices and a batch of 8 a device sees a $4 \times 4$
# matrix: $2 \times 16 = 32$ of the $64$ contrasts, and its weights are normalised over 4 columns rather
# than 8. A global matrix gathers the log-ratios (and prompt embeddings) of all devices first. Below we
# simulate both on one process, with a random batch order as a data loader would give.

# %%
order = torch.randperm(8, generator=torch.Generator().manual_seed(1))  # the batch as the sampler shuffled it
devices = [order[:4], order[4:]]  # 2 devices x 4 examples
chosen_logratios = (policy_chosen - reference_chosen)[order]
rejected_logratios = (policy_rejected - reference_rejected)[order]
batch_embeddings = prompt_embeddings[order]

global_weights = embedding_weights(batch_embeddings, batch_embeddings, tau=TAU)  # (8, 8)
global_loss = rpo_loss(chosen_logratios, rejected_logratios, zeros, zeros, global_weights, beta=BETA)[0].mean()
local_losses, covered = [], torch.zeros(8, 8, dtype=torch.bool)
for rank in range(2):
    rows = torch.arange(4 * rank, 4 * rank + 4)  # this device's positions in the batch
    local_weights = embedding_weights(batch_embeddings[rows], batch_embeddings[rows], tau=TAU)  # (4, 4)
    local_losses.append(rpo_loss(chosen_logratios[rows], rejected_logratios[rows], zeros[:4], zeros[:4],
                                 local_weights, beta=BETA)[0].mean())
    covered[rows[:, None], rows[None, :]] = True  # (4, 1), (1, 4) -> the device's 4 x 4 block
local_loss = torch.stack(local_losses).mean()  # what DDP's gradient average optimises
batch_topics = [topics[k] for k in order]
related = torch.tensor([[a == b for b in batch_topics] for a in batch_topics]) & ~torch.eye(8, dtype=torch.bool)
print(f"contrasts seen: global {8 * 8}, local {int(covered.sum())} (= 2 x 16)")
print(f"related cross-prompt contrasts seen: global {int(related.sum())}, local {int((related & covered).sum())}")
print(f"loss: global {global_loss:.4f}, mean of the two local losses {local_loss:.4f}")
assert int(covered.sum()) == 32

split = 0
for seed in range(SHUFFLES):  # how often does a random order keep a related pair on one device?
    shuffled = torch.randperm(8, generator=torch.Generator().manual_seed(100 + seed))
    device_of = torch.empty(8, dtype=torch.long)
    device_of[shuffled] = torch.arange(8) // 4  # example k -> its device
    split += sum(device_of[2 * t] != device_of[2 * t + 1] for t in range(4)).item()  # topics are pairs 2t, 2t+1
print(f"over {SHUFFLES} random orders, {1 - split / (4 * SHUFFLES):.3f} of related prompt pairs share a device "
      f"(exact: 3/7 = {3 / 7:.3f}); a global matrix always sees them")

plot_coverage({"global: all 64 contrasts": torch.ones(8, 8), "local (2 devices): 32 contrasts": covered,
               "related pairs seen locally": related & covered},
              [f"[{k}] {texts[k][:24]}" for k in order.tolist()]);

# %% [markdown]
# ### (d) Embedding the prompts every step, or once
#
# The official code runs the sentence encoder inside every training step, on every device. The
# package embeds each prompt once (with a disk cache) and stores the vector in the row; a training step
# then only stacks stored vectors. The weights are identical. The timings below are on *this* machine's
# CPU; the official code encodes on the GPU, where the cost is a different story (worked out after the
# cell).

# %%
def encode_every_step() -> torch.Tensor:
    """What the official code does inside each training step: run the sentence encoder."""
    return embedder.model.encode(texts, convert_to_tensor=True, normalize_embeddings=True).float().cpu()


encode_every_step()  # warm-up: loads the model if the cache has spared it so far, so we time encoding alone
rows = add_prompt_embeddings([{"prompt": text} for text in texts], embedder, show_progress=False)  # once


def seconds_per_call(function, repeats):
    start = time.perf_counter()
    for _ in range(repeats):
        result = function()
    return (time.perf_counter() - start) / repeats, result


encode_seconds, encoded = seconds_per_call(encode_every_step, TIMING_REPEATS)
disk_seconds, from_disk = seconds_per_call(lambda: embedder.embed(texts, show_progress=False), TIMING_REPEATS)
stored_seconds, stored = seconds_per_call(lambda: stack_prompt_embeddings(rows), TIMING_REPEATS * 10)
weights_per_step = embedding_weights(encoded, encoded, tau=TAU)
for other in (from_disk, stored):
    torch.testing.assert_close(embedding_weights(other, other, tau=TAU), weights_per_step, atol=1e-5, rtol=0)
print("identical weights from all three sources")
print(f"on this CPU: encode every step (official) {1e3 * encode_seconds:8.2f} ms per batch of {len(texts)} prompts")
print(f"             disk-cache lookup           {1e3 * disk_seconds:8.2f} ms")
print(f"             stack stored vectors        {1e3 * stored_seconds:8.3f} ms")
tokens = sum(len(embedder.model.tokenizer(text)["input_ids"]) for text in texts)  # this batch's encoder tokens
encoder_parameters = sum(p.numel() for p in embedder.model.parameters())
encoder_flops = 2 * encoder_parameters * tokens  # forward pass: ~2 FLOPs per parameter per token
policy_flops = 3 * 2 * 7.2e9 * 16 * 512 + 2 * 7.2e9 * 16 * 512  # Mistral-7B step: policy fwd+bwd, reference fwd
print(f"encoder: {encoder_parameters / 1e6:.1f}M parameters x {tokens} tokens = {encoder_flops / 1e9:.2f} GFLOP per "
      f"step; a Mistral-7B step of 8 pairs x 512 tokens on one GPU: ~{policy_flops / 1e12:.0f} TFLOP "
      f"(ratio {policy_flops / encoder_flops:.0e})")

# %% [markdown]
# **What per-step encoding costs where the official code runs.** On a CPU (above) encoding a batch takes
# milliseconds to tens of milliseconds, which adds up over thousands of steps. The official code encodes on
# the GPU, next to Mistral-7B: the encoder's forward pass is a few GFLOP per batch against hundreds of
# TFLOP for the policy's forward and backward and the reference's forward, a ratio of about $10^5$. Even
# with kernel-launch overhead (a few milliseconds for a 6-layer encoder in eager mode) that is well under
# 1 % of a step that takes seconds. So on the paper's hardware embedding once saves little time; the reasons
# to store the vectors are that the step no longer needs a second model on every GPU (memory, and no
# encoder inside FSDP), that the weights become a fixed function of the data (reproducible, cacheable),
# and that CPU runs like this notebook's demo pay the cost in full.
#
# ### (e) One switch for the official code's behaviour
#
# Reproducing the official code takes five settings away from the paper's defaults: `placement="loss"`
# for the diagonal strategy (embedding and uniform weights stay inside the sigmoid),
# `uniform_convention="official"` (ones), `alpha=0.8`, `contrast_scope="local"` (one $8 \times 8$ matrix per
# GPU: these are the matrices behind the paper's numbers) and `embed_text="full_prompt"`.
# `rpo_tutorial.training.official.official_convention(config)` sets all five (CLI: `--convention official`).
# Below, the loss the trainer would compute from each configuration, per row, against a brute-force loop
# of the official code's formulas on the same log-probs.

# %%
from rpo_tutorial.training.config import get_preset
from rpo_tutorial.training.objectives import PreferenceLogps, rpo_weights
from rpo_tutorial.training.official import official_convention


def official_code_rows(scores, weighting, embeddings, tau, alpha):
    """The official code's per-row loss, as plain loops (paired batch)."""
    M = scores.shape[0]
    rows = torch.zeros(M)
    for i in range(M):
        pair = [-F.logsigmoid(scores[i, j]) for j in range(M)]  # l_ij = -log sigma(s_ij)
        if weighting == "embedding":  # weights inside the sigmoid, mean over j
            d_i = [1 - F.cosine_similarity(embeddings[i], embeddings[j], dim=0) for j in range(M)]
            w_i = torch.softmax(-torch.stack(d_i) / tau, dim=0)
            rows[i] = sum(-F.logsigmoid(w_i[j] * scores[i, j]) for j in range(M)) / M
        elif weighting == "uniform":  # ones inside: the plain mean
            rows[i] = sum(pair) / M
        else:  # diagonal: alpha on the own pair's loss, the rest shared by the other pairs' losses
            rows[i] = alpha * pair[i] + (1 - alpha) * sum(pair[j] for j in range(M) if j != i) / (M - 1)
    return rows


batch_logps = PreferenceLogps(*logps, prompt_embeddings, prompt_embeddings, paired=True)
print(f"{'weighting':10s} | max |row - official code|: paper defaults | official_convention")
for weighting in ("embedding", "uniform", "diagonal"):
    paper = get_preset("paper", weighting=weighting)
    official = official_convention(paper)
    expected = official_code_rows(scores, weighting, prompt_embeddings, official.effective_tau, official.alpha)
    gaps = {}
    for name, config in (("paper", paper), ("official", official)):
        rows = rpo_loss(*logps, rpo_weights(batch_logps, config), beta=config.beta, placement=config.placement)[0]
        gaps[name] = (rows - expected).abs().max().item()
    print(f"{weighting:10s} | {gaps['paper']:30.2e} | {gaps['official']:.2e}")
    assert gaps["official"] < 1e-5  # float32 rounding
print("official_convention(get_preset('paper')):",
      {k: getattr(official_convention(get_preset("paper")), k) for k in
       ("placement", "uniform_convention", "alpha", "contrast_scope", "embed_text")})

# %% [markdown]
# Embedding weights already agree (the paper and the official code both put them inside the sigmoid); the
# uniform and diagonal strategies differ by the placement, the convention and $\alpha$ until the switch is on.
#
# Figures saved (full run): `figures/weights_across_tau.png`, `figures/strategy_comparison.png` and
# `figures/first_order_equivalence.png`.
#
# **Summary.** Embedding weights put most of a row's weight on the own pair and related prompts, more so
# for small $\tau$; the diagonal strategy does the same blindly; Sinkhorn keeps the preference for
# related prompts but stops a popular rejected response from being pushed down by every row. Inside
# the sigmoid, weights are per-contrast temperatures, so RPO's effective $\beta$ is about $\beta/N$. The
# official code differs from the paper in placement for the diagonal strategy, in the uniform
# convention, in building contrasts per device, and in re-embedding every step. The trainer's `RPOConfig`
# exposes the first three as options (`placement`, `uniform_convention`, `contrast_scope`), and
# `official_convention` sets them (with $\alpha = 0.8$ and full-prompt embeddings) in one call; the trainer
# always reads stored embeddings.
