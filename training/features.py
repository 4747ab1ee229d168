"""Frozen-backbone features, computed once and cached per image.

    feats = cached_features(model, dataset, preprocessing, cache_dir="var/cache")   # (N, D), dataset order

The cache file is keyed by a fingerprint of the backbone's weights and of the preprocessing record; inside it
each feature row is keyed by the SHA-256 of its image's bytes. Changing the weights or the preprocessing picks
another file; changing a photo changes its key; adding photos computes only the new ones.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from tagger.image import DECODER_VERSION
from tagger.meta import atomic_write


def weights_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 over a module's state (names, shapes and bytes of every tensor), hex."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def image_key(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cache_path(model, preprocessing: dict, cache_dir: str | Path) -> Path:
    record = {**preprocessing, "decoder": DECODER_VERSION}
    pre = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"features-{weights_fingerprint(model.backbone)[:20]}-{pre}.pt"


@torch.no_grad()
def extract_features(model, dataset, batch_size: int = 16, workers: int = 0, device="cpu",
                     progress: bool = False) -> torch.Tensor:
    """Pooled backbone features of every item of ``dataset`` (images through its eval transform), (N, D)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    was_training = model.training
    model.eval()
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc="features", unit="batch", leave=False)
    out = [model.features(images.to(device)).cpu() for images, _, _ in batches]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.backbone.num_features)


def cached_rows(path: Path, keys: list[str], compute, field: str, width: int) -> tuple[torch.Tensor, dict]:
    """Rows for ``keys`` (photo SHA-256s) from the cache file ``path``; ``compute(indices)`` gives the missing
    ones (a ``(len(indices), width)`` tensor), which are added to the file (written atomically)."""
    store: dict[str, torch.Tensor] = {}
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        store = dict(zip(blob["keys"], blob[field]))
    missing = [i for i, k in enumerate(keys) if k not in store]
    if missing:
        for i, row in zip(missing, compute(missing)):
            store[keys[i]] = row.clone()
        names = sorted(store)
        blob = {"keys": names, field: torch.stack([store[k] for k in names])}
        atomic_write(path, lambda f: torch.save(blob, f))
    rows = torch.stack([store[k] for k in keys]) if keys else torch.zeros(0, width)
    return rows, {"cached": len(keys) - len(missing), "computed": len(missing), "file": str(path)}


def cached_features(model, dataset, preprocessing: dict, cache_dir: str | Path, *, batch_size: int = 16,
                    workers: int = 0, device="cpu", progress: bool = False) -> tuple[torch.Tensor, dict]:
    """Features of ``dataset`` from the cache, computing (and adding) only the missing images.

    Returns ``(features (N, D), stats)`` with ``stats = {"cached": n, "computed": m, "file": path}``.
    """
    keys = [image_key(dataset.image_path(i)) for i in range(len(dataset))]
    return cached_rows(cache_path(model, preprocessing, cache_dir), keys,
                       lambda missing: extract_features(model, torch.utils.data.Subset(dataset, missing), batch_size,
                                                        workers, device, progress),
                       "features", model.backbone.num_features)
