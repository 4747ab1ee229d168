"""The handler's real work as plain functions, importable without TorchServe.

    model, meta = load_for_serving("path/to/unpacked_mar")  # the archive's model.onnx in ONNX Runtime (else the
                                                            # network rebuilt from meta.json and model.pt)
    detector = load_model_detector(meta, "path/to/unpacked_mar")   # None for a classifier-only model
    transform = eval_transform(meta["preprocessing"])
    images = [decode_image(b, min_side=meta["preprocessing"]["resize"], formats=HANDLER_FORMATS) for b in files]
    logits = with_detector(model(torch.stack([transform(i) for i in images])), images, detector, meta)
    answers = postprocess(logits, meta)  # [{"tags": [...], "scores": {...}, "model_version": "1.0"}]
"""
from __future__ import annotations

import base64
import binascii
import ctypes
import gc
import json
import logging
import os
import warnings
from pathlib import Path

import torch

from model.detector import GRAPH_FILE, detect, label_scores, load_detector
from model.export import ONNX_CHECK_FILE, ONNX_FILE, export_onnx, probe_batch
from model.fusion import fuse
from model.network import model_from_meta
from tagger.labels import label_names
from tagger.meta import validate_meta
from tagger.tags import served_policy, tags_by_policy

META_FILE = "meta.json"
WEIGHTS_FILE = "model.pt"
logger = logging.getLogger(__name__)


def load_meta(model_dir: str | Path) -> dict:
    """The metadata record packed in the archive (labels, thresholds, preprocessing, version, ...)."""
    return validate_meta(json.loads((Path(model_dir) / META_FILE).read_text()))


RUNTIMES = ("onnxruntime", "torchscript", "eager")


class OnnxRuntimeModel:
    """An ONNX Runtime session called like the module it was exported from: float (N, 3, H, W) -> logits."""

    def __init__(self, session, threads: int):
        self.session, self.threads = session, threads
        self.archived = False  # True: the graph packed in the archive (else exported when the worker started)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"images": x.detach().cpu().contiguous().numpy()})[0])


def onnx_session(graph: bytes | str | Path, *, threads: int | None = None, spin: bool = True) -> OnnxRuntimeModel:
    """An ONNX graph (its bytes or file) loaded by ONNX Runtime's CPU provider with all graph optimisations, on
    ``threads`` intra-op threads (default: torch's). With more than one thread, ``spin=False`` stops its pool from
    spinning between runs (slower for itself, fairer to whatever runs next)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = str(graph) if isinstance(graph, Path) else graph
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return OnnxRuntimeModel(session, options.intra_op_num_threads)


def onnxruntime_model(model: torch.nn.Module, meta: dict, *, threads: int | None = None,
                      spin: bool = True) -> OnnxRuntimeModel:
    """``model`` exported to ONNX in memory (``model.export.export_onnx``) and loaded by ``onnx_session``."""
    return onnx_session(export_onnx(model, meta["preprocessing"]["crop"]), threads=threads, spin=spin)


def torchscript_model(model: torch.nn.Module, meta: dict) -> torch.nn.Module:
    """The model traced with TorchScript and fused by oneDNN (BatchNorm folded into convolutions, fused
    activations). TorchScript is deprecated in favour of ``torch.compile``, hence the FutureWarning silenced."""
    crop = meta["preprocessing"]["crop"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with torch.no_grad():
            return torch.jit.optimize_for_inference(torch.jit.trace(model.eval(), torch.zeros(1, 3, crop, crop)))


def optimize_for_inference(model: torch.nn.Module, meta: dict, *, runtime: str = "onnxruntime",
                           tolerance: float = 1e-4, warm_batches: tuple[int, ...] = (1, 2, 3, 4),
                           warm_runs: int = 3):
    """The fastest runtime that reproduces ``model``: ONNX Runtime (2.0-2.4x eager fp32 on one CPU thread), else
    TorchScript + oneDNN (1.3-1.6x), else ``model`` itself. A runtime is skipped when it fails to build or its
    outputs differ from eager ones by more than ``tolerance`` (checked on ``probe_batch``); ``runtime``
    names the first one to try. Both need a CPU model; on a GPU the eager model is served.

    ``torch.compile`` is about as fast as TorchScript here but compiles for 13-36 s per worker on 2 cores, which
    would miss the 20 s start-up goal.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    crop = meta["preprocessing"]["crop"]
    if next(model.parameters()).device.type != "cpu":
        return model
    check = probe_batch(crop)
    builders = {"onnxruntime": onnxruntime_model, "torchscript": torchscript_model}
    for name in RUNTIMES[RUNTIMES.index(runtime):-1]:
        try:
            fast = builders[name](model, meta)
            with torch.inference_mode():
                diff = float((fast(check) - model(check)).abs().max())
        except Exception:  # noqa: BLE001 - any export or tracing problem means: try the next runtime
            logger.warning("%s failed; trying the next runtime", name, exc_info=True)
            continue
        if diff > tolerance:
            logger.warning("%s differs from eager by %.2e; trying the next runtime", name, diff)
            continue
        warm_up(fast, crop, warm_batches, warm_runs)
        return fast
    return model


