"""The inference paths that are compared, each behind the same small interface.

A path is built for one model file and one thread count, and called with a
``(batch, features)`` float32 array. Every path returns the class probabilities and
labels, so each does the same work:

- ``torch``: PyTorch eager, the exported head module (standardize -> net -> head)
  under ``torch.inference_mode()``; ``torch.set_num_threads`` before each block.
- ``ort``: a raw ``onnxruntime.InferenceSession.run`` fetching ``probabilities`` and
  ``label`` (the outputs ``Predictor`` fetches) with the same session options as
  ``Predictor`` (intra-op threads, one inter-op thread, sequential, all optimizations).
- ``predictor``: ``onnxedge.runtime.Predictor.predict`` (validation included).
- ``edge``: the embedded script's scoring function, ``EdgeModel(path, provider="cpu",
  threads=t).score(x)``, loaded from ``runtime/edge_infer.py`` as a device would (the
  file, not the package), where the script exists.

torch is imported only when the ``torch`` path is built.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

PATH_NAMES = ("torch", "ort", "predictor", "edge")
PATH_LABELS = {
    "torch": "PyTorch eager",
    "ort": "raw ORT session.run",
    "predictor": "Predictor.predict",
    "edge": "edge script",
}
REPO = Path(__file__).resolve().parent.parent
EDGE_SCRIPT = REPO / "runtime" / "edge_infer.py"
_FETCH = ["probabilities", "label"]


class InferencePath:
    """A named callable ``(batch, features) -> outputs`` with a hook run before each block.

    Attributes:
        name: one of :data:`PATH_NAMES` (``ort-int8`` style names for variants).
        threads: the intra-op thread count it was built with.
    """

    def __init__(
        self,
        name: str,
        threads: int,
        run: Callable[[np.ndarray], Any],
        enter: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.threads = threads
        self._run = run
        self._enter = enter

    def enter(self) -> None:
        """Apply process-wide settings this path needs (torch's thread count)."""
        if self._enter is not None:
            self._enter()

    def __call__(self, x: np.ndarray) -> Any:
        return self._run(x)


def edge_available() -> bool:
    """Whether the embedded script exists in this checkout."""
    return EDGE_SCRIPT.is_file()


def build_path(name: str, onnx_path: Path, run_dir: Path | None, threads: int) -> InferencePath:
    """Build one path for a model.

    Args:
        name: ``torch``, ``ort``, ``predictor`` or ``edge``.
        onnx_path: the model file (ignored by ``torch``).
        run_dir: the run folder (``torch`` only).
        threads: intra-op threads.

    Raises:
        ValueError: unknown path name, or ``torch`` without a run folder.
        FileNotFoundError: ``edge`` without ``runtime/edge_infer.py``.
    """
    if name == "torch":
        if run_dir is None:
            raise ValueError("the torch path needs the model's run folder")
        return _torch_path(run_dir, threads)
    if name == "ort":
        return _ort_path(onnx_path, threads)
    if name == "predictor":
        return _predictor_path(onnx_path, threads)
    if name == "edge":
        return _edge_path(onnx_path, threads)
    raise ValueError(f"unknown path {name!r}; expected one of {PATH_NAMES}")


def session_options(threads: int) -> Any:
    """onnxruntime session options matching ``Predictor``'s (for the raw path)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _torch_path(run_dir: Path, threads: int) -> InferencePath:
    import torch

    from benchmarks.models import load_head_module

    module = load_head_module(run_dir)
    inference_mode = torch.inference_mode
    from_numpy = torch.from_numpy

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with inference_mode():
            _, probabilities, label = module(from_numpy(x))
        return probabilities.numpy(), label.numpy()

    def enter() -> None:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    enter()
    return InferencePath("torch", threads, run, enter)


def _ort_path(onnx_path: Path, threads: int, name: str = "ort") -> InferencePath:
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(onnx_path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
    )
    run_session = session.run
    fetch = list(_FETCH)

    def run(x: np.ndarray) -> list[np.ndarray]:
        outputs: list[np.ndarray] = run_session(fetch, {"input": x})
        return outputs

    return InferencePath(name, threads, run)


def _predictor_path(onnx_path: Path, threads: int, name: str = "predictor") -> InferencePath:
    from onnxedge.runtime.predictor import Predictor

    predictor = Predictor(onnx_path, provider="cpu", threads=threads)
    return InferencePath(name, threads, predictor.predict)


def load_edge_module() -> ModuleType:
    """Import ``runtime/edge_infer.py`` from its file, as a device runs it.

    Raises:
        FileNotFoundError: the script is not in this checkout.
    """
    if not EDGE_SCRIPT.is_file():
        raise FileNotFoundError(
            f"{EDGE_SCRIPT} does not exist (the embedded script has not landed)"
        )
    cached = sys.modules.get("onnxedge_bench_edge_infer")
    if cached is not None:
        return cached
    spec = importlib.util.spec_from_file_location("onnxedge_bench_edge_infer", EDGE_SCRIPT)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot load {EDGE_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _edge_path(onnx_path: Path, threads: int) -> InferencePath:
    edge = load_edge_module()
    model = edge.EdgeModel(str(onnx_path), provider="cpu", threads=threads)
    return InferencePath("edge", threads, model.score)


def variant_paths(onnx_path: Path, threads: int, variant: str) -> list[InferencePath]:
    """Raw ORT and Predictor on a variant's file (``ort-<variant>``, ``predictor-<variant>``)."""
    return [
        _ort_path(onnx_path, threads, name=f"ort-{variant}"),
        _predictor_path(onnx_path, threads, name=f"predictor-{variant}"),
    ]
