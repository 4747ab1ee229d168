"""Package a checkpoint as a TorchServe archive with torch-model-archiver.

    python -m training.archive                                   # checkpoints/default/best.pt -> model_store/tagger.mar
    python -m training.archive --checkpoint checkpoints/run1/best.pt --version 1.1   # -> model_store/tagger-1.1.mar

The archive holds ``model.pt`` (a plain state_dict), ``meta.json`` (labels, thresholds, preprocessing, arch,
version, metrics), and the packages the handler imports, whole: ``handler``, ``model`` (the served model) and
``tagger`` (the ground floor); the handler rebuilds the network and its preprocessing from ``meta.json`` alone.
It also holds the classifier exported to ONNX (``model.onnx``, checked by
each worker against ``model.onnx.check.json``), which ONNX Runtime serves without the network being built.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from model.detector import GRAPH_FILE, check_file
from model.export import ONNX_CHECK_FILE, ONNX_FILE, export_onnx, probe_batch
from model.network import model_from_meta
from tagger import REPO
from tagger.archive import CODE_HASH, PAYLOAD_PACKAGES, ArchiveError, read_archive
from tagger.layout import DEFAULT as DEFAULT_DATA
from tagger.meta import save_json, validate_meta
from training.checkpoint import load_checkpoint
from training.detections import detector_graph

MODEL_NAME = "tagger"
DEFAULT_CACHE = DEFAULT_DATA.cache  # where the detector's graph is built (training's --cache-dir too)


def payload_files() -> list[Path]:
    """Every file of ``PAYLOAD_PACKAGES`` (code and data; no caches), in a stable order."""
    return sorted(p for pkg in PAYLOAD_PACKAGES for p in (REPO / pkg).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints/default/best.pt"),
                   help="checkpoint written by training (default: checkpoints/default/best.pt)")
    p.add_argument("--version", default=None, help="model version (default: the checkpoint's)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE),
                   help="where the detector's graph is built or found (default: var/cache)")
    p.add_argument("--out", default=None,
                   help="archive path (default: model_store/tagger.mar, or model_store/tagger-VERSION.mar "
                        "when --version is given)")
    return p


CONFIG_FILE = REPO / "handler/model-config.yaml"
HANDLER_FILE = REPO / "handler/tagger_handler.py"


def code_hash() -> str:
    """SHA-256 of the code and settings an archive packs (handler, payload modules, model-config.yaml)."""
    h = hashlib.sha256()
    for path in [CONFIG_FILE, *payload_files()]:
        h.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def archive_code_hash(mar: str | Path) -> str | None:
    """The code hash recorded in an archive (``None`` for an archive from before it was recorded)."""
    try:
        return read_archive(mar).code_hash
    except ArchiveError:
        return None


def build_archive(checkpoint: str | Path, out: str | Path, *, version: str | None = None,
                  config_file: str | Path = CONFIG_FILE, cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """Write ``out`` (a .mar) from ``checkpoint``; returns its path. The file appears atomically. A model with a
    detector gets its graph (``detector.onnx``) from ``cache_dir``, built there when missing.

    Raises:
        DetectorError: the graph built now is not the one the model was trained with (its SHA-256 differs).
    """
    ckpt = load_checkpoint(checkpoint)
    meta = dict(ckpt["meta"])
    if version is not None:
        meta["version"] = str(version)
    validate_meta(meta)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tagger-archive-") as tmp:
        stage = Path(tmp)
        payload = stage / "payload"
        for path in payload_files():
            (payload / path.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, payload / path.relative_to(REPO))
        save_json(payload / "meta.json", meta)
        (payload / CODE_HASH).write_text(code_hash() + "\n")
        pack_onnx(payload, ckpt["model"], meta)
        if meta.get("detector"):
            pack_detector(payload, meta["detector"], cache_dir)
        torch.save(ckpt["model"], stage / "model.pt")
        archiver = Path(sys.executable).with_name("torch-model-archiver")
        # the archiver stages its files in $TMPDIR/<model name>, one fixed folder: a private TMPDIR keeps two
        # archives built at once (make archive beside a deploy job, parallel tests) from mixing their files
        (stage / "tmp").mkdir()
        subprocess.run([str(archiver), "--model-name", MODEL_NAME, "--version", meta["version"],
                        "--serialized-file", str(stage / "model.pt"),
                        "--handler", str(HANDLER_FILE),
                        "--extra-files", str(payload),
                        "--config-file", str(config_file),
                        "--export-path", str(stage), "--force"], check=True,
                       env={**os.environ, "TMPDIR": str(stage / "tmp")})
        tmp_out = out.with_name(f".{out.name}.tmp")
        shutil.move(stage / f"{MODEL_NAME}.mar", tmp_out)
        tmp_out.replace(out)
    return out


def pack_detector(payload: Path, spec: dict, cache_dir: str | Path) -> None:
    """The detector's graph, the very one the model's scores were computed with (its SHA-256 checked)."""
    graph = detector_graph(spec, cache_dir)
    if spec.get("onnx_sha256"):
        check_file(graph, spec["onnx_sha256"], spec, algorithm="sha256",
                   what="the detector graph built here differs from the one this model was trained with "
                        "(another ONNX Runtime?): train the model again (make model / make train)")
    shutil.copyfile(graph, payload / GRAPH_FILE)


def pack_onnx(payload: Path, state_dict: dict, meta: dict) -> None:
    """The classifier exported to ONNX (``ONNX_FILE``) with the network's own logits of the probe batch
    (``ONNX_CHECK_FILE``): a worker loads it in a fraction of the time building the network takes, after checking
    that it still answers those logits. A model the exporter cannot take is archived without it (its workers
    then try the runtimes themselves, as for an archive made before)."""
    model = model_from_meta(meta, state_dict)
    crop = meta["preprocessing"]["crop"]
    try:
        data = export_onnx(model, crop)
    except Exception:  # noqa: BLE001 - any exporter failure only costs the workers their shortcut
        logging.getLogger(__name__).warning("no ONNX export for the archive; workers build the network",
                                            exc_info=True)
        return
    with torch.inference_mode():
        logits = model(probe_batch(crop))
    (payload / ONNX_FILE).write_bytes(data)
    save_json(payload / ONNX_CHECK_FILE, {"input": "model.export.probe_batch(crop)", "crop": crop,
                                          "logits": logits.tolist()})


def main(args: argparse.Namespace) -> Path:
    out = args.out or REPO / "model_store" / (f"{MODEL_NAME}-{args.version}.mar" if args.version else
                                              f"{MODEL_NAME}.mar")
    path = build_archive(args.checkpoint, out, version=args.version, cache_dir=args.cache_dir)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main(get_args_parser().parse_args())
