"""Which onnxruntime distributions are installed, and a warning when two of them clash.

Choosing and checking the execution providers (``auto``, ``cpu``, strict ``cuda``) is the
edge script's (:mod:`onnxedge.runtime.edge_infer`); ``CPU`` and ``CUDA`` are re-exported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from importlib import metadata

from onnxedge.runtime.edge_infer import CPU as CPU
from onnxedge.runtime.edge_infer import CUDA as CUDA

#: Distributions that each ship the ``onnxruntime`` package; two in one environment
#: overwrite each other's files (typically the CUDA provider disappears).
ORT_DISTRIBUTIONS: tuple[str, ...] = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml")
ORT_DISTRIBUTIONS += ("onnxruntime-openvino", "onnxruntime-qnn", "onnxruntime-training")


def installed_ort_distributions(names: Iterable[str] | None = None) -> list[str]:
    """The onnxruntime distributions installed (or among ``names``, a test's fake list)."""
    if names is None:
        found = []
        for name in ORT_DISTRIBUTIONS:
            with contextlib.suppress(metadata.PackageNotFoundError):
                metadata.version(name)
                found.append(name)
        return found
    wanted = {name.strip().lower().replace("_", "-") for name in names}
    return [name for name in ORT_DISTRIBUTIONS if name in wanted]


def distribution_conflict(distributions: Iterable[str]) -> str | None:
    """A warning when several onnxruntime distributions are installed, else None."""
    found = list(distributions)
    if len(found) < 2:
        return None
    keep = "onnxruntime-gpu" if "onnxruntime-gpu" in found else found[0]
    return (
        f"several onnxruntime distributions are installed ({', '.join(found)}); they "
        "overwrite each other's files and a provider can disappear. Keep one: "
        f"pip uninstall -y {' '.join(found)} && pip install {keep}"
    )
