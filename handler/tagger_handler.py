"""TorchServe handler for the photo tagger: image bytes -> batch -> classifier (+ detector) -> per-label thresholds.

Packed into the ``.mar`` by ``python -m training.archive`` together with ``meta.json``, ``model.pt`` and the
``handler`` and ``training`` packages it imports. Each request answers
``{"tags": [...], "scores": {label: p, ...}, "model_version": "..."}`` as compact JSON text; a request whose body
is not a usable image answers its own 4xx with ``{"error": "..."}`` and the rest of the batch is unaffected.
A request is the raw image body, a multipart field ``data``/``file``, or JSON ``{"data": base64}``.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import torch
from ts.torch_handler.base_handler import BaseHandler

from handler.core import (
    detector_scores,
    fused,
    load_for_serving,
    load_model_detector,
    postprocess,
    release_free_memory,
    request_bytes,
    runtime_name,
    serialize,
)
from tagger.image import HANDLER_FORMATS, ImageError, decode_image
from tagger.presets import eval_transform

logger = logging.getLogger(__name__)


class TaggerHandler(BaseHandler):
    def initialize(self, context):
        threads = os.environ.get("OMP_NUM_THREADS")
        if threads and threads.isdigit():  # TorchServe sets no torch threads; `serving` exports cores / workers
            torch.set_num_threads(int(threads))
        properties = context.system_properties
        gpu = properties.get("gpu_id")
        self.device = torch.device(f"cuda:{gpu}" if torch.cuda.is_available() and gpu is not None else "cpu")
        self.manifest = context.manifest
        settings = (getattr(context, "model_yaml_config", None) or {}).get("handler", {}) or {}
        runtime = str(settings.get("runtime", "onnxruntime")) if settings.get("optimize", True) else "eager"
        self.model, self.meta = load_for_serving(properties["model_dir"], self.device, runtime=runtime)
        # a missing or altered detector file fails here, named
        self.detector = load_model_detector(self.meta, properties["model_dir"])
        # the detector runs beside the classifier (ONNX Runtime lets go of the GIL): a lone request uses a second
        # core when one is free; under load the two take turns as they would one after the other
        self.beside = ThreadPoolExecutor(1, thread_name_prefix="detector") if self.detector else None
        self.transform = eval_transform(self.meta["preprocessing"])
        release_free_memory()
        self.initialized = True
        logger.info("tagger %s loaded: %s, %d labels, on %s, %s, detector %s", self.meta["version"],
                    self.meta["arch"], len(self.meta["labels"]), self.device, runtime_name(self.model),
                    self.meta["detector"]["name"] if self.detector else "none")

    def preprocess(self, data):
        """Decode every request; returns ((batch, images) or None, indices decoded, {index: (status, message)})."""
        tensors, images, errors = {}, {}, {}
        for i, row in enumerate(data):
            try:
                images[i] = decode_image(request_bytes(row), min_side=self.meta["preprocessing"]["resize"],
                                             formats=HANDLER_FORMATS)
                tensors[i] = self.transform(images[i])
            except ImageError as exc:
                errors[i] = (exc.status, str(exc))
            except ValueError as exc:
                errors[i] = (400, str(exc))
        ok = sorted(tensors)
        batch = (torch.stack([tensors[i] for i in ok]), [images[i] for i in ok]) if tensors else None
        return batch, ok, errors

    def inference(self, data, *args, **kwargs):
        batch, ok, errors = data
        if batch is None:
            return None, ok, errors
        tensor, images = batch
        scores = self.beside.submit(detector_scores, self.detector, images, self.meta) if self.beside else None
        logits = super().inference(tensor)
        return fused(logits, scores.result() if scores else None, self.meta), ok, errors

    def postprocess(self, data):
        logits, ok, errors = data
        answers = dict(zip(ok, postprocess(logits, self.meta))) if logits is not None else {}
        out = []
        for i in range(len(ok) + len(errors)):
            if i in errors:
                status, message = errors[i]
                self.context.set_response_status(code=status, phrase=message, idx=i)
                out.append(serialize({"error": message}))
            else:
                out.append(serialize(answers[i]))
        return out
