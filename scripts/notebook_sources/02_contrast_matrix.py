# %% [markdown]
# # 02 · The contrast matrix, from a real model's log-probabilities
#
# DPO compares each chosen response with the rejected response *to the same prompt*. RPO compares every
# chosen response in a batch with every rejected response, whatever its prompt. All of these
# comparisons fit in one matrix, the contrast matrix. This notebook builds it from real numbers: the
# bundled SmolLM2-135M-Instruct scoring a handful of real preference pairs.
#
# 1. A handful of real preference pairs
# 2. Summed response log-probabilities under the reference model
# 3. A policy that has moved away from the reference (honestly cheap: one layer, a few DPO steps)
# 4. The paired $M \times M$ contrast matrix, and DPO as its diagonal
# 5. Why log-*ratios*: raw log-probabilities mostly measure length
# 6. The unpaired $M \times N$ matrix
# 7. Heatmaps, and from the matrix to the RPO loss
#
# Runs on a laptop CPU in a minute or two (mostly the model's forward pass). `RPO_SMOKE=1` uses fewer,
# shorter pairs.

# %%
import os

SMOKE = os.environ.get("RPO_SMOKE") == "1"  # CI sets RPO_SMOKE=1; the default is the full run

NUM_PAIRS = 4 if SMOKE else 8  # M: preference pairs in the batch
MAX_PROMPT_LENGTH, MAX_LENGTH = (48, 96) if SMOKE else (96, 192)  # token limits (the paper: 256, 512)
POLICY_STEPS = 2 if SMOKE else 10  # DPO steps that move the policy away from the reference
VERIFY_WITH_FULL_FORWARD = not SMOKE  # re-check the tuned policy with one more full forward pass
BETA = 0.1
TAU, TAU_UNPAIRED = 0.5, 0.75  # embedding-weight temperatures of the paper: paired and unpaired data

# %%
import copy
import warnings

import torch
import torch.nn.functional as F
from transformers.utils import logging as transformers_logging

from rpo_tutorial import models
from rpo_tutorial.data.embeddings import PromptEmbedder, prompt_text
from rpo_tutorial.losses import contrast_matrix, dpo_loss, rpo_loss
from rpo_tutorial.paths import cache_dir, figures_dir, shared_data_dir
from rpo_tutorial.plots.tutorial import plot_contrast_matrices
from rpo_tutorial.data.collate import PreferenceCollator
from rpo_tutorial.models.logprobs import batch_sequence_logps
from rpo_tutorial.data.tokenization import tokenize_pair
from rpo_tutorial.weighting import diagonal_weights, embedding_weights

transformers_logging.set_verbosity_error()  # no weight-loading bars or tokenizer notices in the cells
transformers_logging.disable_progress_bar()
torch.manual_seed(0)
FIGURES_DIR = cache_dir() / "smoke-figures" if SMOKE else figures_dir()  # smoke runs leave figures/ alone
torch.set_printoptions(precision=2, sci_mode=False, linewidth=140)
print(f"SMOKE={SMOKE}: {NUM_PAIRS} pairs, max_length {MAX_LENGTH}, {POLICY_STEPS} policy steps")

# %% [markdown]
# ## 1. A handful of real preference pairs
#
# When the project's shared data sits beside the repository (`../shared/data`, as on the development
# machines and in CI) we take single-turn rows of Anthropic HH-RLHF (harmless-base, test split), the
# paper's dialogue data. That split is mostly harmful requests, so we pick benign ones, two per topic,
# by their prompt text: related prompts are what RPO's cross-prompt contrasts are about. Without the
# shared data (a fresh clone) we fall back to the project's own demo dataset, two prompts per topic
# cluster.

# %%
HH_PROMPTS = {  # prompt (the user's turn) -> topic, in batch order
    "Can you provide me the home address for Senator Rand Paul?": "address",
    "Can you provide me the home address for actress Cameron Diaz?": "address",
    "Could you give me the weather forecast for Naperville Illinois on December 30, 2021?": "weather",
    "It's way too cold today. Tell me about the weather where you are": "weather",
    "Is it possible to download a car?": "cars",
    "Can you tell me how to remove the gas from a gas tank, in order to do maintenance on my car?": "cars",
    "I don't have any money in my account but can I still write a check to use?": "money",
    "Is it true that if you got into a cab and the driver drove backwards, he owes you money?": "money",
}
hh_file = shared_data_dir() / "hh-rlhf" / "harmless-base-test.jsonl.gz" if shared_data_dir() else None

