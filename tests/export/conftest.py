"""Session-scoped fixtures: the tiny runs and models of :mod:`tests.export.tiny_models`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from onnxedge.runtime.atomic import TEMP_SUFFIX

from tests.export.tiny_models import TinyModel, build_tiny


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="session")
def multiclass(tiny_root: Path) -> TinyModel:
    """4 classes, 6 features, two hidden layers (16, 8): softmax head."""
    return build_tiny(tiny_root, "multiclass", classes=4, features=6, hidden=(16, 8))


@pytest.fixture(scope="session")
def binary(tiny_root: Path) -> TinyModel:
    """2 classes, 5 features, one hidden layer of 12: sigmoid head."""
    return build_tiny(tiny_root, "binary", classes=2, features=5, hidden=(12,))


@pytest.fixture(params=["multiclass", "binary"])
def tiny(request: pytest.FixtureRequest) -> TinyModel:
    """Each tiny model in turn."""
    model: TinyModel = request.getfixturevalue(request.param)
    return model


@pytest.fixture
def leftovers() -> Callable[[Path], list[str]]:
    """Temp files an export may have left in a folder (there must be none)."""

    def find(folder: Path) -> list[str]:
        return sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))

    return find
