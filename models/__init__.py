"""onnxedge.models: the networks, the numpy reference, datasets and training (torch + numpy).
The nets load (with torch) on first use, so ``reference`` and ``data`` stay torch-free."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onnxedge.models.nets import CNN, BinclassNN, MulticlassNN, NetConfig, build_net

__all__ = ["CNN", "BinclassNN", "MulticlassNN", "NetConfig", "build_net"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from onnxedge.models import nets

        return getattr(nets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
