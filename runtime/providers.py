"""Execution-provider choice, checked: the edge script's one copy with onnxedge's types.

onnxruntime falls back to the CPU silently, so the runtime chooses the providers itself
(:func:`resolve_providers`), checks what the session got (:func:`check_session_providers`)
and, for ``cuda``, where its compute nodes run (:func:`check_placement`). Requests are
``auto`` (CUDA when the session really gets it), ``cpu`` and ``cuda`` (strict). The lists
are arguments, so the logic is tested against faked provider lists and profiles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from importlib import metadata

from onnxedge.runtime import edge_infer as _edge
from onnxedge.runtime.model_file import typed_errors

CPU, CUDA, REQUESTS, COMPUTE_OPS = _edge.CPU, _edge.CUDA, _edge.REQUESTS, _edge.COMPUTE_OPS
local_providers, count_placement = _edge.local_providers, _edge.count_placement
normalize_request = typed_errors(_edge.normalize_request)
resolve_providers = typed_errors(_edge.choose_providers)
check_session_providers = typed_errors(_edge.check_session_providers)
check_placement = typed_errors(_edge.check_placement)

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
