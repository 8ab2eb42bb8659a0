"""``study.md`` of a real-model study: the power first, the main table, the five questions, the design."""
from __future__ import annotations

from rpo_lab.study.compare import method_table, power_lines, question_table
from rpo_lab.study.settings import FORMATS, LABELS
from rpo_lab.world.methods import FOCUS

LEARNED = 0.60  # DPO's held-out accuracy the study must reach for its comparisons to mean something


def _power(report: dict) -> list[str]:
    power = report["design_power"]
    if not report["analysis"]["comparisons"]:
        methods = ", ".join(LABELS[m] for m in report["learning_rates"])
        return ["## Power", "", f"One method ({methods}): no comparison, so no power to state; the table below is "
                "its held-out accuracy alone.", ""]
    return ["## Power", "",
            "**Design power, from the validation runs alone** (`power.py`: the tuning seed's validation runs at the "
            "chosen learning rates, pair sampling alone; the run prints it before its evaluation phase, and no "
            "held-out result enters it):", "",
            *[f"- {line.removeprefix('power (design): ')}" for line in power["lines"]], "",
            "**Realised** (the comparison layer's power lines, from the standard errors of the results, which also "
            "carry the between-seed variance):", "", *power_lines(report["analysis"], FORMATS), ""]


def _verdicts(report: dict) -> list[str]:
    lines = []
    for c in report["analysis"]["comparisons"]:
        if c["family"] != "primary":
            continue
        if c["p_holm"] < 0.05:
            verdict = "higher" if c["mean"] > 0 else "lower"
        else:
            verdict = "no detectable difference"
        lines.append(f"- {LABELS[c['method']]} vs {LABELS[c['against']]}: {100 * c['mean']:+.1f} points "
                     f"[{100 * c['ci_low_corrected']:+.1f}, {100 * c['ci_high_corrected']:+.1f}] (Holm p "
                     f"{c['p_holm']:.2g}): **{verdict}**; "
                     + (f"detectable at 80 % power: {100 * c['mdd']:.1f} points." if c["mdd"] > 0
                        else "no variance (the same outcome on every pair): it can detect nothing."))
    return lines


def _questions(report: dict) -> list[str]:
    title = f"## The five questions: {LABELS[FOCUS]} against ... (primary family, Holm-corrected)"
    if not any(c["family"] == "primary" for c in report["analysis"]["comparisons"]):
        return [title, "", f"Not asked: the questions need {LABELS[FOCUS]} (`rpo-emb`) and at least one comparator "
                f"among the methods ({', '.join(report['learning_rates'])}).", ""]
    return [title, "", *_verdicts(report), "", *question_table(report["analysis"], FORMATS, LABELS), ""]


def _dpo_line(report: dict) -> list[str]:
    dpo = report["analysis"]["cells"][0]["summaries"]["accuracy"]["dpo"]
    learned = dpo["ci_low"] >= LEARNED - 1e-12 or dpo["mean"] >= LEARNED
    return [f"DPO's held-out accuracy: **{100 * dpo['mean']:.1f} %** [{100 * dpo['ci_low']:.1f}, "
            f"{100 * dpo['ci_high']:.1f}] (the bar: {LEARNED:.0%}; " +
            ("DPO learns the preference at this budget)." if learned else
             "DPO does NOT reach it at this budget: read the comparisons below as between weakly trained "
             "policies)."), ""]