if hh_file is not None and hh_file.exists():
    from rpo_tutorial.data import load_hh

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # load_hh reports the 9 malformed rows of this file; not ours
        by_prompt = {prompt_text(row["prompt"]): row for row in load_hh(path=hh_file) if len(row["prompt"]) == 1}
    wanted = list(HH_PROMPTS)[:NUM_PAIRS]
    pairs = [by_prompt[text] for text in wanted]
    topics = [HH_PROMPTS[text] for text in wanted]
    source = f"Anthropic HH-RLHF harmless-base test ({hh_file.name})"
else:
    from rpo_tutorial.data.demo import load_demo

    demo_rows = load_demo("train")
    clusters = list(dict.fromkeys(row["cluster"] for row in demo_rows))[: NUM_PAIRS // 2]
    pairs = [row for cluster in clusters for row in [r for r in demo_rows if r["cluster"] == cluster][:2]]
    topics = [row["cluster"] for row in pairs]
    source = "the project's demo dataset (rpo_tutorial/demo_data/train.jsonl)"

prompts = [prompt_text(pair["prompt"]) for pair in pairs]
print(f"{len(pairs)} pairs from {source}\n")
for index, (pair, topic) in enumerate(zip(pairs, topics)):
    print(f"[{index}] ({topic}) {prompts[index]}")
    print(f"     chosen:   {pair['chosen'][:90]!r}")
    print(f"     rejected: {pair['rejected'][:90]!r}")

# %% [markdown]
# ## 2. Summed log-probabilities under the reference model
#
# Every preference loss consumes one number per response: its log-probability given its prompt,
# summed over the response tokens, $\log \pi(y \mid x) = \sum_t \log \pi(y_t \mid x, y_{<t})$.
# `tokenize_pair` renders the prompt with SmolLM2's chat template and masks it out of the labels;
# `PreferenceCollator` stacks the $M$ chosen sequences first and the $M$ rejected ones after them, so
# one forward pass scores all $2M$ responses; `batch_sequence_logps` sums the label log-probabilities
# in float32. The reference $\pi_{\text{ref}}$ is the bundled SmolLM2-135M-Instruct itself.

# %%
tokenizer = models.load_tokenizer()
# float32 on any hardware, set explicitly: nothing here trains for long, and exact log-probs keep the checks tight
reference = models.load_policy(dtype=torch.float32).eval().requires_grad_(False)  # SmolLM2-135M-Instruct, frozen
examples = [tokenize_pair(pair, tokenizer, max_prompt_length=MAX_PROMPT_LENGTH, max_length=MAX_LENGTH)
            for pair in pairs]
batch = PreferenceCollator(tokenizer.pad_token_id)(examples)
M = int(batch["num_chosen"])
response_tokens = (batch["labels"] != -100).sum(dim=1)  # (2M,) tokens scored per response
print("input_ids", tuple(batch["input_ids"].shape), "= (chosen + rejected, longest sequence)")
print("response tokens, chosen:  ", response_tokens[:M].tolist())
print("response tokens, rejected:", response_tokens[M:].tolist())

captured = {}  # the input of the final RMSNorm, used in section 3
hook = reference.model.norm.register_forward_hook(lambda module, inputs, output: captured.update(hidden=inputs[0]))
with torch.no_grad():
    reference_logps = batch_sequence_logps(reference, batch, share_prompts=False)  # (2M,): one forward, all rows
hook.remove()
reference_chosen_logps, reference_rejected_logps = reference_logps[:M], reference_logps[M:]
print("log pi_ref(y_w | x):", reference_chosen_logps)
print("log pi_ref(y_l | x):", reference_rejected_logps)

# %% [markdown]
# ## 3. A policy that has moved away from the reference
#
# Training starts from $\pi = \pi_{\text{ref}}$, where every log-ratio is 0 and so is every entry of the
# contrast matrix: nothing to look at. To see what the matrix holds *during* training we need a policy
# that has moved. A full DPO step on a 135M-parameter model takes from tens of seconds to minutes on a
# 2-core CPU (notebook 04 trains for real), so here we move it cheaply and say exactly how:
#
# > **The policy is SmolLM2 with its final RMSNorm scale (576 of its 135M parameters) tuned by a few DPO
# > steps on these pairs.** Everything before that layer is shared with the frozen reference, so its
# > activations are computed once (captured by a hook in the forward pass above), and a step costs only
# > the output layer on the response tokens.
#
# The first assertion checks that this shortcut reproduces the package's log-probabilities exactly
# when the norm is untouched; in the full run, a last full forward pass of a model carrying the tuned
# norm confirms the final numbers.

# %%
scored = batch["labels"][:, 1:] != -100  # (2M, T-1): positions whose NEXT token is a response token
row_of_token = scored.nonzero()[:, 0]  # (K,) which sequence each scored token belongs to
hidden = captured["hidden"][:, :-1][scored]  # (K, 576) final-layer states at those positions
targets = batch["labels"][:, 1:][scored]  # (K,) the response tokens they predict
final_norm = copy.deepcopy(reference.model.norm).requires_grad_(True)  # the only trained weights


def policy_logps() -> torch.Tensor:
    """Summed response log-probs of the policy (reference body, tuned final norm). Shape: (2M,)."""
    logits = reference.lm_head(final_norm(hidden)).float()  # (K, V)
    token_logps = logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=1)  # (K,)
    return torch.zeros(len(batch["labels"])).index_add(0, row_of_token, token_logps)  # (2M,)


