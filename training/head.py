"""Fit a ``Tagger``'s head on frozen backbone features (no image is touched here).

    fit_head(model, features, targets, known)   # sets model.head and model.prior in place

The head is an L2-regularised logistic regression per label (masked BCE: unknown labels add no loss), fitted
with L-BFGS on standardised features; the standardisation is folded back into the linear layer. When the model
has an ``ImageNetPrior``, its calibration (one shared scale, one bias per label) is fitted on the same data and
each label's blend weight is ``positives / (positives + pseudo_count)``: rare labels lean on ImageNet, frequent
ones on the trained head. A label no ImageNet class speaks for backs off, with the same weight, to the mean of its
supercategory siblings' blended logits (``sibling_matrix``; its scale and biases fitted like the ImageNet prior's).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from training.evidence import imagenet_classes


def imagenet_prior_matrix(labels: list[dict]) -> torch.Tensor:
    """(1000, L) 0/1 matrix: which ImageNet-1k classes speak for each label (``training.evidence``: the default
    labels' ``imagenet_prior.json``, a record's own ``imagenet`` classes, or the curated names table).

    Raises:
        ValueError: a label names a WordNet id that is no ImageNet-1k class.
    """
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    index = {info.index_to_label_name(i): i for i in range(1000)}
    matrix = torch.zeros(1000, len(labels))
    for j, label in enumerate(labels):
        for wnid in imagenet_classes(label):
            if wnid not in index:
                raise ValueError(f"label {label['name']!r}: {wnid!r} is no ImageNet-1k class (a WordNet id such as "
                                 "n02085620)")
            matrix[index[wnid], j] = 1.0
    return matrix


def sibling_matrix(labels: list[dict]) -> torch.Tensor:
    """(L, L) rows averaging each label's supercategory siblings (the label itself excluded; a row of zeros for a
    label alone in its supercategory or without one)."""
    groups = [lab.get("supercategory") for lab in labels]
    m = torch.tensor([[float(a is not None and a == b and i != j) for j, b in enumerate(groups)]
                      for i, a in enumerate(groups)])
    return m / m.sum(1, keepdim=True).clamp(min=1)


@torch.no_grad()
def set_prior_structure(prior, labels: list[dict]) -> None:
    """Which ImageNet classes and which supercategory siblings speak for each label (before ``fit_head``)."""
    prior.matrix.copy_(imagenet_prior_matrix(labels))
    prior.siblings.copy_(sibling_matrix(labels))


def blend_weights(positives: torch.Tensor, has_prior: torch.Tensor, pseudo_count: float) -> torch.Tensor:
    """Each label's weight on its own evidence: ``positives / (positives + pseudo_count)`` where a prior exists."""
    return torch.where(has_prior, positives / (positives + pseudo_count), torch.ones_like(positives))


def fit_sibling_prior(blended: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, siblings: torch.Tensor,
                      has_imagenet: torch.Tensor, *, pseudo_count: float):
    """``(scale, bias, weight)`` of the supercategory back-off, fitted on the blended logits of training photos.

    Only labels with siblings enter the calibration; only those among them without ImageNet classes use it.
    """
    has_siblings = siblings.sum(1) > 0
    bias = torch.zeros(targets.shape[1])
    scale = torch.ones(1)
    if has_siblings.any():
        scale, b = fit_prior_calibration((blended @ siblings.T)[:, has_siblings], targets[:, has_siblings],
                                         known[:, has_siblings])
        bias[has_siblings] = b
    positives = (targets * known).sum(0)
    return scale, bias, blend_weights(positives, has_siblings & ~has_imagenet, pseudo_count)


def masked_loss(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy summed over the known entries, per photo (unknown labels add nothing)."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (loss * known).sum() / len(targets)


def minimize(loss_fn, *initial: torch.Tensor, max_iter: int = 200) -> tuple[torch.Tensor, ...]:
    """Minimise ``loss_fn(*params)`` with L-BFGS (strong Wolfe line search) from ``initial``; returns the optimum."""
    params = [p.clone().requires_grad_(True) for p in initial]
    opt = torch.optim.LBFGS(params, lr=1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(*params)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return tuple(p.detach() for p in params)


def fit_linear(features: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, *,
               weight_decay: float = 1e-2, max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked logistic regression; returns ``(weight (L, D), bias (L,))`` acting on raw features."""
    mean, std = features.mean(0), features.std(0) + 1e-6
    x = (features - mean) / std
    known = known.float()
    w, b = minimize(
        lambda w, b: masked_loss(x @ w + b, targets, known) + weight_decay * (w ** 2).sum(),
        torch.zeros(x.shape[1], targets.shape[1]), torch.zeros(targets.shape[1]), max_iter=max_iter)
    weight = (w / std[:, None]).T.contiguous()
    bias = b - (mean / std) @ w
    return weight, bias


def fit_prior_calibration(zero_shot: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, *,
                          reg: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``scale * zero_shot + bias`` to the targets: one shared scale, per-label biases pulled together."""
    known = known.float()
    return minimize(
        lambda scale, bias: masked_loss(scale * zero_shot + bias, targets, known)
        + reg * ((bias - bias.mean()) ** 2).sum(),
        torch.ones(1), torch.zeros(targets.shape[1]))


@torch.no_grad()
def fit_head(model, features: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, *,
             weight_decay: float = 1e-2, pseudo_count: float = 10.0) -> None:
    """Fit ``model.head`` (and ``model.prior`` if present) in place on cached ``features``."""
    weight, bias = fit_linear(features, targets, known, weight_decay=weight_decay)
    model.head.weight.copy_(weight)
    model.head.bias.copy_(bias)
    if model.prior is None:
        return
    prior = model.prior
    imagenet = model.backbone.get_classifier()(features)
    zero_shot = prior.zero_shot(imagenet)
    scale, pbias = fit_prior_calibration(zero_shot, targets, known)
    has_imagenet = prior.matrix.sum(0) > 0
    prior.scale.copy_(scale)
    prior.bias.copy_(pbias)
    prior.weight.copy_(blend_weights((targets * known).sum(0), has_imagenet, pseudo_count))
    blended = prior.imagenet_blend(model.head(features), imagenet)
    sscale, sbias, sweight = fit_sibling_prior(blended, targets, known.float(), prior.siblings, has_imagenet,
                                               pseudo_count=pseudo_count)
    prior.sibling_scale.copy_(sscale)
    prior.sibling_bias.copy_(sbias)
    prior.sibling_weight.copy_(sweight)
