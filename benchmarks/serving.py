"""Serving speed, side by side in one run (``make bench``): the in-process pipeline against the real TorchServe.

    python -m benchmarks.serving [--checkpoint checkpoints/default/best.pt] [--arch-label default]

In process: the handler's own functions from bytes to serialised tags (fast decode, eval preset, the model in
the runtime a worker serves, the detector when the model has one, postprocess), for batch sizes 1/4/8 and 1/2
threads, in images per second; and the
forward pass alone, eager fp32 against ONNX Runtime and against TorchScript + oneDNN. TorchServe: the same
checkpoint archived with ``handler/model-config.yaml`` and with variants (workers, threads, batching), started on
free loopback ports; round trip at concurrency 1 (median) and throughput at concurrency 8. Its floor: a handler
that answers at once (``ts_floor_handler.py``), what TorchServe itself costs. One 640x480 COCO photo throughout.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests
import torch

from benchmarks.load import post_all
from handler.core import onnxruntime_model, optimize_for_inference, postprocess, runtime_name, serialize, with_detector
from serving import torchserve
from serving.torchserve import Ports, TorchServeRun, free_ports
from tagger.image import decode_image
from tagger.presets import eval_transform
from tagger.ts_keys import read_keys
from training.archive import build_archive
from training.checkpoint import load_for_inference
from training.detections import model_detector

REPO = Path(__file__).resolve().parent.parent

PHOTO = REPO / "samples/coco_subset/images/000000000471.jpg"


def median_ms(fn, n=40, warm=5):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


def paired_ms(fa, fb, n=60, warm=5):
    """Medians of ``fa`` and ``fb`` timed alternately (so machine noise hits both alike)."""
    for _ in range(warm):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(n):
        t = time.perf_counter()
        fa()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        fb()
        tb.append(time.perf_counter() - t)
    return statistics.median(ta) * 1000, statistics.median(tb) * 1000


def in_process(ckpt: Path, data: bytes) -> dict:
    model, meta, _ = load_for_inference(ckpt)
    transform = eval_transform(meta["preprocessing"])
    side = meta["preprocessing"]["resize"]
    x1 = transform(decode_image(data, min_side=side))[None]
    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        fast = optimize_for_inference(model, meta)  # what a worker serves: ONNX Runtime on `threads` threads
        script = optimize_for_inference(model, meta, runtime="torchscript")
        # timed alternately with eager, ONNX Runtime's spinning pool would slow the eager runs: not here
        quiet = onnxruntime_model(model, meta, threads=threads, spin=False)
        detector = model_detector(meta, threads=threads)  # as a worker has it (None: classifier only)

        def pipeline(batch: int):
            images = [decode_image(data, min_side=side) for _ in range(batch)]
            x = torch.stack([transform(im) for im in images])
            with torch.inference_mode():
                return [serialize(a) for a in postprocess(with_detector(fast(x), images, detector, meta), meta)]  # noqa: B023 - called within this iteration

        with torch.inference_mode():
            eager, opt = paired_ms(lambda: model(x1), lambda: quiet(x1))  # noqa: B023 - called within this iteration
            eager2, ts = paired_ms(lambda: model(x1), lambda: script(x1))  # noqa: B023 - called within this iteration
        out[f"forward_eager_ms_t{threads}"], out[f"forward_opt_ms_t{threads}"] = eager, opt
        out[f"forward_eager2_ms_t{threads}"], out[f"forward_torchscript_ms_t{threads}"] = eager2, ts
        out[f"runtime_t{threads}"] = runtime_name(fast)
        out[f"pipeline_ms_t{threads}"] = median_ms(lambda: pipeline(1))
        for bs in (1, 4, 8):
            ms = median_ms(lambda: pipeline(bs), n=max(5, 40 // bs), warm=2)  # noqa: B023 - called within this iteration
            out[f"img_per_s_bs{bs}_t{threads}"] = bs * 1000 / ms
    torch.set_num_threads(2)
    return out


def torchserve_run(ckpt: Path | None, data: bytes, config: str, label: str, threads: int | None = None) -> dict:
    """Round trips of one TorchServe started with ``config``; ``ckpt=None`` serves ``ts_floor_handler.py``
    (answers without reading the bytes: what TorchServe itself costs)."""
    with tempfile.TemporaryDirectory(prefix="bench-ts-", dir=REPO / "var") as tmp:
        tmp = Path(tmp)
        (tmp / "model-config.yaml").write_text(config)
        if ckpt is None:
            (tmp / "store").mkdir()
            subprocess.run([str(Path(sys.executable).with_name("torch-model-archiver")), "--model-name", "tagger",
                            "--version", "floor", "--handler", str(REPO / "benchmarks/ts_floor_handler.py"),
                            "--config-file", str(tmp / "model-config.yaml"), "--export-path", str(tmp / "store")],
                           check=True)
        else:
            build_archive(ckpt, tmp / "store/tagger.mar", config_file=tmp / "model-config.yaml")
        run = TorchServeRun(var_dir=tmp / "var", ports=Ports(*free_ports(5)), model_store=tmp / "store")
        workers = int(config.split("minWorkers:")[1].split()[0])
        t0 = time.monotonic()
        torchserve.start(run, "tagger.mar", threads_per_worker=threads or max(1, 2 // workers))
        try:
            torchserve.wait_ready(run)
            ready_s = time.monotonic() - t0
            key = read_keys(run.key_file)["inference"]
            url = f"{run.inference_url}/predictions/tagger"
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"}
            session = requests.Session()
            def one():
                session.post(url, data=data, headers=headers, timeout=60).raise_for_status()
            c1 = median_ms(one, n=60, warm=100)  # steady state: both workers warmed
            seconds, errors = post_all(url, headers, [data] * (8 * 30), clients=8)
            c8 = 8 * 30 / seconds
            rss = worker_rss_mb(torchserve.running_pid(run))
        finally:
            torchserve.stop(run)
    return {"label": label, "ready_s": ready_s, "c1_ms": c1, "c8_req_per_s": c8, "errors": len(errors),
            "worker_rss_mb": rss}


def worker_rss_mb(frontend_pid: int | None) -> list[float]:
    """Resident memory of each Python model worker under the TorchServe frontend, in MiB."""
    if frontend_pid is None:
        return []
    out = []
    for child in psutil.Process(frontend_pid).children(recursive=True):
        try:
            if "model_service_worker" in " ".join(child.cmdline()):
                out.append(child.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            continue
    return sorted(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints/default/best.pt"),
                   help="checkpoint to serve (default: checkpoints/default/best.pt)")
    p.add_argument("--skip-variants", action="store_true", help="only the shipped model-config.yaml (default: off)")
    a = p.parse_args()
    ckpt = Path(a.checkpoint)
    data = PHOTO.read_bytes()
    ip = in_process(ckpt, data)
    shipped = (REPO / "handler/model-config.yaml").read_text()
    runs = [torchserve_run(ckpt, data, shipped, "handler/model-config.yaml (shipped)")]
    cfg = "minWorkers: {w}\nmaxWorkers: {w}\nbatchSize: {b}\nmaxBatchDelay: {d}\nresponseTimeout: 60\n"
    floor = torchserve_run(None, data, cfg.format(w=2, b=1, d=1), "floor: a handler that answers at once")
    if not a.skip_variants:
        for w, t, b, d in ((2, 1, 4, 5), (2, 1, 1, 1), (1, 2, 1, 1), (2, 2, 4, 1)):
            runs.append(torchserve_run(ckpt, data, cfg.format(w=w, b=b, d=d),
                                       f"variant: {w} workers x {t} threads, batchSize {b}, maxBatchDelay {d}", t))
    arch = load_for_inference(ckpt)[1]["arch"]
    print(f"\n== serving, {arch}, one 640x480 photo ==")
    for t in (1, 2):
        e, o = ip[f"forward_eager_ms_t{t}"], ip[f"forward_opt_ms_t{t}"]
        e2, ts = ip[f"forward_eager2_ms_t{t}"], ip[f"forward_torchscript_ms_t{t}"]
        print(f"forward pass, {t} thread(s): eager fp32 {e:.1f} ms, {ip[f'runtime_t{t}']} {o:.1f} ms -> {e / o:.2f}x "
              f"(goal >= 1.5x); eager {e2:.1f} ms, TorchScript+oneDNN {ts:.1f} ms -> {e2 / ts:.2f}x")
    best_key = max((k for k in ip if k.startswith("img_per_s")), key=lambda k: ip[k])
    print(f"in-process bytes->tags at concurrency 1: {ip['pipeline_ms_t2']:.1f} ms (2 threads), "
          f"{ip['pipeline_ms_t1']:.1f} ms (1 thread)")
    print("in-process throughput: " + ", ".join(f"{k[10:]} {ip[k]:.1f}/s" for k in ip if k.startswith("img_per_s"))
          + f"; best {best_key[10:]} {ip[best_key]:.1f} img/s")
    print(f"TorchServe floor [{floor['label']}]: c=1 {floor['c1_ms']:.1f} ms, so c=1 can be at best "
          f"{(ip['pipeline_ms_t2'] + floor['c1_ms']) / ip['pipeline_ms_t2']:.2f}x in-process (2 threads); "
          f"c=8 {floor['c8_req_per_s']:.0f} req/s")
    for r in runs:
        print(f"TorchServe [{r['label']}]: READY {r['ready_s']:.1f} s; c=1 {r['c1_ms']:.1f} ms = "
              f"{r['c1_ms'] / ip['pipeline_ms_t2']:.2f}x in-process (goal <= 1.15x); c=8 {r['c8_req_per_s']:.1f} "
              f"req/s = {r['c8_req_per_s'] / ip[best_key]:.2f}x the best in-process (goal >= 1x); "
              f"{r['errors']} errors")


if __name__ == "__main__":
    main()
