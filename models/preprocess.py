"""Input preprocessing as data: saved in a run folder and the model's ``onnxedge.preprocess``
metadata, built by export into the graph in front of the net (a device feeds raw rows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from onnxedge.runtime.errors import CheckpointError


@dataclass(frozen=True)
class Standardize:
    """``(x - mean) / std``; ``mean`` and ``std`` (float32, one shape, ``std > 0``) broadcast
    to one row: ``(features,)``, or ``(C, 1, 1)`` for per-channel image statistics."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        mean, std = (np.asarray(v, dtype=np.float32) for v in (self.mean, self.std))
        if mean.shape != std.shape:
            raise CheckpointError(
                f"standardize: mean has shape {mean.shape} but std has shape {std.shape}"
            )
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise CheckpointError("standardize: mean and std must be finite with std > 0")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardize a batch ``(n, *row_shape)``."""
        return (x - self.mean) / self.std

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in run folders and model metadata."""
        return {
            "kind": "standardize",
            "shape": list(self.mean.shape),
            "mean": self.mean.ravel().tolist(),
            "std": self.std.ravel().tolist(),
        }


@dataclass(frozen=True)
class Rescale:
    """``x * factor``, finite and non-zero (pixels 0..255 to 0..1: ``Rescale(1 / 255)``)."""

    factor: float

    def __post_init__(self) -> None:
        factor = float(self.factor)
        if not np.isfinite(factor) or factor == 0:
            raise CheckpointError(f"rescale: factor must be finite and non-zero, got {factor}")
        object.__setattr__(self, "factor", factor)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Rescale a batch."""
        return x * np.float32(self.factor)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in run folders and model metadata."""
        return {"kind": "rescale", "factor": self.factor}


Preprocess = Standardize | Rescale


def preprocess_from_dict(data: dict[str, Any] | None) -> Preprocess | None:
    """Rebuild a step from :meth:`to_dict` output or the older ``{"mean": [...], "std": [...]}``
    normalization form (None stays None).

    Raises:
        CheckpointError: an unknown kind, or values that do not make a valid step.
    """
    if data is None:
        return None
    if not isinstance(data, dict):
        raise CheckpointError(f"preprocessing must be a JSON object, got {type(data).__name__}")
    kind = data.get("kind", "standardize" if "mean" in data else None)
    try:
        if kind == "standardize":
            mean, std = (np.asarray(data[k], dtype=np.float32) for k in ("mean", "std"))
            shape = tuple(data.get("shape", mean.shape))
            return Standardize(mean.reshape(shape), std.reshape(shape))
        if kind == "rescale":
            return Rescale(float(data["factor"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"invalid {kind} preprocessing: {exc}") from None
    raise CheckpointError(f"unknown preprocessing kind {kind!r} (expected standardize or rescale)")
