"""``study.md`` of the synthetic study: design, power (before any result), the five questions, the rest."""
from __future__ import annotations

from rpo_lab.study.compare import method_table, p_text, power_lines, question_table
from rpo_lab.world.methods import FOCUS, QUESTIONS
from rpo_lab.world.labels import ARM_TEXT, FORMATS, LABELS, cell_label
from rpo_lab.world.run import method_keys
from rpo_lab.world.spec import StudyDesign


def _design_text(report: dict, design: StudyDesign) -> list[str]:
    w, world = design.world, report["world"]
    regimes = ", ".join(f"{name} (DPO beta {beta:g})" for name, beta in design.regimes)
    return [
        "## Design", "",
        f"- **World** (frozen by the DPO-only gate, `gate_log.md`): {w.num_clusters} clusters in {w.num_groups} groups "
        f"(prompt = cluster token + {w.detail_positions} detail tokens of {w.detail_vocab} values); responses of "
        f"{w.response_length} tokens from {w.response_vocab}; r*(x, y) = u_c . mean_t phi(y_t) with phi in "
        f"R^{w.feature_dim}, group directions opposite (+a, -a) or orthogonal (a, b), clusters jittered by {w.cluster_jitter:g}; prompt embeddings "
        f"in R^{w.embedding_dim} reflect group and cluster.",
        f"- **Reference**: a {w.num_layers}-layer transformer (width {w.model_dim}) trained from scratch by maximum "
        f"likelihood on {w.sft_examples} samples of an SFT distribution that ignores r* (NLL "
        f"{world['reference_nll_per_token']:.3f} per token vs the distribution's own {world['sft_nll_per_token']:.3f}).",
        f"- **Pairs**: best and worst of {w.samples_per_prompt} reference samples under r*; train and validation labels "
        f"with Bradley-Terry noise (mean flip {w.label_noise:.0%}; realised agreement with r* "
        f"{world['train_label_agreement_with_r_star']:.1%}); {w.test_prompts_per_cluster * w.num_clusters} test pairs "
        f"per seed labelled by r* without noise; true-reward gain on {w.gain_prompts_per_cluster * w.num_clusters} test "
        f"prompts x {w.gain_samples} samples with common random numbers.",
        f"- **Training**: {design.steps} Adam steps of {design.batch_size} pairs from the reference; regimes {regimes}; "
        f"batch arms {', '.join(ARM_TEXT[a] for a in design.batch_arms)}; train sizes {list(design.pairs_per_cluster)} "
        f"pairs per cluster (nested).",
        f"- **Learning rates**: each method x regime x arm x size gets the rate of the grid "
        f"{list(design.learning_rates)} with the best validation accuracy on tuning seeds {list(design.tuning_seeds)} "
        "(never the test pairs).",
        f"- **Seeds**: {len(report['seeds'])} evaluation seeds (a seed = world draw + reference + data order + label "
        "noise); every method of a seed shares them and its test pairs, so differences are paired.",
        "- **Intervals**: bootstrap over seeds (each seed keeps its own test pairs, whose sampling noise is in its mean; "
        "`rpo_lab/study/inference.py`); 95 % percentile intervals for single methods; differences carry Holm-adjusted "
        "p-values and Bonferroni-level (family-wise) intervals; pairs are never pooled across seeds as independent.",
        f"- **Diverged runs** (non-finite log-probs or loss; such a run scores 0 on every pair): "
        f"{'; '.join(report['diverged_runs']) or 'none'}.", ""]


def _power(report: dict) -> list[str]:
    return ["## Power (stated before any result)", "",
            "Minimal detectable differences of the primary family (RPO embedding against each of the five comparators, "
            "every condition, both metrics), from the observed between-seed and within-seed variances:", "",
            *power_lines(report["analysis"], FORMATS), ""]


def rate_note(comparison: dict) -> str:
    """A dagger where the two sides trained at different (validation-chosen) learning rates."""
    return " †" if comparison["rates"][0] != comparison["rates"][1] else ""


def _equal_rates(report: dict) -> list[str]:
    """Primary comparisons split by whether both sides trained at the same learning rate."""
    lines = []
    for metric, fmt in FORMATS.items():
        found = [c for c in report["analysis"]["comparisons"] if c["family"] == "primary" and c["metric"] == metric]
        for equal in (True, False):
            part = [c for c in found if (c["rates"][0] == c["rates"][1]) == equal]
            if not part:
                continue
            significant = [c for c in part if c["p_holm"] < 0.05]
            largest = max(part, key=lambda c: abs(c["mean"]))
            lines.append(
                f"- {fmt.label}, {'same' if equal else 'different'} learning rates ({len(part)} of {len(found)}): "
                f"{len(significant)} significant after Holm; largest |difference| "
                f"{abs(largest['mean']) * fmt.scale:.{fmt.digits}f} ({LABELS[largest['method']]} vs "
                f"{LABELS[largest['against']]}, {largest['cell_label']}, {p_text(largest['p_holm'])}).")
    return lines


