"""Preprocessing, defined once: the eval and train presets, both built from a model's metadata record.

The handler builds its transform with ``eval_transform(meta["preprocessing"])``; fine-tuning uses
``train_transform`` of the same record; nothing else retypes a mean, a std or a crop size.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2 as T

_INTERPOLATION = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}

# The preprocessing each architecture's pretrained weights were trained with.
DEFAULT_PREPROCESSING = {
    "efficientnet_lite0": {"resize": 256, "crop": 224, "interpolation": "bicubic",
                           "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    # timm's tf_efficientnet_lite1 config: 240 px input, crop_pct 0.882 -> shorter side 272.
    "efficientnet_lite1": {"resize": 272, "crop": 240, "interpolation": "bicubic",
                           "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    "resnet18": {"resize": 256, "crop": 224, "interpolation": "bilinear",
                 "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
}


def default_preprocessing(arch: str) -> dict:
    """A copy of the preprocessing record for ``arch`` (see ``model.network.ARCHS``)."""
    if arch not in DEFAULT_PREPROCESSING:
        raise ValueError(f"no preprocessing defined for arch {arch!r}")
    return dict(DEFAULT_PREPROCESSING[arch])


def eval_transform(pre: dict) -> T.Compose:
    """PIL RGB image -> normalised float tensor (C, crop, crop).

    ``pre["squash"]`` true: the whole photo resized to crop x crop (its edges, where sea, sky, road and grass
    often are, stay in); otherwise (records made before it) the shorter side resized to ``resize``, centre crop.
    """
    interpolation = _INTERPOLATION[pre["interpolation"]]
    fit = ([T.Resize((pre["crop"], pre["crop"]), interpolation=interpolation, antialias=True)] if pre.get("squash")
           else [T.Resize(pre["resize"], interpolation=interpolation, antialias=True), T.CenterCrop(pre["crop"])])
    return T.Compose([
        T.PILToTensor(),
        *fit,
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=pre["mean"], std=pre["std"]),
    ])



def train_transform(pre: dict, *, scale: tuple[float, float] = (0.25, 1.0), hflip: float = 0.5) -> T.Compose:
    """Fine-tuning augmentation on the same record: random resized crop to ``crop``, horizontal flip.

    The crop scale keeps at least a quarter of the photo: scene labels (sea, road, mountain) need context.
    """
    return T.Compose([
        T.PILToTensor(),
        T.RandomResizedCrop(pre["crop"], scale=scale, interpolation=_INTERPOLATION[pre["interpolation"]],
                            antialias=True),
        T.RandomHorizontalFlip(hflip),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=pre["mean"], std=pre["std"]),
    ])
