"""Tiny ONNX classifiers for the runtime tests, built with ``onnx.helper``.

The export code builds the real models; these fixtures build the same graph
contract by hand so the runtime is tested on its own:

* ``multiclass``: standardize -> MatMul+Add -> Relu -> MatMul+Add = ``logits``
  (n, 3) -> Softmax = ``probabilities`` -> ArgMax(keepdims=0) = ``label`` (n,) int64,
  with onnxedge metadata.
* ``binary``: the same body with one logit (n, 1) -> Sigmoid = ``probabilities``
  (n, 1) -> ``label`` = Squeeze(Cast(p >= threshold)) (n,), with metadata.
* ``plain``: no onnxedge metadata, as skl2onnx writes a classifier (producer
  ``skl2onnx``, input ``float_input``, one output ``output_probability`` holding
  softmax probabilities): a known converter's probability output.
* refused models from other exporters' conventions: ``torch.onnx``'s dynamo defaults
  (input ``x``, output ``linear_1``), an Identity graph, a logits-only graph.
* ``sklearn_linear``: an ``ai.onnx.ml`` LinearClassifier with ``classlabels_strings``.
* ``cnn``: rows of shape (1, 8, 8) through Conv -> Relu -> Flatten -> Gemm -> Softmax.

Each case carries its weights so a test can compute the forward pass in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxedge.runtime.contract import ModelContract

OPSET = 17
IR_VERSION = 9  # what onnxruntime 1.18 (the oldest release pyproject allows) reads


@dataclass
class ModelCase:
    """A model file plus what a test needs to know about it."""

    name: str
    path: Path
    num_features: int
    num_classes: int
    class_names: list[str] | None
    feature_names: list[str] | None
    weights: dict[str, np.ndarray]
    threshold: float = 0.5
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()

    def rows(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` float32 rows around the model's normalization mean."""
        rng = np.random.default_rng(seed)
        mean = self.weights["mean"]
        std = self.weights["std"]
        return (mean + std * rng.standard_normal((n, self.num_features))).astype(np.float32)


def _mlp_nodes(input_name: str, logits_name: str) -> list[onnx.NodeProto]:
    return [
        helper.make_node("Sub", [input_name, "mean"], ["centered"]),
        helper.make_node("Div", ["centered", "std"], ["standardized"]),
        helper.make_node("MatMul", ["standardized", "W1"], ["h_pre"]),
        helper.make_node("Add", ["h_pre", "b1"], ["h_bias"]),
        helper.make_node("Relu", ["h_bias"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "W2"], ["z"]),
        helper.make_node("Add", ["z", "b2"], [logits_name]),
    ]


def _weights(num_features: int, hidden: int, outputs: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "mean": rng.normal(0.0, 2.0, num_features).astype(np.float32),
        "std": rng.uniform(0.5, 3.0, num_features).astype(np.float32),
        "W1": (rng.standard_normal((num_features, hidden)) / np.sqrt(num_features)).astype(
            np.float32
        ),
        "b1": rng.normal(0.0, 0.1, hidden).astype(np.float32),
        "W2": (rng.standard_normal((hidden, outputs)) * 1.5 / np.sqrt(hidden)).astype(np.float32),
        "b2": rng.normal(0.0, 0.1, outputs).astype(np.float32),
    }


def _initializers(weights: dict[str, np.ndarray]) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(value, name) for name, value in weights.items()]


def _finish(graph: onnx.GraphProto, metadata: dict[str, str], producer: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer
    )
    model.ir_version = IR_VERSION
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    return model