def _verdicts(report: dict) -> list[str]:
    lines = []
    for other in QUESTIONS:
        for metric, fmt in FORMATS.items():
            found = [c for c in report["analysis"]["comparisons"] if c["family"] == "primary"
                     and c["against"] == other and c["metric"] == metric]
            if not found:
                continue
            better = [c for c in found if c["p_holm"] < 0.05 and c["mean"] > 0]
            worse = [c for c in found if c["p_holm"] < 0.05 and c["mean"] < 0]
            where = "; ".join(f"{c['cell_label']}: {c['mean'] * fmt.scale:+.{fmt.digits}f}"
                              f"{' at rates ' + ' vs '.join(f'{r:g}' for r in c['rates']) if rate_note(c) else ''}"
                              for c in better + worse)
            lines.append(f"- {LABELS[FOCUS]} vs {LABELS[other]}, {fmt.label}: higher in {len(better)}, lower in "
                         f"{len(worse)}, no detectable difference in {len(found) - len(better) - len(worse)} of "
                         f"{len(found)} conditions" + (f" ({where})" if where else "") + ".")
    return lines


def _curvature(report: dict, design: StudyDesign) -> list[str]:
    methods = method_keys(design)
    lines = ["## Where the methods can separate: share of sigmoid arguments beyond +-1", "",
             "At the last step, the share of the loss's sigmoid arguments with |argument| > 1 (RPO: every "
             "w_ij beta (c_i - r_j); DPO: beta h_i; KTO: beta (c - z_ref), beta (z_ref - r)). Near 0 the loss is linear "
             "in the log-ratios, where matched RPO's gradient is DPO's on the chosen side and DPO's times the weight "
             "column sums on the rejected side: the methods cannot separate there beyond that reweighting.", "",
             "| condition | " + " | ".join(LABELS[m] for m in methods) + " |", "|---|" + "---|" * len(methods)]
    for regime, _ in design.regimes:
        for arm in design.batch_arms:
            for size in design.pairs_per_cluster:
                key = f"{regime}/{arm}/{size}"
                lines.append(f"| {cell_label(regime, arm, size)} | " + " | ".join(
                    f"{report['curvature_share'][f'{key}/{m}']:.0%} (h {report['train_margin'][f'{key}/{m}']:.0f})"
                    for m in methods) + " |")
    return lines + ["", "(h: mean own-pair train margin at the last step, nats; for 'RPO own-pair terms only' it is "
                    "w_ii h, the margin its loss sees.)", ""]


def _rates(report: dict, design: StudyDesign) -> list[str]:
    methods = method_keys(design)
    lines = ["## Learning rates chosen on validation", "",
             "| condition | " + " | ".join(LABELS[m] for m in methods) + " |", "|---|" + "---|" * len(methods)]
    for regime, _ in design.regimes:
        for arm in design.batch_arms:
            for size in design.pairs_per_cluster:
                lines.append(f"| {cell_label(regime, arm, size)} | " + " | ".join(
                    f"{report['learning_rates'][f'{regime}/{arm}/{size}/{m}']:g}" for m in methods) + " |")
    return lines + [""]


def study_markdown(report: dict, design: StudyDesign) -> str:
    analysis = report["analysis"]
    lines = ["# Synthetic RPO study: when do cross-prompt contrasts help?", "",
             f"Command: `{report['command']}` (reproduces this file and `study.json` byte for byte from a clean cache "
             "on the machine that made them).", "", *_design_text(report, design), *_power(report),
             "## The five questions (primary family, Holm-corrected)", "",
             "Each entry: RPO embedding minus the comparator (paired by seed and test pair), the family-wise "
             "(Bonferroni-level) interval and the Holm-adjusted p-value; **bold**: Holm p < 0.05. Test accuracy in "
             "points, gain in r* units. †: the two methods trained at different learning rates (each chose its own "
             "on validation), so the difference includes the effect of that choice.", "", *_verdicts(report), "",
             "Split by whether the two sides trained at the same learning rate:", "", *_equal_rates(report), "",
             *question_table(analysis, FORMATS, LABELS, rate_note), "", *_curvature(report, design),
             "## Every method per condition (secondary family: each against DPO, Holm-corrected)", ""]
    for index, cell in enumerate(analysis["cells"]):
        lines += [f"### {cell['label']}", "", *method_table(analysis, index, FORMATS, LABELS, rate_note), ""]
    lines += [*_rates(report, design), "## Figures", "",
              "- `study_regimes.png`: test accuracy and true-reward gain against train pairs per cluster, one line per "
              "method, 95 % intervals; one column per regime and batch arm.",
              "- `study_learning_curves.png`: test accuracy (subset) during training, mean over seeds.", ""]
    return "\n".join(lines)
