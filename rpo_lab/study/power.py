"""The design's power, stated before any held-out pair is scored: from the validation runs of the tuning phase.

For a question "method a vs method b" the held-out estimate is the mean over S seeds and P held-out
pairs of d_sp = o_a,sp - o_b,sp (outcomes 0 / 0.5 / 1; the same P pairs in every seed: the crossed
design of ``inference``). Its variance is sigma_b^2 / S + var(mu_p) / P + var(e_sp) / (S P), with
mu_p the pair's mean difference and e_sp the seed-to-seed scatter around it. One tuning seed at the
chosen rates gives var_d = var(mu_p) + var(e_sp) on the validation pairs, so

    SE_design = sqrt(var_d / P)

is what pair sampling alone contributes at most (the between-seed variance sigma_b^2 is not seen by
one tuning seed; the realised standard errors of the results carry it, ``compare.power_lines``).
The minimal detectable difference at 80 % power, two-sided alpha 0.05, is
``inference.minimal_detectable_difference``: (t_{0.975, S-1} + t_{0.8, S-1}) x SE, the rule of the
report's power lines; next to it the same with normal quantiles (2.80 x SE), the limit when pair
sampling dominates (the t rule with S - 1 degrees of freedom is conservative then: the pair
variance is estimated from P - 1 >> S - 1 degrees of freedom).
"""
from __future__ import annotations

import math

import numpy as np

from rpo_lab.study.inference import minimal_detectable_difference
from rpo_lab.study.settings import StudySettings

LARGE_DF = 10 ** 9  # minimal_detectable_difference with this many "seeds" uses normal quantiles


def _outcomes(tuning: list[dict], method: str, rate: float) -> dict[int, np.ndarray]:
    return {record["seed"]: np.asarray(record["outcomes2"], dtype=float) / 2.0 for record in tuning
            if record["method"] == method and record["learning_rate"] == rate}


def design_power(tuning: list[dict], rates: dict[str, float], settings: StudySettings,
                 asked: list[tuple[str, str]], heldout_pairs: int | None = None) -> dict:
    """Per question (and DPO vs each method): discordance, SE_design and the MDDs; plus printable lines."""
    pairs = heldout_pairs or settings.heldout_pairs
    seeds = len(settings.seeds)
    wanted = list(asked) + [(m, "dpo") for m in settings.methods if m != "dpo" and (m, "dpo") not in asked]
    rows = []
    for focus, other in wanted:
        a, b = _outcomes(tuning, focus, rates[focus]), _outcomes(tuning, other, rates[other])
        common = sorted(set(a) & set(b))
        if not common:
            continue
        differences = np.concatenate([a[s] - b[s] for s in common])  # validation pairs of every tuning seed
        variance = float(differences.var(ddof=1)) if differences.size > 1 else 0.0
        se = math.sqrt(variance / pairs)
        rows.append({"method": focus, "against": other, "primary": (focus, other) in asked,
                     "discordance": float(np.mean(differences != 0)), "variance": variance, "se_design": se,
                     "mdd": minimal_detectable_difference(se, seeds), "mdd_normal":
                     minimal_detectable_difference(se, LARGE_DF)})
    asked_rows = [row for row in rows if row["primary"]] or rows
    worst = max(asked_rows, key=lambda row: row["mdd_normal"], default=None)
    warning = None if worst is None or worst["mdd_normal"] <= TARGET_DIFFERENCE else (
        f"the held-out set is too small for {worst['method']} vs {worst['against']}: with {pairs} pairs the minimal "
        f"detectable difference at 80 % power is {100 * worst['mdd_normal']:.1f} points from pair sampling alone "
        f"({100 * worst['mdd']:.1f} with {seeds} seed(s) and t quantiles; design, from the validation runs; "
        f"{100 * TARGET_DIFFERENCE:.0f} wanted)")
    return {"heldout_pairs": pairs, "seeds": seeds, "rows": rows, "lines": power_text(rows, pairs, seeds),
            "warning": warning}


def power_text(rows: list[dict], pairs: int, seeds: int) -> list[str]:
    """One line per primary question, then the median over the rest, in accuracy points."""
    lines = []
    for row in rows:
        if row["primary"] and row["discordance"] == 0:
            low, high = (100 * minimal_detectable_difference(math.sqrt(q / pairs), LARGE_DF)
                         for q in REFERENCE_DISCORDANCE)
            lines.append(f"power (design): {row['method']} vs {row['against']}: the methods agree on every validation "
                         "pair, which gives no variance to size the design with; for methods that disagree on "
                         f"{REFERENCE_DISCORDANCE[0]:.0%} / {REFERENCE_DISCORDANCE[1]:.0%} of {pairs} held-out pairs "
                         f"the minimal detectable difference at 80 % power is {low:.1f} / {high:.1f} points (pair "
                         "sampling alone, normal quantiles)")
        elif row["primary"]:
            lines.append(f"power (design): {row['method']} vs {row['against']}: the methods disagree on "
                         f"{row['discordance']:.0%} of validation pairs; with {pairs} held-out pairs x {seeds} seeds "
                         f"a difference of {100 * row['mdd']:.1f} points is detected with 80 % power (alpha 0.05, "
                         f"t with {seeds - 1} df; {100 * row['mdd_normal']:.1f} with normal quantiles)")
    rest = [row["mdd"] for row in rows if not row["primary"]]
    if rest:
        lines.append(f"power (design): the other methods vs dpo: median {100 * float(np.median(rest)):.1f} points "
                     f"(range {100 * min(rest):.1f}-{100 * max(rest):.1f})")
    return lines


TARGET_DIFFERENCE = 0.03  # the accuracy difference a study should resolve (3 points)
REFERENCE_DISCORDANCE = (0.10, 0.30)  # shares of held-out pairs on which two methods' outcomes differ


def heldout_warning(pairs: int, seeds: int) -> str | None:
    """A one-line warning when ``pairs`` held-out pairs cannot resolve 3 points even for closely related methods.

    Before anything trains the methods' disagreement is unknown; pair sampling alone puts the minimal
    detectable difference at 2.80 x sqrt(q / P) for methods that disagree on a share q of the pairs
    (more seeds do not shrink it: every seed is scored on the same pairs).
    """
    low, high = (minimal_detectable_difference(math.sqrt(q / pairs), LARGE_DF) for q in REFERENCE_DISCORDANCE)
    if low <= TARGET_DIFFERENCE:
        return None
    return (f"{pairs} held-out pairs are too few to resolve a {100 * TARGET_DIFFERENCE:.0f}-point accuracy difference: "
            f"with {seeds} seed(s) the minimal detectable difference at 80 % power is {100 * low:.1f} points for "
            f"methods that disagree on {REFERENCE_DISCORDANCE[0]:.0%} of the pairs, {100 * high:.1f} at "
            f"{REFERENCE_DISCORDANCE[1]:.0%} (pair sampling alone); about "
            f"{math.ceil(REFERENCE_DISCORDANCE[0] * (2.8 / TARGET_DIFFERENCE) ** 2):,} pairs resolve it "
            "(--heldout FILE or --heldout-pairs)")