def build_multiclass(
    num_features: int = 5, num_classes: int = 3, hidden: int = 8, seed: int = 0
) -> tuple[onnx.ModelProto, dict[str, np.ndarray], ModelContract]:
    """The onnxedge multiclass contract with random weights."""
    weights = _weights(num_features, hidden, num_classes, seed)
    nodes = [
        *_mlp_nodes("input", "logits"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "multiclass",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", num_features])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes]),
            helper.make_tensor_value_info(
                "probabilities", TensorProto.FLOAT, ["batch", num_classes]
            ),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        _initializers(weights),
    )
    contract = ModelContract(
        task="multiclass",
        head="softmax",
        class_names=[f"class_{k}" for k in range(num_classes)],
        num_features=num_features,
        feature_names=[f"f{i}" for i in range(num_features)],
        extra={
            "normalization": {"mean": weights["mean"].tolist(), "std": weights["std"].tolist()},
            "opset": str(OPSET),
            "parity": {"probabilities_max_abs": 1.2e-7, "labels_equal": True},
        },
    )
    return _finish(graph, contract.to_metadata(), "onnxedge-tests"), weights, contract


def build_binary(
    num_features: int = 4, hidden: int = 6, threshold: float = 0.5, seed: int = 1
) -> tuple[onnx.ModelProto, dict[str, np.ndarray], ModelContract]:
    """The onnxedge binary contract: sigmoid head, thresholded label."""
    weights = _weights(num_features, hidden, 1, seed)
    threshold_tensor = numpy_helper.from_array(np.array(threshold, dtype=np.float32), "threshold")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "squeeze_axes")
    nodes = [
        *_mlp_nodes("input", "logits"),
        helper.make_node("Sigmoid", ["logits"], ["probabilities"]),
        helper.make_node("GreaterOrEqual", ["probabilities", "threshold"], ["positive"]),
        helper.make_node("Cast", ["positive"], ["label_2d"], to=TensorProto.INT64),
        helper.make_node("Squeeze", ["label_2d", "squeeze_axes"], ["label"]),
    ]
    graph = helper.make_graph(
        nodes,
        "binary",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", num_features])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        [*_initializers(weights), threshold_tensor, axes],
    )
    contract = ModelContract(
        task="binary",
        head="sigmoid",
        threshold=threshold,
        class_names=["negative", "positive"],
        num_features=num_features,
        feature_names=[f"x{i}" for i in range(num_features)],
        extra={
            "normalization": {"mean": weights["mean"].tolist(), "std": weights["std"].tolist()},
            "opset": str(OPSET),
        },
    )
    return _finish(graph, contract.to_metadata(), "onnxedge-tests"), weights, contract