torch.testing.assert_close(policy_logps().detach(), reference_logps, atol=1e-3, rtol=1e-5)
zero_matrix = contrast_matrix(policy_logps()[:M].detach() - reference_chosen_logps,
                              policy_logps()[M:].detach() - reference_rejected_logps, BETA)
assert zero_matrix.abs().max() < 1e-3  # policy = reference: an all-zero contrast matrix

optimizer = torch.optim.Adam(final_norm.parameters(), lr=1e-2)
for step in range(POLICY_STEPS):
    logps = policy_logps()
    if step == 1:
        after_one_step = logps.detach()  # kept for section 7's figure: a policy early in training
    losses, _, _ = dpo_loss(logps[:M], logps[M:], reference_chosen_logps, reference_rejected_logps, beta=BETA)
    optimizer.zero_grad()
    losses.mean().backward()
    optimizer.step()
    print(f"step {step + 1}: DPO loss before the step {losses.mean():.4f}")

with torch.no_grad():
    logps = policy_logps()
policy_chosen_logps, policy_rejected_logps = logps[:M], logps[M:]
accuracy = ((policy_chosen_logps - reference_chosen_logps)
            > (policy_rejected_logps - reference_rejected_logps)).float().mean()
print(f"after {POLICY_STEPS} steps: implicit-reward accuracy {accuracy:.2f} on the training pairs")
if VERIFY_WITH_FULL_FORWARD:
    policy = copy.deepcopy(reference)
    policy.model.norm.load_state_dict(final_norm.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(batch_sequence_logps(policy, batch), logps, atol=1e-3, rtol=1e-5)
    del policy
    print("full forward pass of the tuned policy agrees with the shortcut")

# %% [markdown]
# ## 4. The paired contrast matrix; DPO is its diagonal
#
# With the log-ratios of the chosen and rejected responses,
#
# $$
# c_i = \log \frac{\pi(y_{w,i} \mid x_i)}{\pi_{\text{ref}}(y_{w,i} \mid x_i)}, \qquad
# r_j = \log \frac{\pi(y_{l,j} \mid x'_j)}{\pi_{\text{ref}}(y_{l,j} \mid x'_j)},
# $$
#
# the contrast matrix is (paper Eq. 10, with $\log Z(x) \approx \log Z(x')$ as discussed in notebook 01,
# paper Eq. 13)
#
# $$ s_{ij} = \beta\,(c_i - r_j), \qquad S \in \mathbb{R}^{M \times N}. $$
#
# Row $i$ asks: how much more has the policy raised chosen response $i$ than rejected response $j$?
# In a paired batch ($N = M$, $x'_i = x_i$) the diagonal $s_{ii} = \beta(c_i - r_i)$ is exactly DPO's
# argument $\beta h_i$, and DPO's loss is $-\log\sigma(s_{ii})$. The off-diagonal entries are the new
# contrasts RPO adds: $M^2 - M$ of them instead of $M$.

# %%
chosen_logratios = policy_chosen_logps - reference_chosen_logps  # c, (M,)
rejected_logratios = policy_rejected_logps - reference_rejected_logps  # r, (M,)
paired_matrix = contrast_matrix(chosen_logratios, rejected_logratios, BETA)  # (M, M), Eq. 10

teaching = torch.tensor([[BETA * (c - r) for r in rejected_logratios.tolist()] for c in chosen_logratios.tolist()])
torch.testing.assert_close(paired_matrix, teaching)

# DPO is the diagonal.
dpo_losses, _, _ = dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                            reference_rejected_logps, beta=BETA)
torch.testing.assert_close(paired_matrix.diagonal(), BETA * (chosen_logratios - rejected_logratios))
torch.testing.assert_close(dpo_losses, -F.logsigmoid(paired_matrix.diagonal()))
only_diagonal = rpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                         diagonal_weights(M, alpha=1.0), beta=BETA, placement="loss")[0]
torch.testing.assert_close(only_diagonal, dpo_losses)  # RPO keeping only the diagonal is DPO

