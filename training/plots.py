"""PNG plots of a training run, drawn with matplotlib (Agg, no display): ``OUTPUT/plots/``.

    loss_map.png        training loss and validation mAP per epoch
    per_label_ap.png    per-label AP of the best epoch (labels without a known positive marked n/a)
    pr_curves.png       precision-recall curves of the best epoch, one panel per label with positives
"""
from __future__ import annotations

import math
from pathlib import Path

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: list[dict], path: Path) -> None:
    plt = _plt()
    fig, ax1 = plt.subplots(figsize=(7, 4))
    epochs = [h["epoch"] for h in history]
    ax1.plot(epochs, [h.get("loss") for h in history], "o-", color="tab:red", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:red")
    ax2 = ax1.twinx()
    ax2.plot(epochs, [h.get("mAP") if h.get("mAP") is not None else math.nan for h in history], "s-",
             color="tab:blue", label="val mAP")
    ax2.set_ylabel("validation mAP", color="tab:blue")
    ax1.set_title("loss and validation mAP per epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_per_label_ap(per_label_ap: dict, path: Path, title: str = "per-label AP") -> None:
    plt = _plt()
    names = list(per_label_ap)
    values = [per_label_ap[n] if per_label_ap[n] is not None else 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(10, 4))
    bars = ax.bar(range(len(names)), values, color=["tab:blue" if per_label_ap[n] is not None else "lightgray"
                                                    for n in names])
    for b, n in zip(bars, names):
        if per_label_ap[n] is None:
            ax.text(b.get_x() + b.get_width() / 2, 0.02, "n/a", ha="center", rotation=90, fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("AP")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_pr_curves(probs: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, names: list[str],
                   path: Path) -> None:
    plt = _plt()
    cols = [j for j in range(len(names)) if bool((targets[:, j].bool() & known[:, j].bool()).any())]
    ncol = 6
    nrow = max(1, math.ceil(len(cols) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.2 * ncol, 2.0 * nrow), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, j in zip(axes.flat, cols):
        m = known[:, j].bool()
        p, t = probs[m, j], targets[m, j].bool()
        order = torch.argsort(p, descending=True)
        tp = torch.cumsum(t[order].double(), 0)
        precision = tp / torch.arange(1, len(tp) + 1)
        recall = tp / max(1, int(t.sum()))
        ax.axis("on")
        ax.plot(recall.numpy(), precision.numpy(), lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_title(names[j], fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle("precision-recall (x: recall, y: precision), best epoch, validation")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_run(out_dir: Path, history: list[dict], best: dict | None, probs=None, targets=None, known=None,
             names=None) -> list[Path]:
    """Write the run's plots under ``out_dir/plots``; returns the paths written."""
    d = Path(out_dir) / "plots"
    d.mkdir(parents=True, exist_ok=True)
    written = []
    if history:
        plot_history(history, d / "loss_map.png")
        written.append(d / "loss_map.png")
    if best is not None:
        plot_per_label_ap(best["per_label_ap"], d / "per_label_ap.png")
        written.append(d / "per_label_ap.png")
    if probs is not None:
        plot_pr_curves(probs, targets, known, names, d / "pr_curves.png")
        written.append(d / "pr_curves.png")
    return written
