"""Tag policies side by side: cross-validated OP, OR and OF1 of each policy, for the scene labels and for the object
labels (on the photos the detector never saw), beside the thresholds served before policies ("today": F1-best on
all photos), all from one default-model build (``make bench`` runs this after it).

    python -m benchmarks.policies --checkpoint var/bench/default      # prints a table, writes policies.json there

The figures are threshold cross-validation over the build's out-of-fold scores (``training.policies``): each fold's
photos are tagged with thresholds chosen on the other folds' photos only. The goals (issue 29) are printed beside.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tagger.labels import label_names
from tagger.meta import save_json
from tagger.tags import POLICIES

GOALS = {"scene": "precise: OP >= 0.70 with OR >= 0.40", "object_unseen": "precise: OP >= 0.85 with OR >= 0.80"}


def table(report: dict) -> str:
    lines = ["| thresholds | scene OP | scene OR | scene OF1 | objects (unseen) OP | OR | OF1 "
             "| objects (all) OP | OR |",
             "|---|---|---|---|---|---|---|---|---|"]
    for policy in ("today", *POLICIES):
        r = report[policy]
        name = "today (F1-best, all photos)" if policy == "today" else policy
        lines.append(f"| {name} | {r['scene']['OP']:.3f} | {r['scene']['OR']:.3f} | {r['scene']['OF1']:.3f} | "
                     f"{r['object_unseen']['OP']:.3f} | {r['object_unseen']['OR']:.3f} | "
                     f"{r['object_unseen']['OF1']:.3f} | {r['object_all']['OP']:.3f} | {r['object_all']['OR']:.3f} |")
    return "\n".join(lines)


def label_table(meta: dict) -> str:
    """Each label's cross-validated AP and, under each policy, the precision and recall expected at its threshold
    (the README's quality table)."""
    names = label_names(meta["labels"])
    ap = meta["metrics"].get("cv_per_label_ap", {})
    def fmt(x):
        return "–" if x is None else f"{x:.2f}"
    lines = ["| label | CV AP | precise: right / finds | balanced | complete |", "|---|---|---|---|---|"]
    for j, name in enumerate(names):
        cells = []
        for policy in POLICIES:
            entry = meta["policies"][policy]
            cells.append("not tagged" if entry["thresholds"][j] is None
                         else f"{fmt(entry['precision'][j])} / {fmt(entry['recall'][j])}")
        lines.append(f"| {name} | {fmt(ap.get(name))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=Path("var/bench/default"),
                   help="a default-model build's folder (its meta.json) (default: var/bench/default)")
    p.add_argument("--per-label", action="store_true", help="also print each label's expected precision and recall")
    args = p.parse_args(argv)
    meta = json.loads((args.checkpoint / "meta.json").read_text())
    report = meta["metrics"]["policies"]
    print(f"tag policies, {report['protocol']}")
    print(table(report))
    print("goals: " + "; ".join(f"{k}: {v}" for k, v in GOALS.items()))
    shift = report["source"].get("flattering_shift")
    if shift:
        print(f"object thresholds: seen photos' scores corrected by {shift} (logits); from "
              + ", ".join(f"{n}: {s}" for n, s in report["source"]["object_thresholds"].items()))
    if args.per_label:
        print(label_table(meta))
    save_json(args.checkpoint / "policies.json", report)
    return report


if __name__ == "__main__":
    main()