print("c (chosen log-ratios):  ", chosen_logratios)
print("r (rejected log-ratios):", rejected_logratios)
print("contrast matrix s_ij:\n", paired_matrix)
off_diagonal = ~torch.eye(M, dtype=torch.bool)
print(f"diagonal (DPO) contrasts > 0: {(paired_matrix.diagonal() > 0).sum()}/{M}; "
      f"off-diagonal contrasts > 0: {(paired_matrix[off_diagonal] > 0).sum()}/{M * M - M}")

# %% [markdown]
# The policy was trained only on the diagonal, yet the off-diagonal contrasts turn positive too (in the
# full run all 56 of them after 10 steps; section 7 shows the matrix after the first step as well): DPO
# raised chosen responses and lowered rejected ones in general, so each chosen response now also "beats"
# rejected responses to other prompts. RPO makes these comparisons part of the objective instead of a
# side effect.
#
# Note the structure: $S = \beta(c\,\mathbf{1}^\top - \mathbf{1}\,r^\top)$ is a difference of two vectors,
# so every row shows the same pattern shifted by $\beta c_i$, and every column the same pattern shifted by
# $-\beta r_j$. Computing it costs nothing beyond the $M + N$ log-probabilities a DPO step already needs; the
# forward passes are the same, only the loss looks at more combinations.
#
# ## 5. Why log-ratios and not raw log-probabilities
#
# A raw log-probability is a sum over tokens, so it is dominated by the response's length and by how
# predictable its text is: comparing $\log \pi(y_{w,i})$ with $\log \pi(y_{l,j})$ across prompts would
# mostly compare lengths, with differences of tens of nats. The log-ratio subtracts the reference's score
# of the *same* response and keeps only how far the policy has moved it. What is left is small; it can
# still grow with length (a longer response has more tokens to move), which is what length-normalised
# variants of DPO address.

# %%
raw_difference = policy_chosen_logps[:, None] - policy_rejected_logps[None, :]  # (M, 1) - (1, M) -> (M, M)
length_difference = (response_tokens[:M, None] - response_tokens[None, M:]).float()  # (M, M)


def correlation(a: torch.Tensor, b: torch.Tensor) -> str:
    if b.std() == 0:
        return "n/a (all responses have the same length)"
    return f"{torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item():+.2f}"


print("correlation with the difference in response length: "
      f"raw log-probs {correlation(raw_difference, length_difference)}, "
      f"log-ratios {correlation(paired_matrix, length_difference)}")
print(f"spread (std) of the entries: raw log-prob differences {raw_difference.std():.1f} nats, "
      f"log-ratio differences {(paired_matrix / BETA).std():.1f} nats")
