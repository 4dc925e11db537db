"""Execution-provider choice for onnxruntime, as pure functions.

onnxruntime silently falls back to the CPU when a requested provider cannot be
created (printing a warning at most), so the runtime decides itself which providers
to ask for (:func:`resolve_providers`) and afterwards checks what the session really
got (:func:`check_session_providers`). Both take the lists as arguments, so the
logic is tested against faked ``get_available_providers()`` results on any machine.

Requests are ``auto``, ``cpu`` or ``cuda`` (case-insensitive):

* ``cpu``: ``CPUExecutionProvider`` only.
* ``cuda``: strict. ``CUDAExecutionProvider`` (then the CPU for the operators CUDA
  does not implement); :class:`ProviderUnavailableError` when this onnxruntime does
  not offer it, or when the session did not get it.
* ``auto``: CUDA when this onnxruntime offers it and the session really gets it,
  the CPU otherwise; the predictor reports which one ran.

This module imports only the standard library; onnxruntime is asked for its lists
by the callers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from onnxedge.runtime.errors import ProviderUnavailableError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

#: The requests a user may write, lower case.
REQUESTS: tuple[str, ...] = ("auto", "cpu", "cuda")

#: Providers onnxruntime lists that cannot run a local graph (the Azure provider only
#: calls remote endpoints); they are left out of "available" in messages.
_NOT_LOCAL = frozenset({"AzureExecutionProvider"})

#: Distributions that each ship their own ``onnxruntime`` package; two of them in one
#: environment overwrite each other's files (typically the CUDA provider disappears).
ORT_DISTRIBUTIONS: tuple[str, ...] = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
    "onnxruntime-training",
)

#: A resolved provider entry, as onnxruntime's ``providers=`` accepts it.
ProviderEntry = tuple[str, dict[str, Any]]


def normalize_request(requested: str) -> str:
    """Return ``requested`` as one of :data:`REQUESTS`.

    Args:
        requested: ``auto``, ``cpu`` or ``cuda`` in any case; the full names
            ``CPUExecutionProvider`` / ``CUDAExecutionProvider`` are accepted too.

    Raises:
        ProviderUnavailableError: for any other value.
    """
    if not isinstance(requested, str):
        raise ProviderUnavailableError(
            f"provider must be one of {', '.join(REQUESTS)}; got {requested!r}"
        )
    value = requested.strip().lower()
    value = {CPU.lower(): "cpu", CUDA.lower(): "cuda"}.get(value, value)
    if value not in REQUESTS:
        raise ProviderUnavailableError(
            f"provider must be one of {', '.join(REQUESTS)}; got {requested!r}"
        )
    return value


def local_providers(available: Iterable[str]) -> list[str]:
    """The providers in ``available`` that can run a graph on this machine."""
    return [name for name in available if name not in _NOT_LOCAL]


def _describe_available(available: Iterable[str]) -> str:
    names = local_providers(available)
    return ", ".join(names) if names else "none"


def resolve_providers(
    requested: str,
    available: Iterable[str],
    device_id: int = 0,
    options: Mapping[str, Any] | None = None,
) -> list[ProviderEntry]:
    """Choose the ``providers=`` list to pass to ``onnxruntime.InferenceSession``.

    Args:
        requested: ``auto``, ``cpu`` or ``cuda`` (case-insensitive).
        available: what ``onnxruntime.get_available_providers()`` returned.
        device_id: the CUDA device ordinal (ignored for the CPU).
        options: extra provider options for the accelerator (CUDA), e.g.
            ``{"cudnn_conv_algo_search": "DEFAULT"}``; for ``cpu`` they go to the CPU
            provider.

    Returns:
        ``[(name, options), ...]`` in order of precedence; the CPU provider is always
        last, so operators an accelerator lacks still run.

    Raises:
        ProviderUnavailableError: ``cuda`` was asked for and this onnxruntime does not
            offer ``CUDAExecutionProvider``, or the request is unknown, or
            ``device_id`` is negative.
    """
    request = normalize_request(requested)
    available = list(available)
    extra = dict(options or {})
    if request == "cpu":
        return [(CPU, extra)]
    if isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < 0:
        raise ProviderUnavailableError(f"device_id must be an integer >= 0; got {device_id!r}")
    if CUDA in available:
        return [(CUDA, {"device_id": device_id, **extra}), (CPU, {})]
    if request == "cuda":
        raise ProviderUnavailableError(
            f"{CUDA} requested; available: {_describe_available(available)}"
        )
    return [(CPU, {})]


def check_session_providers(
    requested: str, resolved: Iterable[ProviderEntry], session_providers: Iterable[str]
) -> str | None:
    """Compare what a session got with what was asked; return a note when they differ.

    Args:
        requested: the user's request (``auto``, ``cpu``, ``cuda``).
        resolved: what :func:`resolve_providers` returned (what was passed).
        session_providers: ``session.get_providers()`` after creation.

    Returns:
        None when the session got its first choice; else a one-line note for the log
        (``auto`` that asked for CUDA and got only the CPU).

    Raises:
        ProviderUnavailableError: ``cuda`` was asked for and the session does not
            have ``CUDAExecutionProvider`` (onnxruntime could not create it and fell
            back to the CPU).
    """
    request = normalize_request(requested)
    got = list(session_providers)
    wanted = [name for name, _ in resolved]
    first = wanted[0] if wanted else CPU
    if first in got:
        return None
    if request == "cuda":
        raise ProviderUnavailableError(
            f"{CUDA} requested; the session got: {_describe_available(got)} (onnxruntime "
            "offers CUDA but could not create it: check the CUDA / cuDNN libraries and "
            "the device id)"
        )
    return f"{first} was offered but the session runs on {', '.join(got) or 'nothing'}"


def installed_ort_distributions(
    names: Iterable[str] | None = None,
) -> list[str]:
    """The onnxruntime distributions installed, e.g. ``["onnxruntime"]``.

    Args:
        names: distribution names to look at instead of the environment's (a test
            fakes them); compared case-insensitively with ``-`` and ``_`` equal.
    """
    if names is None:
        found: list[str] = []
        for dist_name in ORT_DISTRIBUTIONS:
            try:
                metadata.version(dist_name)
            except metadata.PackageNotFoundError:
                continue
            found.append(dist_name)
        return found
    wanted = {_canonical(name) for name in names}
    return [name for name in ORT_DISTRIBUTIONS if _canonical(name) in wanted]


def distribution_conflict(distributions: Iterable[str]) -> str | None:
    """A warning when several onnxruntime distributions are installed, else None.

    ``onnxruntime`` and ``onnxruntime-gpu`` install the same ``onnxruntime`` package;
    with both present whichever was installed last wins file by file, and the CUDA
    provider typically disappears.
    """
    found = list(distributions)
    if len(found) < 2:
        return None
    keep = "onnxruntime-gpu" if "onnxruntime-gpu" in found else found[0]
    return (
        f"several onnxruntime distributions are installed ({', '.join(found)}); they "
        "overwrite each other's files and a provider can disappear. Keep one: "
        f"pip uninstall -y {' '.join(found)} && pip install {keep}"
    )


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-")
