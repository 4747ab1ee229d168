"""Tag policies: each label's thresholds chosen on out-of-fold scores, and their out-of-fold precision and recall.

    chosen = choose_policies(rows)                       # {"precise": [p or None, ...], "balanced": ..., ...}
    report = evaluate_policies(rows, folds=5)            # per policy: per-label P/R, pooled OP/OR/OF1 by group

``rows`` (``OutOfFold``) are a model's out-of-fold logits (one row per photo and CV repeat), their targets and
known masks, which photos the detector saw in its own training, and which labels are the detector's objects.

- ``balanced``: the F1-best threshold (``training.metrics.calibrate_thresholds``, with its fallbacks for rare
  labels): what the model served before policies.
- ``precise`` (the default): the lowest threshold at which the label's tags are right at least 7 times in 10,
  never below its balanced threshold. Precision is estimated from scores calibrated per group of labels (one shared
  slope, a bias per label pulled towards the others': ``calibrated``), so a lucky run of a few right tags at a
  low score does not set it. A label whose estimate never reaches 0.7, or that has fewer than ``min_positives``
  positives, gets ``None``: scored, never a tag.
- ``complete``: the highest threshold that still tags 8 in 10 of the label's known positives, never above its
  balanced threshold.

Object labels (the detector's) are judged where they will be used, on photos the detector never saw: a label
with at least ``min_positives`` positives among those gets its thresholds from them alone; any other from every
photo, with the seen photos' scores corrected for the flattering (``unflattered``: the median shift of their
positives', and of their negatives', scores from the unseen photos').

A label with too few positives to measure (a label people just added) borrows from its evidence: one the detector
speaks for takes the thresholds chosen on all the measured object labels' scores pooled (the detector's scores
mean the same for every object), so a COCO object is tagged by the first model trained after it is added, with no
example; one only ImageNet classes speak for takes the pooled balanced and complete thresholds of the measured
labels with ImageNet classes, and no precise one (that prior's precision differs too much from label to label to
promise 7 in 10); one nothing speaks for is scored and not tagged (``source``: ``pooled-detector``,
``pooled-imagenet``, ``too-few-positives``).

Estimates are honest: ``evaluate_policies`` chooses thresholds on the other folds' photos and applies them to the
held-out fold's (threshold cross-validation over out-of-fold scores), so a label's reported precision and recall
are those of thresholds chosen without its photos.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tagger.tags import POLICIES, POLICY_TARGETS
from training.folds import fold_indices
from training.head import masked_loss, minimize
from training.metrics import calibrate_thresholds

PRECISION = POLICY_TARGETS["precise"]["precision"]
RECALL = POLICY_TARGETS["complete"]["recall"]
#: Tags (rows) a precise threshold must keep at least, so that one lucky high score does not set it.
MIN_TAGS = 3
#: How strongly each label's calibration bias is pulled towards its group's (labels with few positives borrow).
CALIBRATION_REG = 0.1


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold rows: ``logits``, ``targets``, ``known`` (R*N, L) for N photos and R CV repeats (photo of row
    ``i``: ``i % N``), ``seen`` (N,) photos the detector trained on, ``object_cols`` the detector's labels,
    ``imagenet_cols`` those ImageNet classes speak for."""
    logits: torch.Tensor
    targets: torch.Tensor
    known: torch.Tensor
    seen: torch.Tensor
    object_cols: tuple[int, ...]
    repeats: int = 1
    imagenet_cols: tuple[int, ...] = ()

    @property
    def photos(self) -> int:
        return len(self.seen)

    @property
    def scene_cols(self) -> tuple[int, ...]:
        return tuple(j for j in range(self.logits.shape[1]) if j not in self.object_cols)

    def rows_of(self, photos: torch.Tensor) -> torch.Tensor:
        """Row indices of ``photos`` in every repeat."""
        return torch.cat([photos + r * self.photos for r in range(self.repeats)])

    def subset(self, rows: torch.Tensor) -> OutOfFold:
        """The rows ``rows`` (whole photos, every repeat), renumbered."""
        photos = rows[: len(rows) // self.repeats] % self.photos
        return OutOfFold(self.logits[rows], self.targets[rows], self.known[rows], self.seen[photos],
                         self.object_cols, self.repeats, self.imagenet_cols)

    @property
    def seen_rows(self) -> torch.Tensor:
        return self.seen.repeat(self.repeats)


def _logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def _below(z_sorted: torch.Tensor, k: int) -> float:
    """A threshold between the ``k``-th highest score and the next lower one (or just under the lowest)."""
    lower = float(z_sorted[k + 1]) if k + 1 < len(z_sorted) else float(z_sorted[k]) - 1e-3
    return (float(z_sorted[k]) + lower) / 2


def balanced(z, y, k, min_positives: int) -> list[float | None]:
    """F1-best logit thresholds (``calibrate_thresholds``'s rule, fallbacks included)."""
    probs, _ = calibrate_thresholds(z.sigmoid(), y.float(), k, min_positives=min_positives)
    return [_logit(p) for p in probs]


def calibrated(z, y, k) -> torch.Tensor:
    """Probabilities ``sigmoid(a * z + b_label)``: one slope for the columns given, per-label biases pulled towards
    their mean (``CALIBRATION_REG``), fitted on the known entries."""
    if z.shape[1] == 0 or len(z) == 0:
        return z.sigmoid()
    def loss(a, b):
        return masked_loss(a * z + b, y.float(), k.float()) + CALIBRATION_REG * ((b - b.mean()) ** 2).sum()
    a, b = minimize(loss, torch.ones(1), torch.zeros(z.shape[1]))
    return (a * z + b).sigmoid()


def precise(z, y, k, min_positives: int) -> list[float | None]:
    """The lowest logit threshold whose estimated precision (mean calibrated probability of the tags it keeps) is
    at least ``PRECISION``, never below the balanced one; ``None`` where it cannot be reached."""
    p = calibrated(z, y, k)
    floor = balanced(z, y, k, min_positives)
    out = []
    for j in range(z.shape[1]):
        m = k[:, j].bool()
        zj, pj, yj = z[m, j].double(), p[m, j].double(), y[m, j].bool()
        if int(yj.sum()) < min_positives:
            out.append(None)
            continue
        order = torch.argsort(zj, descending=True)
        zs, ps = zj[order], pj[order]
        estimate = torch.cumsum(ps, 0) / torch.arange(1, len(ps) + 1, dtype=torch.float64)
        ok = estimate >= PRECISION
        ok[:MIN_TAGS - 1] = False
        ok[:-1] &= zs[:-1] != zs[1:]  # only where the next row scores lower: a threshold can sit there
        hits = torch.nonzero(ok).flatten()
        out.append(None if len(hits) == 0 else max(_below(zs, int(hits[-1])), floor[j]))
    return out


def complete(z, y, k, min_positives: int) -> list[float | None]:
    """The highest logit threshold that keeps ``RECALL`` of the label's known positives, never above the balanced
    one."""
    ceiling = balanced(z, y, k, min_positives)
    out = []
    for j in range(z.shape[1]):
        m = k[:, j].bool()
        positives = torch.sort(z[m, j][y[m, j].bool()].double(), descending=True).values
        if len(positives) < min_positives:
            out.append(None)
            continue
        keep = math.ceil(RECALL * len(positives))
        out.append(min(float(positives[keep - 1]) - 1e-6, ceiling[j]))
    return out


CHOOSE = {"precise": precise, "balanced": balanced, "complete": complete}


def unflattered(rows: OutOfFold) -> tuple[torch.Tensor, dict]:
    """The object columns' logits with the seen photos' corrected for the flattering: each seen positive moved by
    the median difference between seen and unseen positives' scores (over the object labels, each against its own
    unseen median), each seen negative likewise. Returns ``(logits, {"positives": shift, "negatives": shift})``."""
    z = rows.logits.clone()
    seen, y, k = rows.seen_rows, rows.targets.bool(), rows.known.bool()
    shifts = {}
    for name, truth in (("positives", y), ("negatives", ~y)):
        diffs = []
        for j in rows.object_cols:
            unseen = z[~seen & k[:, j] & truth[:, j], j]
            if len(unseen):
                diffs.append(z[seen & k[:, j] & truth[:, j], j] - unseen.median())
        shift = float(torch.cat(diffs).median()) if diffs and len(torch.cat(diffs)) else 0.0
        for j in rows.object_cols:
            z[seen & k[:, j] & truth[:, j], j] -= shift
        shifts[name] = round(shift, 3)
    return z, shifts


def choose_policies(rows: OutOfFold, *, min_positives: int = 3) -> tuple[dict[str, list[float | None]], dict]:
    """Every policy's logit thresholds (``None``: no tag), where the object labels' came from, and each label's
    ``source`` (``own``, ``pooled-detector``, ``pooled-imagenet``, ``too-few-positives``).

    ``min_positives`` counts photos (multiplied by the repeats for the rows)."""
    need = min_positives * rows.repeats
    out = {policy: [None] * rows.logits.shape[1] for policy in POLICIES}
    scene, objects = list(rows.scene_cols), list(rows.object_cols)
    y, k = rows.targets, rows.known.bool()
    source = {}
    if scene:
        for policy, choose in CHOOSE.items():
            for j, t in zip(scene, choose(rows.logits[:, scene], y[:, scene], k[:, scene], need)):
                out[policy][j] = t
    corrected = rows.logits
    if objects:
        unseen = ~rows.seen_rows
        corrected, shifts = unflattered(rows)
        enough = [int((y[unseen, j].bool() & k[unseen, j]).sum()) >= need for j in objects]
        for policy, choose in CHOOSE.items():
            from_unseen = choose(rows.logits[unseen][:, objects], y[unseen][:, objects], k[unseen][:, objects], need) \
                if bool(unseen.any()) else [None] * len(objects)
            from_all = choose(corrected[:, objects], y[:, objects], k[:, objects], need)
            for i, j in enumerate(objects):
                out[policy][j] = from_unseen[i] if enough[i] else from_all[i]
        source = {"object_thresholds": {j: "unseen photos" if e else "all photos, seen ones corrected"
                                        for j, e in zip(objects, enough)}, "flattering_shift": shifts}
    positives = (y.bool() & k).sum(0)
    measured = [int(p) >= need for p in positives.tolist()]
    label_source = ["own" if m else "too-few-positives" for m in measured]
    for group, cols, policies in (("detector", objects, POLICIES),
                                  ("imagenet", rows.imagenet_cols, ("balanced", "complete"))):
        few = [j for j in cols if not measured[j] and (group == "detector" or j not in objects)]
        pool = [j for j in cols if measured[j]]
        if not few or not pool:
            continue
        z, t, m = (torch.cat([a[:, j][k[:, j]] for j in pool])[:, None] for a in (corrected, y, k.float()))
        for policy in policies:
            (threshold,) = CHOOSE[policy](z, t, m.bool(), need)
            for j in few:
                out[policy][j] = threshold
        for j in few:
            label_source[j] = f"pooled-{group}"
    for j, s in enumerate(label_source):
        if s == "too-few-positives":  # nothing speaks for it: scored, no tag until it has examples
            for policy in POLICIES:
                out[policy][j] = None
    return out, {**source, "labels": label_source}


def to_probabilities(thresholds: list[float | None]) -> list[float | None]:
    """Logit thresholds as the probabilities ``meta["thresholds"]`` holds (rounded down: the same decisions)."""
    return [None if t is None else math.floor(1e6 / (1 + math.exp(-t))) / 1e6 for t in thresholds]


def decide(z: torch.Tensor, thresholds: list[float | None]) -> torch.Tensor:
    limit = torch.tensor([math.inf if t is None else t for t in thresholds], dtype=z.dtype)
    return z >= limit


def _pooled(pred, y, k, cols, rows=None, repeats: int = 1) -> dict:
    """OP, OR, OF1 over the decisions of ``cols`` in ``rows``; tags and positives per CV repeat."""
    rows = torch.ones(len(y), dtype=torch.bool) if rows is None else rows
    p, t = pred[rows][:, cols] & k[rows][:, cols], y[rows][:, cols] & k[rows][:, cols]
    tp, n, pos = int((p & t).sum()), int(p.sum()), int(t.sum())
    op, orec = (tp / n if n else 0.0), (tp / pos if pos else 0.0)
    of1 = round(2 * op * orec / (op + orec), 4) if op + orec else 0.0
    return {"OP": round(op, 4), "OR": round(orec, 4), "OF1": of1,
            "tags": round(n / repeats), "positives": round(pos / repeats)}


def _enough(positives: torch.Tensor, min_positives: int, repeats: int) -> bool:
    return int(positives.sum()) >= min_positives * repeats


def evaluate_policies(rows: OutOfFold, *, folds: int = 5, seed: int = 1000, min_positives: int = 3,
                      names: list[str] | None = None) -> dict:
    """Threshold cross-validation of every policy, plus ``today`` (balanced thresholds on all photos, no
    correction: what was served before). Per policy: pooled OP/OR/OF1 of the scene labels (all photos) and of the
    object labels (photos the detector never saw, and all), and each label's precision and recall (an object label's
    on the photos the detector never saw when it has ``min_positives`` there, else on all)."""
    y, k = rows.targets.bool(), rows.known.bool()
    decisions = {policy: torch.zeros_like(y) for policy in (*POLICIES, "today")}
    for train, test in fold_indices(rows.photos, folds, seed):
        fit, held = rows.rows_of(train), rows.rows_of(test)
        chosen, _ = choose_policies(rows.subset(fit), min_positives=min_positives)
        chosen["today"] = balanced(rows.logits[fit], y[fit], k[fit], min_positives * rows.repeats)
        for policy, thresholds in chosen.items():
            decisions[policy][held] = decide(rows.logits[held], thresholds)
    unseen = ~rows.seen_rows
    names = names or [str(j) for j in range(y.shape[1])]
    report = {}
    for policy, pred in decisions.items():
        per_label = {}
        for j, name in enumerate(names):
            judge = unseen if j in rows.object_cols and _enough(y[unseen, j] & k[unseen, j], min_positives,
                                                                rows.repeats) else torch.ones_like(unseen)
            m = judge & k[:, j]
            tp, n, pos = int((pred[m, j] & y[m, j]).sum()), int(pred[m, j].sum()), int(y[m, j].sum())
            per_label[name] = {"precision": round(tp / n, 4) if n else None,
                               "recall": round(tp / pos, 4) if pos else None}
        r = rows.repeats
        report[policy] = {"scene": _pooled(pred, y, k, list(rows.scene_cols), repeats=r),
                          "object_unseen": _pooled(pred, y, k, list(rows.object_cols), unseen, repeats=r),
                          "object_all": _pooled(pred, y, k, list(rows.object_cols), repeats=r),
                          "per_label": per_label}
    return report


def model_policies(rows: OutOfFold, names: list[str], *, folds: int = 5, min_positives: int = 3) -> tuple[dict, dict]:
    """What a model's metadata carries of its policies, and what its metrics report of them:
    ``({policy: {"thresholds", "source", "precision", "recall"}}, {"source", policy: pooled OP/OR/OF1 by group})``.
    A label whose threshold is borrowed (``source`` pooled-...) has no estimate of its own: ``None``."""
    chosen, source = choose_policies(rows, min_positives=min_positives)
    estimates = evaluate_policies(rows, folds=folds, min_positives=min_positives, names=names)
    policies = {}
    for policy in POLICIES:
        per_label = estimates[policy]["per_label"]
        thresholds = to_probabilities(chosen[policy])
        policies[policy] = {"thresholds": thresholds, "source": list(source["labels"]),
                            "precision": [per_label[n]["precision"] if t is not None and own == "own" else None
                                          for n, t, own in zip(names, thresholds, source["labels"])],
                            "recall": [per_label[n]["recall"] if t is not None and own == "own" else None
                                       for n, t, own in zip(names, thresholds, source["labels"])]}
    source = {**source, "object_thresholds": {names[j]: s for j, s in source.get("object_thresholds", {}).items()},
              "labels": dict(zip(names, source["labels"]))}
    metrics = {"source": source, "protocol": f"thresholds chosen on the other {folds - 1} folds' out-of-fold scores, "
               "applied to the held-out fold's; object labels judged on the photos the detector never saw",
               **{p: {g: estimates[p][g] for g in ("scene", "object_unseen", "object_all")}
                  for p in (*POLICIES, "today")}}
    return policies, metrics