def warm_up(fast, crop: int, batches: tuple[int, ...] = (1, 2, 3, 4), runs: int = 3) -> None:
    """ONNX Runtime and TorchScript specialise per input shape over their first runs: do them before serving."""
    with torch.inference_mode():
        for batch in batches:
            x = torch.zeros(batch, 3, crop, crop)
            for _ in range(runs):
                fast(x)


def archived_onnx(model_dir: str | Path, meta: dict, *, tolerance: float = 1e-4,
                  threads: int | None = None) -> OnnxRuntimeModel | None:
    """The archive's ONNX graph in ONNX Runtime, warmed up, when it reproduces the network's logits of the probe
    batch within ``tolerance`` (recorded when the archive was made); ``None`` when the archive has none (made
    before) or it fails or differs, which the worker's log says."""
    graph, check = Path(model_dir) / ONNX_FILE, Path(model_dir) / ONNX_CHECK_FILE
    if not graph.is_file() or not check.is_file():
        return None
    crop = meta["preprocessing"]["crop"]
    try:
        expected = torch.tensor(json.loads(check.read_text())["logits"])
        fast = onnx_session(graph, threads=threads)
        with torch.inference_mode():
            diff = float((fast(probe_batch(crop)) - expected).abs().max())
    except Exception:  # noqa: BLE001 - a graph this ONNX Runtime cannot run: the network is built instead
        logger.warning("the archive's %s does not load; building the network", ONNX_FILE, exc_info=True)
        return None
    if diff > tolerance:
        logger.warning("the archive's %s differs from its network by %.2e; building the network", ONNX_FILE, diff)
        return None
    fast.archived = True
    warm_up(fast, crop)
    return fast


def load_for_serving(model_dir: str | Path, device: str | torch.device = "cpu", *,
                     runtime: str = "onnxruntime") -> tuple:
    """``(model, meta)`` as a worker serves them: on the CPU with ``runtime="onnxruntime"``, the archive's own ONNX
    graph (``archived_onnx``: the network is never built, about 2.3 s less per worker start on 2 cores and no
    eager copy in memory); otherwise, or when that graph cannot be used, the network rebuilt from ``model.pt``
    and ``optimize_for_inference``'s fastest runtime that reproduces it."""
    meta = load_meta(model_dir)
    if runtime == "onnxruntime" and torch.device(device).type == "cpu":
        fast = archived_onnx(model_dir, meta)
        if fast is not None:
            return fast, meta
    model, meta = load_model(model_dir, device)
    return optimize_for_inference(model, meta, runtime=runtime), meta