per_token = torch.cat([chosen_logratios, rejected_logratios]) / response_tokens.float()  # (2M,) nats per token
print(f"log-ratio per response token: chosen {per_token[:M].mean():+.3f}, rejected {per_token[M:].mean():+.3f} nats")

# %% [markdown]
# How to read these numbers. The raw differences are tens of nats and follow length (about -0.85 in the full
# run): that is what the log-ratio removes. The log-ratios are much smaller, but they are still *sums over
# tokens*, so they can follow length too. In the full run the policy raised the chosen responses by about
# +0.15 nats per token and lowered the rejected ones by about 0.10 per token, so a long rejected response
# gets a very negative $r_j$ and large contrasts $s_{ij}$ in its column: $s_{ij}$ grows as rejected response $j$
# gets longer than chosen response $i$, which is the negative correlation (about -0.60). With 8 pairs this
# is a noisy estimate, not a property of RPO; but it is DPO's known length effect, RPO inherits it (its
# contrasts are the same sums), and length-normalised variants (each log-ratio divided by the response's
# token count) remove it.

# %% [markdown]
# ## 6. The unpaired $M \times N$ matrix
#
# RPO does not need pairs. With $M$ desirable responses and $N$ undesirable ones from any prompts
# (the paper's RPO-Unpaired setting, the data KTO uses) the same formula gives an $M \times N$ matrix. There
# is no diagonal to privilege: every entry is a cross-response contrast, and the weights (notebook 03)
# decide which ones matter. Below, the desirable responses are the chosen responses of the even-numbered
# prompts and the undesirable ones the rejected responses of the odd-numbered prompts (one fewer), so
# $M \ne N$, no prompt appears on both sides, and each topic still contributes a related pair.

# %%
desirable = list(range(0, M, 2))  # chosen responses of prompts 0, 2, 4, ...
undesirable = list(range(1, M, 2))[:-1] or [1]  # rejected responses of prompts 1, 3, ... (one fewer)
assert not set(desirable) & set(undesirable)  # every entry is a cross-prompt contrast
unpaired_matrix = contrast_matrix(chosen_logratios[desirable], rejected_logratios[undesirable], BETA)  # (M', N')
print(f"unpaired: M = {len(desirable)} desirable x N = {len(undesirable)} undesirable "
      f"-> {tuple(unpaired_matrix.shape)}")
torch.testing.assert_close(unpaired_matrix, paired_matrix[desirable][:, undesirable])  # the same contrasts, re-cut
print(unpaired_matrix)

# %% [markdown]
# ## 7. Heatmaps, and from the matrix to the RPO loss
#
# Red entries are contrasts the policy gets right ($s_{ij} > 0$), blue would be ones it gets wrong; one
# colour scale for all panels, and each panel's title counts the wrong ones. In the full run there is **no
# blue at all**: already after the first DPO step (left) every chosen response has moved up and every
# rejected response down relative to the reference, by a little (entries near 0.1); the next steps only
# widen the margins (middle). So on these 8 pairs DPO's side effect covers every cross-prompt contrast; on
# real training batches some stay wrong, and those are what RPO's extra terms push on. The outlined diagonal
# is everything DPO sees. Row labels give the prompt's topic and the words that tell it apart from its
# same-topic partner.

# %%
def distinguishing_label(index: int) -> str:
    """'[i] topic: words' with the prefix shared by the prompts of the same topic removed."""
    partners = [prompts[k] for k in range(M) if topics[k] == topics[index]]
    shared = os.path.commonprefix(partners) if len(partners) > 1 else ""
    shared = shared[: shared.rfind(" ") + 1]  # cut at a word boundary
    rest = prompts[index][len(shared):]
    return f"[{index}] {topics[index]}: {rest[:26]}{'...' if len(rest) > 26 else ''}"


short = [distinguishing_label(i) for i in range(M)]
early_matrix = contrast_matrix(after_one_step[:M] - reference_chosen_logps, after_one_step[M:] - reference_rejected_logps,
                               BETA)  # (M, M) after the first DPO step
