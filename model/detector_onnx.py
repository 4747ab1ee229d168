"""The pinned SSD-MobileNetV2 frozen graph converted to ONNX for image-level class scores, without TensorFlow.

    graph = convert(pb_bytes, class_ids=[1, 3, 18])   # ONNX bytes: images (N, 3, 300, 300) 0..255 RGB -> scores (N, 3)

What is converted is what image-level scores need: the preprocessing (``x * 2/255 - 1``), the MobileNetV2 feature
extractor with its SSD layers, and the six class predictors cut to ``class_ids``' output channels; each class's
score is the sigmoid of its largest logit over every anchor of every feature map, which is the score the full
network's best box of that class gets (SSD scores classes by independent sigmoids, and non-maximum suppression keeps
each class's best box). Box regressors, anchors, decoding and NMS are left out.

The conversion reads the graph with ``model.tf_graph`` and maps its few operations (Conv2D,
DepthwiseConv2dNative, the batch norms' Mul/Add/Sub with constants folded, Relu6, residual Add, BiasAdd) to ONNX
ones; TensorFlow's SAME padding is ONNX's SAME_UPPER. ONNX Runtime then fuses the batch norms into the
convolutions. ``tests/test_detector.py`` checks its scores against OpenCV's reading of the same file.
"""
from __future__ import annotations

import numpy as np

from model.tf_graph import GraphError, Node, read_graph, source

NUM_CLASSES = 91  # the class predictors' channels per anchor: COCO ids 1..90 and the background (0)
INPUT = "Preprocessor/sub"  # the preprocessed image: where the converted graph starts
FEATURE_MAPS = ("FeatureExtractor/MobilenetV2/expanded_conv_13/expansion_output",
                "FeatureExtractor/MobilenetV2/Conv_1/Relu6",
                *(f"FeatureExtractor/MobilenetV2/layer_19_2_Conv2d_{k}_3x3_s2_{c}/Relu6"
                  for k, c in ((2, 512), (3, 256), (4, 256), (5, 128))))
CLASS_PREDICTOR = "BoxPredictor_{k}/ClassPredictor"
OPSET = 17


