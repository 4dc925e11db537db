"""Session-scoped fixtures: the three tiny models of :mod:`tests.runtime.onnx_models`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.onnx_models import (
    ModelCase,
    build_binary,
    build_multiclass,
    build_plain,
    save,
)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def multiclass(model_dir: Path) -> ModelCase:
    model, weights, contract = build_multiclass()
    path = save(model, model_dir / "multiclass.onnx")
    return ModelCase(
        name="multiclass",
        path=path,
        num_features=5,
        num_classes=3,
        class_names=contract.class_names,
        feature_names=contract.feature_names,
        weights=weights,
        metadata=contract.to_metadata(),
    )


@pytest.fixture(scope="session")
def binary(model_dir: Path) -> ModelCase:
    threshold = 0.4
    model, weights, contract = build_binary(threshold=threshold)
    path = save(model, model_dir / "binary.onnx")
    return ModelCase(
        name="binary",
        path=path,
        num_features=4,
        num_classes=2,
        class_names=contract.class_names,
        feature_names=contract.feature_names,
        weights=weights,
        threshold=threshold,
        metadata=contract.to_metadata(),
    )


@pytest.fixture(scope="session")
def plain(model_dir: Path) -> ModelCase:
    model, weights = build_plain()
    path = save(model, model_dir / "plain.onnx")
    return ModelCase(
        name="plain",
        path=path,
        num_features=3,
        num_classes=4,
        class_names=None,
        feature_names=None,
        weights=weights,
    )


@pytest.fixture(params=["multiclass", "binary", "plain"])
def any_model(request: pytest.FixtureRequest) -> ModelCase:
    """Each of the three models in turn."""
    case: ModelCase = request.getfixturevalue(request.param)
    return case
