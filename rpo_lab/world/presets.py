"""Named synthetic designs: the committed study, notebook 04's CPU run, a seconds-long smoke run, the gate.

``FROZEN_WORLD`` is the world the gate froze (``docs/study/gate_log.md``) and ``synthetic`` the
design it froze with: their fields are the defaults at the commit that froze them, written out here so
that a later change of a default cannot silently change the study.
"""
from __future__ import annotations

from rpo_lab.world.spec import StudyDesign, WorldSpec

FROZEN_WORLD = WorldSpec(
    num_groups=4, clusters_per_group=4, detail_positions=2, detail_vocab=16, response_vocab=16, response_length=4,
    feature_dim=4, cluster_jitter=0.3, embedding_dim=16, embedding_group_scale=1.0, embedding_cluster_scale=0.6,
    embedding_detail_scale=0.3, sft_cluster_scale=1.0, sft_detail_scale=0.5, sft_bigram_scale=0.5, sft_examples=8192,
    model_dim=24, num_layers=2, num_heads=2, reference_steps=600, reference_batch_size=128,
    reference_learning_rate=3e-3, samples_per_prompt=4, label_noise=0.10, train_prompts_per_cluster=32,
    validation_prompts_per_cluster=16, test_prompts_per_cluster=64, gain_prompts_per_cluster=8, gain_samples=8)

# a world small enough for tests and CI (never the study's world)
SMOKE_WORLD = WorldSpec(
    num_groups=2, clusters_per_group=2, detail_vocab=6, response_vocab=6, response_length=3, feature_dim=2,
    embedding_dim=6, sft_examples=256, model_dim=8, num_layers=1, num_heads=2, reference_steps=20,
    reference_batch_size=32, train_prompts_per_cluster=8, validation_prompts_per_cluster=4,
    test_prompts_per_cluster=8, gain_prompts_per_cluster=2, gain_samples=4)

SYNTHETIC_PRESETS: dict[str, StudyDesign] = {
    # the committed study (docs/study/): every method, both regimes and batch arms, three train sizes
    "synthetic": StudyDesign(
        world=FROZEN_WORLD, methods=(), regimes=(("curvature", 0.1), ("linear", 0.0002)),
        batch_arms=("random", "stratified"), pairs_per_cluster=(2, 8, 32), seeds=tuple(range(24)),
        tuning_seeds=(1000, 1001), learning_rates=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1), batch_size=16, steps=200,
        checkpoints=8, curve_pairs_per_cluster=8, bootstrap_samples=10000),
    # notebook 04 on 2 CPU cores: the five questions' methods, the curvature regime, two sizes, fewer seeds
    "synthetic-notebook": StudyDesign(world=FROZEN_WORLD, methods=("dpo", "rpo-emb", "rpo-uniform", "dpo-own-beta",
                                                                   "rpo-own-pair", "rpo-placebo"),
                                      regimes=(("curvature", 0.1),), pairs_per_cluster=(2, 32), seeds=tuple(range(8)),
                                      tuning_seeds=(1000, 1001)),
    # seconds: the whole machinery on a tiny world (tests, CI, notebook smoke mode)
    "synthetic-smoke": StudyDesign(world=SMOKE_WORLD, pairs_per_cluster=(2, 4), seeds=(0, 1), tuning_seeds=(1000,),
                                   learning_rates=(3e-3, 3e-2), batch_size=4, steps=6, checkpoints=2,
                                   curve_pairs_per_cluster=2, bootstrap_samples=500),
}
