"""Execution-provider choice, checked: onnxedge's types over the edge script's one copy.

onnxruntime falls back to the CPU silently, so the runtime chooses the providers itself
(:func:`resolve_providers`), checks what the session got (:func:`check_session_providers`)
and, for ``cuda``, where its compute nodes run (:func:`check_placement`). Requests are
``auto`` (CUDA when the session really gets it), ``cpu`` and ``cuda`` (strict). The lists
are arguments, so the logic is tested against faked provider lists and profiles.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from onnxedge.runtime import edge_infer as _edge
from onnxedge.runtime.errors import ProviderUnavailableError

CPU, CUDA, REQUESTS, COMPUTE_OPS = _edge.CPU, _edge.CUDA, _edge.REQUESTS, _edge.COMPUTE_OPS
local_providers, count_placement = _edge.local_providers, _edge.count_placement

#: Distributions that each ship the ``onnxruntime`` package; two in one environment
#: overwrite each other's files (typically the CUDA provider disappears).
ORT_DISTRIBUTIONS: tuple[str, ...] = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
    "onnxruntime-training",
)


def _typed(function: Any) -> Any:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except _edge.EdgeError as exc:
            raise ProviderUnavailableError(str(exc)) from None

    return wrapper


normalize_request = _typed(_edge.normalize_request)
resolve_providers = _typed(_edge.choose_providers)
check_session_providers = _typed(_edge.check_session_providers)
check_placement = _typed(_edge.check_placement)


def installed_ort_distributions(names: Iterable[str] | None = None) -> list[str]:
    """The onnxruntime distributions installed (or among ``names``, a test's fake list)."""
    if names is None:
        found = []
        for name in ORT_DISTRIBUTIONS:
            try:
                metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
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