def build_plain(
    num_features: int = 3, num_classes: int = 4, hidden: int = 5, seed: int = 2
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A classifier from skl2onnx: no onnxedge metadata, its names, probabilities only."""
    weights = _weights(num_features, hidden, num_classes, seed)
    nodes = [
        *_mlp_nodes("float_input", "scores_raw"),
        helper.make_node("Softmax", ["scores_raw"], ["output_probability"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "plain",
        [helper.make_tensor_value_info("float_input", TensorProto.FLOAT, [None, num_features])],
        [
            helper.make_tensor_value_info(
                "output_probability", TensorProto.FLOAT, [None, num_classes]
            )
        ],
        _initializers(weights),
    )
    return _finish(graph, {}, "skl2onnx"), weights


def build_foreign(kind: str, num_features: int = 5, seed: int = 3) -> onnx.ModelProto:
    """A model onnxedge must refuse: ``dynamo`` (x -> linear_1 logits), ``identity``
    (input[batch, n] -> y[batch, n]) or ``logits`` (its only output is ``logits``)."""
    if kind == "identity":
        nodes = [helper.make_node("Identity", ["input"], ["y"])]
        graph = helper.make_graph(
            nodes,
            "identity",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", num_features])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", num_features])],
        )
        return _finish(graph, {}, "onnxedge-tests")
    weights = _weights(num_features, 6, 3, seed)
    name, out = ("x", "linear_1") if kind == "dynamo" else ("input", "logits")
    graph = helper.make_graph(
        _mlp_nodes(name, out),
        kind,
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["s0", num_features])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["s0", 3])],
        _initializers(weights),
    )
    return _finish(graph, {}, "pytorch")


def build_sklearn_linear(
    classes: tuple[str, ...] = ("setosa", "versicolor", "virginica"), num_features: int = 4
) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """skl2onnx's LogisticRegression (zipmap=False): a LinearClassifier with string labels.

    Returns the model, its coefficients ``(C, F)`` and intercepts ``(C,)``.
    """
    rng = np.random.default_rng(4)
    coef = rng.normal(0, 1, (len(classes), num_features)).astype(np.float32)
    intercepts = rng.normal(0, 0.5, len(classes)).astype(np.float32)
    node = helper.make_node(
        "LinearClassifier",
        ["X"],
        ["output_label", "output_probability"],
        domain="ai.onnx.ml",
        coefficients=coef.reshape(-1).tolist(),
        intercepts=intercepts.tolist(),
        classlabels_strings=list(classes),
        post_transform="SOFTMAX",
        multi_class=1,
    )
    graph = helper.make_graph(
        [node],
        "sklearn",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, num_features])],
        [
            helper.make_tensor_value_info("output_label", TensorProto.STRING, [None]),
            helper.make_tensor_value_info(
                "output_probability", TensorProto.FLOAT, [None, len(classes)]
            ),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", 3)],
        producer_name="skl2onnx",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model, coef, intercepts


def build_cnn(
    channels: int = 2, num_classes: int = 3, seed: int = 5
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """An onnxedge image classifier: rows (1, 8, 8) -> Conv 3x3 -> Relu -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    weights = {
        "conv_w": rng.normal(0, 0.5, (channels, 1, 3, 3)).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, channels).astype(np.float32),
        "fc_w": rng.normal(0, 0.2, (channels * 64, num_classes)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, num_classes).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Flatten", ["relu"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "fc_w"], ["z"]),
        helper.make_node("Add", ["z", "fc_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes]),
            helper.make_tensor_value_info(
                "probabilities", TensorProto.FLOAT, ["batch", num_classes]
            ),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        _initializers(weights),
    )
    contract = ModelContract(
        task="multiclass",
        head="softmax",
        class_names=[f"digit_{k}" for k in range(num_classes)],
        num_features=64,
        input_shape=(1, 8, 8),
    )
    return _finish(graph, contract.to_metadata(), "onnxedge-tests"), weights


def cnn_forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The CNN's logits in float64 numpy (a 3x3 convolution written out), ``x`` (n, 1, 8, 8)."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((x.shape[0], w["conv_w"].shape[0], 8, 8))
    for i in range(3):
        for j in range(3):
            patch = padded[:, :, i : i + 8, j : j + 8]  # (n, 1, 8, 8)
            conv += np.einsum("nchw,oc->nohw", patch, w["conv_w"][:, :, i, j])
    conv += w["conv_b"][None, :, None, None]
    flat = np.maximum(conv, 0.0).reshape(x.shape[0], -1)
    return flat @ w["fc_w"] + w["fc_b"]


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Write ``model`` to ``path`` and return the path."""
    onnx.save(model, str(path))
    return path


def numpy_forward(case: ModelCase, x: np.ndarray) -> dict[str, np.ndarray]:
    """The fixture graph in float64 numpy: logits and per-class probabilities."""
    w = {k: v.astype(np.float64) for k, v in case.weights.items()}
    z = (x.astype(np.float64) - w["mean"]) / w["std"]
    hidden = np.maximum(z @ w["W1"] + w["b1"], 0.0)
    logits = hidden @ w["W2"] + w["b2"]
    if logits.shape[1] == 1:
        # exp(-|x|) form: no overflow for large |logit|
        e = np.exp(-np.abs(logits[:, 0]))
        p = np.where(logits[:, 0] >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        probs = np.stack([1.0 - p, p], axis=1)
    else:
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        probs = exp / exp.sum(axis=1, keepdims=True)
    return {"logits": logits, "probabilities": probs}


def with_golden(model: onnx.ModelProto, rows: np.ndarray) -> onnx.ModelProto:
    """``model`` with a golden set (contract KEY_GOLDEN) of ``rows``, computed by onnxruntime
    here, under the named tolerances, as export stores one."""
    import json

    import onnxruntime as ort
    from onnxedge.runtime.contract import KEY_GOLDEN
    from onnxedge.runtime.tolerances import LOGIT_ATOL, PROBABILITY_ATOL

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, probs, labels = session.run(["logits", "probabilities", "label"], {"input": rows})
    golden = {
        "rows": rows.reshape(rows.shape[0], -1).astype(np.float64).tolist(),
        "logits": logits.astype(np.float64).tolist(),
        "probabilities": probs.astype(np.float64).tolist(),
        "labels": labels.tolist(),
        "tolerances": {"logits": LOGIT_ATOL, "probabilities": PROBABILITY_ATOL},
    }
    out = onnx.ModelProto()
    out.CopyFrom(model)
    helper.set_model_props(
        out,
        {**{p.key: p.value for p in model.metadata_props}, KEY_GOLDEN: json.dumps(golden)},
    )
    return out


def with_external_data(model: onnx.ModelProto, folder: Path, name: str) -> Path:
    """Save ``model`` with every tensor in ``<name>.bin`` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        location=f"{name}.bin",
        size_threshold=0,
        convert_attribute=True,
    )
    return path