class _Converter:
    def __init__(self, nodes: dict[str, Node]):
        import onnx.helper  # loaded only where a graph is built

        self.h, self.nodes = onnx.helper, nodes
        self.onnx_nodes, self.initializers, self.values, self._consts = [], [], {}, {}

    # ---- constants: Const, and whatever is computed from constants only (the batch norms' scale and shift)
    def const(self, name: str) -> np.ndarray | None:
        name = source(name)
        if name in self._consts:
            return self._consts[name]
        node = self.nodes[name]
        value = None
        if node.op == "Const":
            value = node.attr["value"].array()
        elif node.op == "Identity":
            value = self.const(node.inputs[0])
        elif node.op in ("Rsqrt", "Add", "Mul", "Sub") and name != INPUT:
            args = [self.const(i) for i in node.inputs]
            if all(a is not None for a in args):
                value = {"Rsqrt": lambda a: 1 / np.sqrt(a), "Add": np.add, "Mul": np.multiply,
                         "Sub": np.subtract}[node.op](*args).astype(np.float32)
        self._consts[name] = value
        return value

    def initializer(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def add(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.onnx_nodes.append(self.h.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def channel(self, value: np.ndarray, name: str) -> str:
        """A constant broadcast over (N, C, H, W): a scalar, or one value per channel."""
        return self.initializer(name, value.reshape(1, -1, 1, 1) if value.ndim == 1 else value)

    # ---- the data path, NHWC in TensorFlow, NCHW here
    def value(self, name: str) -> str:
        name = source(name)
        if name in self.values:
            return self.values[name]
        node = self.nodes[name]
        out = f"{name}:0"
        if name == INPUT:
            mul, sub = (self.const(f"Preprocessor/{k}") for k in ("mul/x", "sub/y"))
            scaled = self.add("Mul", ["images", self.initializer("Preprocessor/scale", mul)], "Preprocessor/mul:0")
            result = self.add("Sub", [scaled, self.initializer("Preprocessor/offset", sub)], out)
        elif node.op == "Identity":
            result = self.value(node.inputs[0])
        elif node.op in ("Conv2D", "DepthwiseConv2dNative"):
            result = self.conv(node, out)
        elif node.op in ("Mul", "Add", "Sub", "BiasAdd"):
            a, b = node.inputs[:2]
            ca, cb = self.const(a), self.const(b)
            op = "Add" if node.op == "BiasAdd" else node.op
            if ca is None and cb is None:
                result = self.add(op, [self.value(a), self.value(b)], out)
            elif cb is not None:
                result = self.add(op, [self.value(a), self.channel(cb, f"{name}/c")], out)
            elif op in ("Mul", "Add"):
                result = self.add(op, [self.channel(ca, f"{name}/c"), self.value(b)], out)
            else:
                raise GraphError(f"{name}: a constant minus data is not converted")
        elif node.op == "Relu6":
            lo, hi = (self.initializer(f"{name}/{k}", np.array(v, dtype=np.float32))
                      for k, v in (("min", 0), ("max", 6)))
            result = self.add("Clip", [self.value(node.inputs[0]), lo, hi], out)
        else:
            raise GraphError(f"{name}: operation {node.op} is not converted (the feature extractor uses none)")
        self.values[name] = result
        return result

    def conv(self, node: Node, out: str, *, weights: np.ndarray | None = None, bias: np.ndarray | None = None) -> str:
        if node.attr.get("data_format", b"NHWC") != b"NHWC":
            raise GraphError(f"{node.name}: data format {node.attr['data_format']!r} is not converted")
        w = self.const(node.inputs[1]) if weights is None else weights
        kh, kw, cin, cout = w.shape
        strides = list(node.attr.get("strides", [1, 1, 1, 1]))[1:3]
        dilations = list(node.attr.get("dilations", [1, 1, 1, 1]))[1:3]
        pad = {b"SAME": {"auto_pad": "SAME_UPPER"}, b"VALID": {"pads": [0, 0, 0, 0]}}[node.attr["padding"]]
        if node.op == "DepthwiseConv2dNative":  # (kh, kw, C, multiplier) -> (C * multiplier, 1, kh, kw), C groups
            kernel, group = w.transpose(2, 3, 0, 1).reshape(cin * cout, 1, kh, kw), cin
        else:  # (kh, kw, in, out) -> (out, in, kh, kw)
            kernel, group = w.transpose(3, 2, 0, 1), 1
        inputs = [self.value(node.inputs[0]), self.initializer(f"{node.name}/kernel", kernel)]
        if bias is not None:
            inputs.append(self.initializer(f"{node.name}/bias", bias))
        return self.add("Conv", inputs, out, strides=strides, dilations=dilations, group=group,
                        kernel_shape=[kh, kw], **pad)


def convert(pb: bytes, class_ids: list[int]) -> bytes:
    """ONNX bytes scoring ``class_ids`` (COCO ids 1..90) of every photo: input ``images`` (N, 3, 300, 300) float
    RGB in 0..255, already resized; output ``scores`` (N, len(class_ids)) in 0..1.

    Raises:
        GraphError: the graph holds something this converter does not know (it was made for the pinned file).
    """
    import onnx
    from onnx import TensorProto

    if not class_ids or any(not 1 <= c < NUM_CLASSES for c in class_ids):
        raise ValueError(f"class ids must be COCO ids 1..{NUM_CLASSES - 1}: {class_ids}")
    c = _Converter(read_graph(pb))
    h = c.h
    maxima = []
    for k, feature in enumerate(FEATURE_MAPS):
        predictor = c.nodes[f"{CLASS_PREDICTOR.format(k=k)}/Conv2D"]
        if source(predictor.inputs[0]) != feature:
            raise GraphError(f"{predictor.name} reads {predictor.inputs[0]}, not {feature}")
        w = c.const(predictor.inputs[1])
        b = c.const(f"{CLASS_PREDICTOR.format(k=k)}/biases")
        anchors = w.shape[3] // NUM_CLASSES
        rows = np.array([a * NUM_CLASSES + cls for a in range(anchors) for cls in class_ids])
        logits = c.conv(predictor, f"head{k}/logits", weights=w[..., rows], bias=b[rows])
        shape = c.initializer(f"head{k}/shape", np.array([0, anchors, len(class_ids), -1], dtype=np.int64))
        # float arrays only in initializer(): the shape is int64
        c.initializers[-1] = onnx.numpy_helper.from_array(np.array([0, anchors, len(class_ids), -1], dtype=np.int64),
                                                          shape)
        grouped = c.add("Reshape", [logits, shape], f"head{k}/by_anchor")
        maxima.append(c.add("ReduceMax", [grouped], f"head{k}/best", axes=[1, 3], keepdims=0))
    best = c.add("Max", maxima, "best_logit")
    c.add("Sigmoid", [best], "scores")
    graph = h.make_graph(c.onnx_nodes, "ssd_mobilenet_v2_class_scores",
                         [h.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 300, 300])],
                         [h.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", len(class_ids)])],
                         initializer=c.initializers)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="photo-tagger",
                         doc_string="SSD-MobileNetV2 COCO (ssd_mobilenet_v2_coco_2018_03_29) class scores per image")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
