"""The classifier as an ONNX graph: exported once into the archive (``make archive``), so TorchServe's workers
run it in ONNX Runtime without building the network, after checking it still answers the network's own logits of
a fixed probe batch.

    data = export_onnx(net, crop=224)           # bytes of the graph: images (N, 3, crop, crop) -> logits (N, L)
    expected = net(probe_batch(224))            # what the graph must reproduce (recorded as ONNX_CHECK_FILE)
"""
from __future__ import annotations

import io
import warnings

import torch
from torch import nn

ONNX_FILE = "model.onnx"  # in the archive, beside model.pt
ONNX_CHECK_FILE = "model.onnx.check.json"  # the network's logits of probe_batch, which the graph must reproduce


def export_onnx(model: nn.Module, crop: int) -> bytes:
    """``model`` as an ONNX graph: input ``images`` (N, 3, crop, crop) float, output ``logits`` (N, labels), the
    batch size left free."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(model.eval(), (torch.zeros(1, 3, crop, crop),), buf, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return buf.getvalue()


def probe_batch(crop: int) -> torch.Tensor:
    """A fixed input batch (2, 3, crop, crop) spread over [-2, 2), computed without a random generator (so every
    torch version gives the same one): what an exported model must answer as the network it came from."""
    n = 2 * 3 * crop * crop
    step = 0.7548776662466927  # 1 / the plastic number (as in the R2 sequence): evenly spread, never repeating
    spread = (torch.arange(n, dtype=torch.float64) * step).remainder(1.0) * 4 - 2
    return spread.float().reshape(2, 3, crop, crop)