def runtime_name(model) -> str:
    """Which runtime ``optimize_for_inference`` chose, for the worker's log."""
    if isinstance(model, OnnxRuntimeModel):
        graph = ", the archive's graph" if model.archived else ""
        return f"onnxruntime ({model.threads} thread{'s' if model.threads > 1 else ''}{graph})"
    return "torchscript" if isinstance(model, torch.jit.ScriptModule) else "eager"


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    meta = load_meta(model_dir)
    state = torch.load(Path(model_dir) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    return model_from_meta(meta, state).to(device), meta


def release_free_memory() -> None:
    """Hand the memory freed after loading (the eager model once ONNX Runtime has its copy, the detector's file
    buffer) back to the system: glibc keeps freed heap otherwise, about 90 MB of each worker's RSS here."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def load_model_detector(meta: dict, model_dir: str | Path, *, threads: int | None = None):
    """The detector ``meta`` records, from the graph its archive carries (``detector.onnx``, SHA-256 checked), or
    ``None`` for a classifier-only model.

    Raises:
        model.detector.DetectorError: the detector file is missing or altered; the message says what to do.
    """
    if not meta.get("detector"):
        return None
    return load_detector(meta["detector"], Path(model_dir) / GRAPH_FILE, threads=threads or torch.get_num_threads())


def detector_scores(detector, images: list, meta: dict) -> torch.Tensor | None:
    """The detector's scores of ``images`` as label columns (NaN where a label has no object); ``None`` without a
    detector."""
    if detector is None:
        return None
    names = label_names(meta["labels"])
    return torch.from_numpy(label_scores(detect(detector, images), detector.names, names,
                                         meta["detector"].get("label_objects")))


def fused(logits: torch.Tensor, scores: torch.Tensor | None, meta: dict) -> torch.Tensor:
    """The classifier's logits fused with the detector's label scores (``model.fusion``); unchanged without."""
    return logits if scores is None else fuse(logits, scores, meta["detector"]["fusion"])


def with_detector(logits: torch.Tensor, images: list, detector, meta: dict) -> torch.Tensor:
    """The classifier's logits of ``images`` fused with the detector's scores of the same decoded images
    (``model.fusion``); unchanged without a detector."""
    return fused(logits, detector_scores(detector, images, meta), meta)


def request_bytes(row) -> bytes:
    """The image bytes of one TorchServe request row: the raw body, a multipart field named ``data`` or
    ``file``, or a JSON body ``{"data": "<base64 of the image file>"}`` (a ``data:image/...;base64,`` prefix is
    allowed).

    Raises:
        ValueError: the request carries no image bytes; the message says how to send them.
    """
    value, key = row, None
    if isinstance(row, dict):
        for key in ("data", "body", "file"):
            if row.get(key) is not None:
                value = row[key]
                break
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and key == "data":  # a KServe v1 instance {"data": base64}
        value = {"data": value}
    if isinstance(value, dict):  # a JSON body, already parsed by TorchServe
        encoded = value.get("data")
        if not isinstance(encoded, str):
            raise ValueError('a JSON body must be {"data": "<base64 of the image file>"}')
        if encoded.startswith("data:") and "," in encoded[:100]:
            encoded = encoded.split(",", 1)[1]
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the JSON field 'data' is not valid base64") from None
    raise ValueError("send the image as the raw body (curl -H 'Content-Type: application/octet-stream' "
                     "--data-binary @photo.jpg), as a multipart field 'data', or as JSON {\"data\": base64}")


def serialize(answer: dict) -> str | dict:
    """One answer as compact JSON text (TorchServe would re-encode a dict with ``indent=2``), or the dict itself
    when ``TAGGER_JSON_OBJECTS=1`` (under KServe, whose envelope wraps the answers in ``{"predictions": [...]}``)."""
    if os.environ.get("TAGGER_JSON_OBJECTS") == "1":
        return answer
    return json.dumps(answer, separators=(",", ":"))


def postprocess(logits: torch.Tensor, meta: dict, *, decimals: int = 4) -> list[dict]:
    """Logits (N, L) -> one answer per image: the served policy's tags (best first) and which policy that is, every
    policy's tags (``policy_tags``), all scores, the model version."""
    names = label_names(meta["labels"])
    probs = torch.sigmoid(logits.float()).cpu()
    policy = served_policy(meta)
    answers = []
    for row in probs.tolist():
        by_policy = tags_by_policy(row, names, meta)
        scores = {names[j]: round(row[j], decimals) for j in range(len(names))}
        answers.append({"tags": by_policy[policy], "tag_policy": policy, "policy_tags": by_policy,
                        "scores": scores, "model_version": meta["version"]})
    return answers
