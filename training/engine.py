"""Training primitives shared by the recipes: the masked loss, the LR schedule, rank-cut global batches, one epoch,
evaluation across ranks, cached-feature datasets and the head that trains on them, the dataset presets.

    loss = masked_bce(logits, targets, known, batch_size * num_labels)   # unknown labels count for nothing
    probs, targets, known = evaluate(model, val, rank_info, batch_size=64, workers=0, device=device)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from training import distributed as D
from training.datasets import LabelledImages


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, denominator: float) -> torch.Tensor:
    """Sum of BCE over known entries / ``denominator`` (global batch size x labels: the original's mean loss)."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (loss * known).sum() / denominator


def lr_factor(epoch: int, steps: list[int], gamma: float = 0.1) -> float:
    """Learning-rate multiplier at ``epoch``: ``gamma`` per step already reached."""
    return gamma ** sum(epoch >= s for s in steps)


class GlobalBatches(torch.utils.data.Sampler):
    """Batches of one global shuffle (seeded by seed and epoch), each cut across ranks.

    Rank ``r`` of ``w`` takes ``batch[r::w]`` of every global batch, so a 2-process run sees the same global
    batches as a 1-process run. A last batch smaller than ``w`` is dropped (never in a 1-process run).
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.shuffle = rank, world, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        order = (torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))
                 if self.shuffle else torch.arange(self.n)).tolist()
        batches = [order[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        return [b for b in batches if len(b) >= self.world]

    def __iter__(self):
        for b in self.global_batches():
            yield b[self.rank::self.world]

    def __len__(self) -> int:
        return len(self.global_batches())


def train_one_epoch(forward, loader, optimizer, epoch: int, *, num_labels: int, batch_size: int,
                    world: int, device, print_freq: int = 0, progress=None) -> float:
    """One pass over ``loader``; returns the mean loss per known label entry over all ranks."""
    total = torch.zeros(2, dtype=torch.float64)
    for step, (x, y, k) in enumerate(loader):
        x, y, k = x.to(device), y.to(device), k.to(device)
        # world x local sum / (global batch x labels): DDP's gradient average then equals the global mean.
        loss = masked_bce(forward(x), y, k.float(), batch_size * num_labels / world)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        total += torch.tensor([value * batch_size * num_labels / world, float(k.sum())], dtype=torch.float64)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{value:.4f}")
        if print_freq and (step + 1) % print_freq == 0:
            D.print0(f"epoch {epoch + 1} [{step + 1}/{len(loader)}] loss {value:.4f}")
    total = D.all_reduce_sum(total)
    return float(total[0] / total[1].clamp(min=1))


@torch.no_grad()
def evaluate(forward, dataset, rank_info: D.RankInfo, *, batch_size: int, workers: int, device):
    """Sigmoid probabilities, targets and known masks of ``dataset``, each rank scoring its share, gathered."""
    idx = list(range(rank_info.rank, len(dataset), rank_info.world))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, idx), batch_size=batch_size,
                                         shuffle=False, num_workers=workers)
    probs = [forward(x.to(device)).float().sigmoid().cpu() for x, _, _ in loader]
    probs = torch.cat(probs) if probs else torch.zeros(0, len(dataset.label_names))
    probs = D.gather_rows(idx, probs, len(dataset))
    targets, known = dataset.targets()
    return probs, targets, known.bool()


class FeatureSet(torch.utils.data.Dataset):
    """Cached features with their targets: what the head trains on when the backbone is frozen."""

    def __init__(self, features, targets, known, label_names):
        self.features, self._targets, self._known, self.label_names = features, targets, known, label_names

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        return self.features[i], self._targets[i], self._known[i]

    def targets(self):
        return self._targets, self._known


class Head(torch.nn.Module):
    """The part of a ``Tagger`` that acts on pooled features (for training on cached features)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, features):
        return self.model.head(features)


def set_preset(dataset: LabelledImages, pre: dict, *, train: bool = False) -> None:
    """Give ``dataset`` the eval (or train) preset of ``pre`` and the handler's reduced decoding.

    Eval decodes to the preset's resize side, as the handler does; the train preset's random crops keep a
    quarter of the area at least, so it decodes to twice the crop side to keep them sharp.
    """
    from tagger.presets import eval_transform, train_transform

    dataset.transform = train_transform(pre) if train else eval_transform(pre)
    dataset.min_side = 2 * pre["crop"] if train else pre["resize"]