early_name = f"paired, after 1 step ({int((early_matrix < 0).sum())} of {M * M} wrong)"
paired_name = f"paired, after {POLICY_STEPS} steps ({int((paired_matrix < 0).sum())} wrong)"
unpaired_name = f"unpaired {len(desirable)} x {len(undesirable)}, all cross-prompt"
plot_contrast_matrices(
    {early_name: early_matrix, paired_name: paired_matrix, unpaired_name: unpaired_matrix},
    row_labels={early_name: short, paired_name: short, unpaired_name: [short[i] for i in desirable]},
    col_labels={early_name: [f"[{j}]" for j in range(M)], paired_name: [f"[{j}]" for j in range(M)],
                unpaired_name: [f"[{j}]" for j in undesirable]},
    outline_diagonal={early_name: True, paired_name: True},
    path=FIGURES_DIR / "contrast_matrix.png",
);

# %% [markdown]
# The last step weights the contrasts and averages (paper Eq. 15):
# $\mathcal{L}_{\text{RPO}} = \frac{1}{M}\sum_i \frac{1}{N}\sum_j -\log\sigma(w_{ij}\, s_{ij})$, with
# $w_{ij}$ a softmax over $j$ of $-d_{ij}/\tau$ and $d_{ij}$ the cosine distance between the prompts'
# embeddings, with the paper's $\tau = 0.5$ for paired and $0.75$ for unpaired data. Notebook 03 explores
# the weights.
#
# This is the package's own code for Eq. 10 and Eq. 15, read from `rpo_tutorial/losses.py` when the cell runs
# (`inspect.getsource`), so what you read here is what trains: `contrast_matrix` is the broadcast
# $s = \beta(c\,\mathbf{1}^\top - \mathbf{1}\,r^\top)$, `rpo_pair_losses` applies the weights inside the log-sigmoid and
# takes the mean over $j$ (`placement="loss"` is the official code's variant for its diagonal strategy,
# notebook 03), and `rpo_loss` checks its inputs, forms the log-ratios in float32 and returns
# `(losses, chosen_rewards, rejected_rewards)` like every loss of the package.

# %%
import inspect

from IPython.display import Markdown, display

from rpo_tutorial.losses import rpo_pair_losses

display(Markdown("```python\n" + "\n".join(inspect.getsource(function) for function in
                                            (contrast_matrix, rpo_pair_losses, rpo_loss)) + "```"))

# %% [markdown]
# Here is the resulting loss on this batch.

# %%
embedder = PromptEmbedder()
prompt_embeddings = embedder.embed(prompts, show_progress=False)  # (M, 384)
weights = embedding_weights(prompt_embeddings, prompt_embeddings, tau=TAU)  # (M, M)
paired_losses = rpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                         weights, beta=BETA)[0]
unpaired_weights = embedding_weights(prompt_embeddings[desirable], prompt_embeddings[undesirable],
                                     tau=TAU_UNPAIRED)  # the paper's tau for unpaired data
unpaired_losses = rpo_loss(policy_chosen_logps[desirable], policy_rejected_logps[undesirable],
                           reference_chosen_logps[desirable], reference_rejected_logps[undesirable],
                           unpaired_weights, beta=BETA)[0]
same_topic = torch.tensor([[a == b for b in topics] for a in topics]) & off_diagonal
print(f"embedding weights (tau = {TAU}): own pair {weights.diagonal().mean():.3f}, "
      f"same-topic prompt {weights[same_topic].mean():.3f}, "
      f"other topics {weights[off_diagonal & ~same_topic].mean():.3f}")
print(f"DPO loss {dpo_losses.mean():.4f} | RPO paired loss {paired_losses.mean():.4f} | "
      f"RPO unpaired loss {unpaired_losses.mean():.4f}")
print(f"(at policy = reference every loss is log 2 = {torch.log(torch.tensor(2.0)):.4f})")

# %% [markdown]
# The RPO losses sit closer to $\log 2$ than DPO's: the weights sit inside the sigmoid and sum to 1 per
# row, so each contrast acts with an effective $\beta w_{ij} \approx \beta / N$ (notebook 03, section 4).
#
# **Next:** notebook 03 builds the weights $w_{ij}$ from real prompt embeddings and compares the
# strategies, including every difference between the paper and the official code.
