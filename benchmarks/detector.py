"""The detector per photo, side by side in one run on the same photos (issue 26, ``make bench``):

- baseline: the path served before, OpenCV DNN reading the frozen graph with its box nodes stripped, and the class
  predictors of the 13 thing labels' classes run in torch (kept here, verbatim in what it computes);
- ONNX Runtime, the converted graph with all 80 objects, fp32;
- ONNX Runtime, the same with its class predictors in int8 (what is served now).

    python -m benchmarks.detector [--photos 40]     # prints a table, writes var/bench/detector.json

Each is timed on 1 and on 2 threads (median over the photos, each photo decoded as the handler decodes it; a photo's
time is its resize to 300x300 and the network, as ``model.detector.detect`` runs them). Beside the times: each
network's multiply-adds per photo (counted from its ONNX graph),
the GFLOP/s achieved, and this CPU's fp32 peak (the FMA width times the cores' clock, and a large matrix product
measured) as the physical limit. The classifier is counted and timed the same way.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from pathlib import Path

import numpy as np

from model.detector import blob, detector_spec, graph_files
from model.detector_onnx import convert
from tagger import REPO
from tagger.image import decode_image
from tagger.labels import load_labels
from tagger.layout import DataDir
from tagger.meta import save_json
from training.detections import detector_graph

PHOTOS = REPO / "samples/coco_subset/images"
OLD_CONFIG = "models/ssd_mobilenet_v2_coco_2018_03_29.pbtxt"  # OpenCV's text graph in the same package
OLD_FEATURE_MAPS = tuple(f"FeatureExtractor/MobilenetV2/{n}/Relu6" for n in (
    "expanded_conv_13/expand", "Conv_1", "layer_19_2_Conv2d_2_3x3_s2_512", "layer_19_2_Conv2d_3_3x3_s2_256",
    "layer_19_2_Conv2d_4_3x3_s2_256", "layer_19_2_Conv2d_5_3x3_s2_128"))
OLD_BOX_NODES = ("BoxPredictor_", "ClassPredictor", "BoxEncodingPredictor", "PriorBox", "detection_out", "concat")


class OpenCvBaseline:
    """The detector as it was served before (the code of model/detector.py before the ONNX conversion): OpenCV DNN
    for the feature maps, the class predictors of ``class_ids`` as torch convolutions, best logit per class."""

    def __init__(self, spec: dict, class_ids: list[int], threads: int):
        import cv2
        import torch

        pb = graph_files(spec)
        text = pb.with_name(Path(OLD_CONFIG).name).read_text()
        weights = np.frombuffer(pb.read_bytes(), np.uint8)
        cv2.setNumThreads(threads)
        torch.set_num_threads(threads)
        full = cv2.dnn.readNetFromTensorflow(weights, np.frombuffer(text.encode(), np.uint8))
        self.heads = []
        for k in range(6):
            lid = full.getLayerId(f"BoxPredictor_{k}/ClassPredictor/Conv2D")
            w, b = full.getParam(lid, 0), full.getParam(lid, 1).reshape(-1)
            anchors = w.shape[0] // 91
            rows = np.array([a * 91 + c for a in range(anchors) for c in class_ids], dtype=np.int64)
            self.heads.append((torch.from_numpy(w[rows].copy()), torch.from_numpy(b[rows].copy()), anchors))
        head, *nodes = re.split(r"(?m)^node \{\n", text)
        kept = [n for n in nodes if not re.search(r'name: "([^"]+)"', n).group(1).startswith(OLD_BOX_NODES)]
        graph = "".join([head] + ["node {\n" + n for n in kept]).encode()
        self.net = cv2.dnn.readNetFromTensorflow(weights, np.frombuffer(graph, np.uint8))
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.classes = len(class_ids)

    def __call__(self, views: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        self.net.setInput(views)
        maps = self.net.forward(list(OLD_FEATURE_MAPS))
        best = torch.full((len(views), self.classes), float("-inf"))
        with torch.inference_mode():
            for fmap, (w, b, anchors) in zip(maps, self.heads):
                z = F.conv2d(torch.from_numpy(fmap), w, b, padding=1)
                best = torch.maximum(best, z.reshape(len(views), anchors, self.classes, -1).amax(dim=(1, 3)))
        return best.sigmoid().numpy()


def session(graph: bytes | Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    s = ort.InferenceSession(str(graph) if isinstance(graph, Path) else graph, options,
                             providers=["CPUExecutionProvider"])
    return lambda views: s.run(None, {"images": views})[0]


def macs(graph: bytes | Path, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass: every Conv, MatMul and Gemm of the ONNX graph (shapes inferred)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(graph)) if isinstance(graph, Path) else onnx.load_from_string(graph)
    name = model.graph.input[0].name
    model.graph.input[0].type.tensor_type.shape.ClearField("dim")
    model.graph.input[0].type.tensor_type.shape.dim.extend([onnx.TensorShapeProto.Dimension(dim_value=d)
                                                            for d in input_shape])
    inferred = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    for q in model.graph.node:  # int8 heads: the kernel arrives through DequantizeLinear
        if q.op_type == "DequantizeLinear" and q.input[0] in weights:
            weights[q.output[0]] = weights[q.input[0]]
    total = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            w, out = weights.get(node.input[1]), shapes.get(node.output[0])
            if w and out:
                total += int(np.prod(out[1:])) * int(np.prod(w[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a, w = shapes.get(node.input[0]), weights.get(node.input[1])
            if a and w:
                total += int(np.prod(a[:-1])) * int(np.prod(w))
    del name
    return total


def fp32_peak() -> dict:
    """The physical limit: 2 FMA units of 256 bits per core (Zen 4 runs AVX-512 on them) = 32 FLOP a cycle, times
    the clock /proc/cpuinfo reports and the cores; and what a large fp32 matrix product reaches (torch, sgemm)."""
    import torch

    mhz = [float(m) for m in re.findall(r"cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text())]
    cores = os.cpu_count() or 1
    nominal = 32 * (statistics.median(mhz) / 1000 if mhz else 0) * cores
    out = {"cores": cores, "clock_ghz": round(statistics.median(mhz) / 1000, 3) if mhz else None,
           "nominal_gflops": round(nominal, 1)}
    a = torch.randn(2048, 2048)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        torch.mm(a, a)
        t = time.perf_counter()
        for _ in range(5):
            torch.mm(a, a)
        out[f"sgemm_gflops_t{threads}"] = round(5 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9, 1)
    return out


def timed(fn, views: list[np.ndarray], warm: int = 3) -> float:
    for v in views[:warm]:
        fn(v)
    ts = []
    for v in views:
        t = time.perf_counter()
        fn(v)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=int, default=40, help="photos timed (default: 40 of samples/coco_subset)")
    p.add_argument("--out", type=Path, default=DataDir(REPO / "var").root / "bench/detector.json")
    args = p.parse_args(argv)
    labels = load_labels()
    spec = detector_spec(labels)
    thing_ids = [spec["classes"][spec["label_objects"][lab["name"]]] for lab in labels
                 if lab["name"] in spec["label_objects"]]
    fp32 = convert(graph_files(spec).read_bytes(), list(spec["classes"].values()))
    int8 = detector_graph(spec, DataDir(REPO / "var").cache)
    photos = sorted(PHOTOS.glob("*.jpg"))[:args.photos]
    images = [np.asarray(decode_image(p.read_bytes(), min_side=256)) for p in photos]  # as the handler decodes
    views = [blob([im], spec["input"]) for im in images]
    result = {"photos": len(views)}
    for threads in (1, 2):
        import cv2

        cv2.setNumThreads(threads)  # its resize too
        old = OpenCvBaseline(spec, thing_ids, threads)
        runs = {"opencv_13": old, "onnx_fp32_80": session(fp32, threads), "onnx_int8_80": session(int8, threads)}
        for name, fn in runs.items():  # a photo's detection: its resize to 300x300 and the network
            result[f"{name}_ms_t{threads}"] = round(timed(lambda im: fn(blob([im], spec["input"])), images), 2)  # noqa: B023 - called within this iteration
        if threads == 1:  # the same scores: the 13 classes of the old path against the new graph's columns
            new = np.concatenate([runs["onnx_fp32_80"](v) for v in views[:10]])
            cols = [list(spec["classes"].values()).index(c) for c in thing_ids]
            result["max_diff_fp32_vs_opencv"] = float(np.abs(new[:, cols]
                                                             - np.concatenate([old(v) for v in views[:10]])).max())
            q = np.concatenate([runs["onnx_int8_80"](v) for v in views[:10]])
            result["max_diff_int8_vs_fp32"] = float(np.abs(q - new).max())
    thirteen = convert(graph_files(spec).read_bytes(), thing_ids)
    result["gmac"] = {"detector_13_classes": macs(thirteen, (1, 3, 300, 300)) / 1e9,
                      "detector_80_classes": macs(fp32, (1, 3, 300, 300)) / 1e9,
                      "feature_extractor": macs(convert(graph_files(spec).read_bytes(), [1]), (1, 3, 300, 300)) / 1e9}
    classifier = classifier_figures(result)
    result["classifier"] = classifier
    result["peak"] = fp32_peak()
    report(result)
    save_json(args.out, result)
    return result


def classifier_figures(result: dict) -> dict:
    """The default model's classifier (its archive's ONNX graph): multiply-adds and time per photo."""
    import torch

    from model.export import export_onnx
    from training.checkpoint import load_for_inference

    net, meta, _ = load_for_inference(REPO / "checkpoints/default/best.pt")
    crop = meta["preprocessing"]["crop"]
    graph = export_onnx(net, crop)
    x = torch.zeros(1, 3, crop, crop).numpy()
    out = {"gmac": torch_macs(net, torch.zeros(1, 3, crop, crop)) / 1e9}
    for threads in (1, 2):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        s = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        out[f"ms_t{threads}"] = round(timed(lambda _: s.run(None, {"images": x}), [x] * 40), 2)  # noqa: B023 - called within this iteration
    return out


def torch_macs(net, x) -> int:
    """Multiply-adds of one forward pass of a torch network: its convolutions and linear layers (forward hooks;
    its ONNX export computes TensorFlow's SAME padding at run time, so shapes cannot be inferred from it)."""
    import torch

    total = [0]

    def hook(module, _inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            total[0] += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * \
                module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            total[0] += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.inference_mode():
        net(x)
    for h in handles:
        h.remove()
    return total[0]


def report(r: dict) -> None:
    g = r["gmac"]
    print(f"\n== the detector per photo, {r['photos']} photos, median ms (issue 26: <= 0.5x the 13-class OpenCV path "
          "while scoring 80 objects) ==")
    for t in (1, 2):
        base = r[f"opencv_13_ms_t{t}"]
        print(f"{t} thread(s): OpenCV 13 classes {base:.1f} ms | ONNX fp32 80 {r[f'onnx_fp32_80_ms_t{t}']:.1f} ms "
              f"({r[f'onnx_fp32_80_ms_t{t}'] / base:.2f}x) | ONNX int8 heads 80 {r[f'onnx_int8_80_ms_t{t}']:.1f} ms "
              f"({r[f'onnx_int8_80_ms_t{t}'] / base:.2f}x)")
    print(f"same scores: fp32 graph vs OpenCV max diff {r['max_diff_fp32_vs_opencv']:.1e}; int8 heads vs fp32 "
          f"{r['max_diff_int8_vs_fp32']:.3f}")
    peak = r["peak"]
    print(f"multiply-adds a photo: feature extractor {g['feature_extractor']:.2f} G, whole detector 13 classes "
          f"{g['detector_13_classes']:.2f} G, 80 classes {g['detector_80_classes']:.2f} G; classifier "
          f"{r['classifier']['gmac']:.2f} G")
    for t in (1, 2):
        d13 = 2 * g["detector_13_classes"] / (r[f"opencv_13_ms_t{t}"] / 1000)
        d80 = 2 * g["detector_80_classes"] / (r[f"onnx_fp32_80_ms_t{t}"] / 1000)
        cl = 2 * r["classifier"]["gmac"] / (r["classifier"][f"ms_t{t}"] / 1000)
        print(f"achieved, {t} thread(s): OpenCV detector {d13:.0f} GFLOP/s, ONNX fp32 detector {d80:.0f} GFLOP/s, "
              f"classifier {cl:.0f} GFLOP/s ({r['classifier'][f'ms_t{t}']:.1f} ms); sgemm "
              f"{peak[f'sgemm_gflops_t{t}']:.0f} GFLOP/s")
    print(f"fp32 peak: {peak['cores']} cores x {peak['clock_ghz']} GHz x 32 FLOP/cycle = {peak['nominal_gflops']:.0f} "
          "GFLOP/s (2 FMA units of 256 bits a core; AVX-512 runs on them)")


if __name__ == "__main__":
    main()