def _design(report: dict) -> list[str]:
    s, source = report["settings"], report["source"]
    kept = source.get("kept") or source.get("sizes") or {}
    rates = report["learning_rates"]
    heldout = f"the held-out file {source.get('heldout')}" if source.get("heldout") else "split off the dataset"
    return [
        "## Design", "",
        f"- **Data**: {source.get('dataset')} ({source.get('pairs_read')} valid pairs read); split by prompt (no "
        f"prompt in two parts; distinct prompts shuffled with seed {s['split_seed']}): {kept.get('train')} train, "
        f"{kept.get('validation')} validation (learning rates), {kept.get('heldout')} held-out pairs ({heldout})."
        + (f" Notes: {'; '.join(source['notes'])}." if source.get("notes") else ""),
        f"- **Sequences**: the prompt left-truncated to {s['max_prompt_length']} tokens (its latest turns), prompt + "
        f"response at most {s['max_length']} tokens (a response keeps its start).",
        f"- **Model**: {'SmolLM2-135M-Instruct (bundled)' if s['model'] == 'bundled' else s['model']}; the top "
        f"{s['trainable_layers']} decoder layers and the final norm train, every lower layer and the tied embeddings "
        "stay frozen (their features are computed once); the reference of every run is the pretrained model.",
        f"- **Training**: {s['steps']} Adam steps of {s['batch_size']} pairs (random batches from the seed's data "
        f"order, shared by every method), gradient norm clipped at {s['max_grad_norm']:g}; DPO beta {s['beta']:g}, "
        f"matched RPO beta x N = {s['beta'] * s['batch_size']:g}.",
        f"- **Learning rates**: each method takes the rate of the grid {s['learning_rates']} with the best validation "
        f"accuracy on tuning seed(s) {s['tuning_seeds']} (ties: the smaller); chosen: "
        + ", ".join(f"{LABELS[m]} {r:g}" for m, r in rates.items()) + ".",
        f"- **Seeds**: {len(s['seeds'])} evaluation seeds {s['seeds']}; a seed is a data order (and the placebo's "
        "shuffles); every method of a seed sees the same batches, and every seed is scored on the same held-out pairs.",
        "- **Intervals**: `rpo_lab/study/inference.py`, crossed design (seeds and held-out pairs resampled "
        "independently, the pair draw shared by every seed); 95 % percentile intervals for single methods; "
        "differences are paired by seed and pair and carry Holm-adjusted p-values and Bonferroni-level (family-wise) "
        f"intervals; {s['bootstrap_samples']} bootstrap samples.", ""]


def _rates(report: dict) -> list[str]:
    grid = [f"{rate:g}" for rate in report["settings"]["learning_rates"]]
    lines = ["## Validation accuracy by learning rate (tuning)", "", "| method | " + " | ".join(grid) + " |",
             "|---|" + "---|" * len(grid)]
    for method, by_rate in report["validation_accuracy_by_rate"].items():
        chosen = f"{report['learning_rates'][method]:g}"
        lines.append(f"| {LABELS[method]} | " + " | ".join(
            (f"**{100 * by_rate[r]:.1f}**" if r == chosen else f"{100 * by_rate[r]:.1f}") if r in by_rate else "-"
            for r in grid) + " |")
    return lines + ["", "(validation accuracy, %, mean over tuning seeds; bold: the chosen rate)", ""]


def _mechanics(report: dict) -> list[str]:
    lines = ["## How far each method moved", "",
             "Means over seeds. Train loss, own-pair train margin (log-ratio chosen - rejected, nats) and the share of "
             "the loss's sigmoid arguments beyond +-1 (RPO: every w_ij beta (c_i - r_j); DPO: beta h_i) over the last "
             "quarter of steps; the mean change of the held-out log-probs (nats per response) and the median "
             "|held-out margin|. Near a share of 0 the loss is linear in the log-ratios, where matched RPO's gradient "
             "is DPO's (chosen side) and DPO's times the weight column sums (rejected side).", "",
             "| method | beta | lr | train loss | train margin | share beyond 1 | chosen / rejected change | "
             "held-out median margin | diverged seeds |", "|---|---|---|---|---|---|---|---|---|"]
    for method, row in report["methods"].items():
        lines.append(f"| {LABELS[method]} | {row['beta']:.3g} | {row['learning_rate']:g} | {row['train_loss']:.3f} | "
                     f"{row['train_margin']:.2f} | {row['curvature_share']:.0%} | {row['chosen_logp_change']:+.2f} / "
                     f"{row['rejected_logp_change']:+.2f} | {row['heldout_margin_abs_median']:.2f} | "
                     f"{row['diverged'] or 'none'} |")
    return lines + [""]


def study_markdown(report: dict) -> str:
    analysis = report["analysis"]
    return "\n".join([
        "# RPO against DPO on preference pairs: held-out implicit-reward accuracy", "",
        f"Command: `{report['command']}` (from a clean cache it reproduces this file and `study.json` on the machine "
        "that made them, with the same torch thread count).", "",
        *_power(report),
        "## Every method against DPO (secondary family, Holm-corrected)", "",
        "Held-out implicit-reward accuracy (a tie counts half; a policy equal to its reference scores 50 %), mean over "
        "seeds [95 % interval]; the difference to DPO in points [family-wise interval], Holm p; **bold**: Holm p < "
        "0.05.", "", *_dpo_line(report), *method_table(analysis, 0, FORMATS, LABELS), "",
        *_questions(report),
        *_design(report), *_rates(report), *_mechanics(report),
        "## Figures", "",
        "- `study_accuracy.png`: held-out accuracy per method (95 % interval) and each method's difference to DPO "
        "(family-wise interval).",
        "- `study_learning_curves.png`: train loss and own-pair train margin per step, mean over seeds.",
        "- `study_learning_rates.png`: validation accuracy against the learning rate, per method (the tuning grid).",
        ""])
