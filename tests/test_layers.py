"""The layer contract: imports point one way, runtime <- models <- export.

``runtime`` is the torch-free base (a device installs only onnxruntime and numpy);
``models`` builds on it; ``export`` builds on both. Every ``import`` statement in the
three packages is read with ``ast`` (function-level imports included: a lazy import is
still a dependency), so a wrong-way import fails here before any user meets it. The CLI
dispatches to other layers' commands by name through ``importlib``, which is no import
statement and is allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: modules (and their submodules) each layer must never import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "runtime": (
        "onnxedge.models",
        "onnxedge.export",
        "torch",
        "onnx",
        "onnxscript",
        "sklearn",
        "safetensors",
        "matplotlib",
    ),
    "models": ("onnxedge.export", "onnx", "onnxscript", "onnxruntime"),
    "export": (),
}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """Every module an import statement in ``source`` names, with its line number."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def layer_violations(layer: str, source: str, filename: str) -> list[str]:
    """``file:line imports name`` for each import ``layer`` may not make."""
    banned = FORBIDDEN[layer]
    return [
        f"{filename}:{line} imports {name}"
        for line, name in imported_modules(source)
        if any(name == ban or name.startswith(ban + ".") for ban in banned)
    ]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_one_way(layer: str) -> None:
    files = sorted((ROOT / layer).glob("*.py"))
    assert files, f"no modules found in {layer}/"
    problems = [
        problem
        for file in files
        for problem in layer_violations(layer, file.read_text(), f"{layer}/{file.name}")
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("layer", "source", "expected"),
    [
        ("runtime", "import torch\n", ["runtime/x.py:1 imports torch"]),
        (
            "runtime",
            "def f():\n    from onnxedge.export.verify import verify_model\n",
            ["runtime/x.py:2 imports onnxedge.export.verify"],
        ),
        ("runtime", "import onnx.helper as h\n", ["runtime/x.py:1 imports onnx.helper"]),
        (
            "models",
            "from onnxedge.export import heads\n",
            ["models/x.py:1 imports onnxedge.export"],
        ),
        # Prefix matches stop at a dot: onnxruntime is not onnx.
        ("runtime", "import onnxruntime\nimport onnxedge.runtime.io\n", []),
        ("models", "from onnxedge.runtime.errors import DataError\n", []),
    ],
)
def test_the_check_catches_a_wrong_way_import(layer: str, source: str, expected: list[str]) -> None:
    assert layer_violations(layer, source, f"{layer}/x.py") == expected
