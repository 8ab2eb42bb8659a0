"""The official code's behaviour as one switch on top of any configuration.

The paper's numbers were produced by the authors' code, which differs from the paper's text in
five settings (notebook 03, section 6, measures each). This module sets all five at once:

    from rpo_tutorial.training.config import get_preset
    from rpo_tutorial.training.official import official_convention
    config = official_convention(get_preset("paper"))                       # embedding weights
    config = official_convention(get_preset("paper"), weighting="diagonal")  # overrides win

    rpo-tutorial train --preset paper --convention official ...            # the same from the CLI

| setting              | paper (default here)   | official code (this switch)                      |
|----------------------|------------------------|--------------------------------------------------|
| ``placement``        | "score" (Eq. 15)       | "loss" for the diagonal strategy, else "score"   |
| ``uniform_convention`` | "paper": 1/N         | "official": 1 (mean over all M x N contrasts)    |
| ``alpha``            | 0.5                    | 0.8 (diagonal strategy, Eq. 14)                  |
| ``contrast_scope``   | "local"                | "local": one 8 x 8 matrix per GPU                |
| ``embed_text``       | "last_user_turn"       | "full_prompt"                                    |
"""
from __future__ import annotations

from rpo_tutorial.training.config import RPOConfig

CONVENTION_NAMES = ("paper", "official")
OFFICIAL_CODE = dict(uniform_convention="official", alpha=0.8, contrast_scope="local", embed_text="full_prompt")


def official_placement(weighting: str) -> str:
    """The official code puts diagonal weights on the loss term and every other weight inside the sigmoid."""
    return "loss" if weighting == "diagonal" else "score"


def official_convention(config: RPOConfig, **overrides) -> RPOConfig:
    """``config`` with the official code's settings (table above), then ``overrides`` applied.

    The placement follows the final weighting (an overridden ``weighting`` included) unless
    ``placement`` itself is overridden.
    """
    weighting = overrides.get("weighting", config.weighting)
    settings = {**OFFICIAL_CODE, "placement": official_placement(weighting), **overrides}
    return config.replace(**settings)


def apply_convention(config: RPOConfig, convention: str, **overrides) -> RPOConfig:
    """``config`` in the named convention: "paper" (unchanged, overrides applied) or "official"."""
    if convention not in CONVENTION_NAMES:
        raise ValueError(f"convention must be one of {CONVENTION_NAMES}, got {convention!r}")
    if convention == "official":
        return official_convention(config, **overrides)
    return config.replace(**overrides) if overrides else config
