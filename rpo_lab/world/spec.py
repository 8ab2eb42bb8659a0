"""What the synthetic world is (``WorldSpec``) and what the study does in it (``StudyDesign``).

The world is fixed by the gate (issue 20): its difficulty was tuned on DPO alone until DPO
reached >= 70 % test accuracy in the data-rich arm, then frozen (``FROZEN_WORLD``) before any
RPO number was computed; ``docs/study/gate_log.md`` lists every gate run. A seed draws a new
world from the spec (r* directions, token features, embeddings, the SFT distribution), trains
its reference, samples its pairs and orders its batches, so seeds are independent replications.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class WorldSpec:
    """Sizes and scales of one world draw; every field is part of the frozen world."""

    # ---- prompts ---------------------------------------------------------------------------------
    num_groups: int = 4  # groups of clusters; group directions are +-a, +-b, ... (opposite or orthogonal)
    clusters_per_group: int = 4  # clusters in a group share the group's reward direction (plus jitter)
    detail_positions: int = 2  # detail tokens after the cluster token; r* ignores them
    detail_vocab: int = 16  # values of each detail token: detail_vocab ** detail_positions prompts per cluster
    # ---- responses and the true reward r* ---------------------------------------------------------
    response_vocab: int = 16  # response tokens
    response_length: int = 4  # tokens per response
    feature_dim: int = 4  # token features phi(t) in R^F; r*(x, y) = u_c . mean_t phi(y_t)
    cluster_jitter: float = 0.3  # u_c = normalise(u_group + jitter * noise): clusters of a group nearly agree
    # ---- prompt embeddings (what RPO's weights see) -----------------------------------------------
    embedding_dim: int = 16
    embedding_group_scale: float = 1.0  # e(x) = group part + cluster part + detail part (Gaussian directions)
    embedding_cluster_scale: float = 0.6
    embedding_detail_scale: float = 0.3
    # ---- the SFT distribution (independent of r*) ---------------------------------------------------
    sft_cluster_scale: float = 1.0  # token logits: cluster part + detail part + bigram part
    sft_detail_scale: float = 0.5
    sft_bigram_scale: float = 0.5
    sft_examples: int = 8192  # (prompt, response) examples the reference is trained on
    # ---- the reference: a tiny transformer trained by maximum likelihood -----------------------------
    model_dim: int = 24
    num_layers: int = 2
    num_heads: int = 2
    reference_steps: int = 600  # Adam steps of maximum likelihood on the SFT examples
    reference_batch_size: int = 128
    reference_learning_rate: float = 3e-3
    # ---- preference pairs -------------------------------------------------------------------------
    samples_per_prompt: int = 4  # k: a pair is the best and the worst of k reference samples under r*
    label_noise: float = 0.10  # mean Bradley-Terry flip probability of train / validation labels
    train_prompts_per_cluster: int = 32  # the data-rich arm's pairs per cluster (smaller arms are subsets)
    validation_prompts_per_cluster: int = 16  # labelled like train (with noise): choosing learning rates
    test_prompts_per_cluster: int = 64  # labelled by r* without noise: the test accuracy
    gain_prompts_per_cluster: int = 8  # test prompts on which the true-reward gain is sampled
    gain_samples: int = 8  # samples per gain prompt, shared random numbers for policy and reference

    @property
    def num_clusters(self) -> int:
        return self.num_groups * self.clusters_per_group

    @property
    def prompt_length(self) -> int:
        """Cluster token, detail tokens and the separator."""
        return 1 + self.detail_positions + 1

    @property
    def vocab_size(self) -> int:
        """Input tokens: clusters, details, the separator, responses."""
        return self.num_clusters + self.detail_vocab + 1 + self.response_vocab

    def check(self) -> None:
        if self.feature_dim * 2 < self.num_groups:
            raise ValueError(f"WorldSpec.feature_dim={self.feature_dim} gives at most {2 * self.feature_dim} "
                             f"opposite / orthogonal group directions, need num_groups={self.num_groups}")
        if self.model_dim % self.num_heads:
            raise ValueError(f"WorldSpec.model_dim={self.model_dim} must be a multiple of num_heads={self.num_heads}")
        per_cluster = self.train_prompts_per_cluster + self.validation_prompts_per_cluster + \
            self.test_prompts_per_cluster
        if per_cluster > self.detail_vocab ** self.detail_positions:
            raise ValueError(f"WorldSpec asks {per_cluster} distinct prompts per cluster but only "
                             f"{self.detail_vocab ** self.detail_positions} exist")
        if self.gain_prompts_per_cluster > self.test_prompts_per_cluster:
            raise ValueError("WorldSpec.gain_prompts_per_cluster must be <= test_prompts_per_cluster")
        if not 0.0 < self.label_noise < 0.5:
            raise ValueError(f"WorldSpec.label_noise must be in (0, 0.5), got {self.label_noise!r}")


@dataclass(frozen=True)
class StudyDesign:
    """Methods, regimes, arms, sizes and seeds of a synthetic study (``rpo-tutorial study --preset synthetic``)."""

    world: WorldSpec = WorldSpec()
    methods: tuple[str, ...] = ()  # keys of methods.METHODS; () = all
    regimes: tuple[tuple[str, float], ...] = (("curvature", 0.1), ("linear", 0.0002))  # (name, DPO beta)
    batch_arms: tuple[str, ...] = ("random", "stratified")  # random batches / similarity-sampler batches
    pairs_per_cluster: tuple[int, ...] = (2, 8, 32)  # train sizes (nested subsets); the first is data-poor
    seeds: tuple[int, ...] = tuple(range(24))  # evaluation seeds
    tuning_seeds: tuple[int, ...] = (1000, 1001)  # learning rates are chosen on these seeds' validation pairs
    learning_rates: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # the one shared grid
    batch_size: int = 16  # pairs per step (unpaired methods: 16 desirable + 16 undesirable responses)
    steps: int = 200  # Adam steps per run
    checkpoints: int = 8  # learning-curve points (test subset) per run
    curve_pairs_per_cluster: int = 8  # test pairs per cluster scored at each checkpoint
    bootstrap_samples: int = 10000  # two-level bootstrap draws per interval
    workers: int = 2  # processes (one torch thread each); results do not depend on it

    def replace(self, **changes) -> "StudyDesign":
        return dataclasses.replace(self, **changes)

    def check(self) -> None:
        self.world.check()
        if not self.seeds or set(self.seeds) & set(self.tuning_seeds):
            raise ValueError(f"StudyDesign: evaluation seeds {self.seeds} must be non-empty and distinct from the "
                             f"tuning seeds {self.tuning_seeds}")
        if len(set(self.seeds)) != len(self.seeds) or not self.tuning_seeds or not self.learning_rates:
            raise ValueError("StudyDesign: seeds must be distinct; tuning_seeds and learning_rates non-empty")
        bad = [size for size in self.pairs_per_cluster if not 1 <= size <= self.world.train_prompts_per_cluster]
        if bad or list(self.pairs_per_cluster) != sorted(set(self.pairs_per_cluster)):
            raise ValueError(f"StudyDesign.pairs_per_cluster must increase, within [1, "
                             f"{self.world.train_prompts_per_cluster}], got {self.pairs_per_cluster}")
        if min(self.pairs_per_cluster) * self.world.num_clusters < 2 * self.batch_size:
            raise ValueError(f"StudyDesign: the smallest arm has {min(self.pairs_per_cluster) * self.world.num_clusters}"
                             f" pairs, fewer than two batches of {self.batch_size} (unpaired methods need two)")
        unknown = [arm for arm in self.batch_arms if arm not in ("random", "stratified")]
        if unknown or not self.batch_arms:
            raise ValueError(f"StudyDesign.batch_arms must name 'random' and/or 'stratified', got {self.batch_arms}")
        if self.curve_pairs_per_cluster > self.world.test_prompts_per_cluster:
            raise ValueError("StudyDesign.curve_pairs_per_cluster must be <= the world's test prompts per cluster")
        for name in ("batch_size", "steps", "checkpoints", "bootstrap_samples", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"StudyDesign.{name} must be a positive integer, got {value!r}")


_NOT_RESULTS = {"seeds", "workers", "bootstrap_samples"}  # change no unit's result (a cache stays valid)


def design_fingerprint(design: StudyDesign) -> dict:
    """The design fields a cached unit's result depends on (stored in it, compared on resume)."""
    values = dataclasses.asdict(design)
    return json_ready({key: value for key, value in values.items() if key not in _NOT_RESULTS})


def json_ready(value):
    """Tuples as lists, recursively (so a fingerprint equals itself after a JSON round trip)."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value
