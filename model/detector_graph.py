"""The detector's ONNX graph, built once from the pinned frozen graph and kept in a cache folder: what training scores
photos with and what every archive carries (``detector.onnx``).

    path = build_graph(spec, "var/cache", calibration=sample_photo_paths)   # converted, heads in int8, cached

Built in two steps, neither needing TensorFlow: ``model.detector_onnx.convert`` (the feature extractor and the 80
objects' class predictors, fp32, scores within 1e-6 of OpenCV's reading of the same file), then the class
predictors alone quantized to int8 (ONNX Runtime's static quantization, per channel, calibrated on ``calibration``
photos: the bundled samples). The heads cost more than the feature extractor (1.07 against 0.60 GMAC a photo);
in int8 the detector takes about 0.4 of its former time, and scores move by at most 0.03. The file's name is the
SHA-256 of everything it depends on, so a change of any of them builds a new one.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from model.detector import blob, check_file, graph_files
from model.detector_onnx import convert
from tagger.image import decode_image
from tagger.meta import atomic_write

CONVERTER_VERSION = "1"  # changes whenever convert() could give another graph for the same file
CALIBRATION_SIDE = 256  # photos decode as the default model's handler decodes them (its preprocessing resize)


def graph_key(spec: dict, calibration: list[Path]) -> str:
    """What the graph depends on: the file, the objects, the converter, the quantization and its photos, ONNX
    Runtime's version (its quantizer writes the int8 heads)."""
    import onnxruntime

    record = {"graph_sha1": spec["graph_sha1"], "classes": spec["classes"], "heads": spec.get("heads", "fp32"),
              "converter": CONVERTER_VERSION, "onnxruntime": onnxruntime.__version__,
              "calibration": [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in calibration]
              if spec.get("heads") == "int8" else []}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:20]


def build_graph(spec: dict, cache_dir: str | Path, calibration: list[Path]) -> Path:
    """The detector graph for ``spec`` in ``cache_dir`` (built when missing, written atomically).

    Raises:
        model.detector.DetectorError: the pinned file is missing or altered.
    """
    path = Path(cache_dir) / f"detector-{graph_key(spec, calibration)}.onnx"
    if path.is_file():
        return path
    pb = graph_files(spec)
    check_file(pb, spec["graph_sha1"], spec)
    graph = convert(pb.read_bytes(), list(spec["classes"].values()))
    if spec.get("heads") == "int8":
        graph = quantize_heads(graph, [blob([np.asarray(decode_image(Path(p).read_bytes(), min_side=CALIBRATION_SIDE))],
                                            spec["input"]) for p in calibration])
    atomic_write(path, lambda f: f.write(graph))
    return path


def quantize_heads(graph: bytes, blobs: list[np.ndarray]) -> bytes:
    """``graph`` with its class predictors (``head*/logits``) in int8: weights per output channel, activations per
    tensor from their range over ``blobs`` (MinMax calibration); every other node stays fp32."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Blobs(CalibrationDataReader):
        def __init__(self):
            self._it = iter(blobs)

        def get_next(self):
            b = next(self._it, None)
            return None if b is None else {"images": b}

    heads = [n.name for n in onnx.load_from_string(graph).graph.node if n.name.startswith("head")
             and n.op_type == "Conv"]
    with tempfile.TemporaryDirectory(prefix="detector-quant-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(graph)
        quantize_static(str(src), str(dst), Blobs(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=heads,
                        op_types_to_quantize=["Conv"])
        return dst.read_bytes()
