"""Where parity breaks: the first node whose output leaves its tolerance (issue 15).

onnxruntime's node outputs are exposed as extra graph outputs on a copy of the model
(:func:`node_outputs`, also what an edge variant's per-node comparison reads) and matched,
in graph order, to a torch head module's forward hooks by the module path export keeps per
node, or to ``onnx.reference`` on the same graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from onnxedge.export.compare import compare, fmt
from onnxedge.runtime import tolerances as tol
from onnxedge.runtime.errors import ModelLoadError

if TYPE_CHECKING:
    import onnx
    import torch

Outputs = dict[str, np.ndarray]
#: node metadata key: the torch module path a node came from (kept by export).
KEY_NODE_MODULE = "onnxedge.module"


class LocalizationError(ModelLoadError):
    """The first diverging node cannot be searched for in this model; the message says why."""


def node_outputs(model: onnx.ModelProto, x: np.ndarray) -> Outputs:
    """Every node's first output (and the graph outputs) of ``model`` on ``x``, from
    onnxruntime, exposed as extra graph outputs on a copy (``model`` is left as it is).

    Raises:
        LocalizationError: onnxruntime cannot run the copy with every output exposed.
    """
    import onnx
    from onnxedge.export.verify import onnxruntime_runner

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    have = {o.name for o in model.graph.output}
    exposed.graph.output.extend(
        onnx.ValueInfoProto(name=n.output[0]) for n in model.graph.node if n.output[0] not in have
    )
    what = "the model with every node output exposed"
    try:
        run = onnxruntime_runner(exposed, what)
    except ModelLoadError as exc:
        raise LocalizationError(str(exc)) from None
    try:
        return run(x)
    except Exception as exc:  # onnxruntime's own error types
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LocalizationError(f"onnxruntime cannot run {what}: {text}") from None


def first_diverging_node(
    model: onnx.ModelProto, x: np.ndarray, module: torch.nn.Module | None = None
) -> dict[str, Any]:
    """The first node, in graph order, whose output breaks ``LOGIT_ATOL + LOGIT_RTOL * |x|``.

    onnxruntime's node outputs (:func:`node_outputs`) are compared with, for a torch head
    module, the output of the module each node came from (forward hooks, by the module
    path export keeps per node; a module's last node carries its output), else with
    ``onnx.reference`` on the same graph.

    Returns:
        ``{"against", "compared", "unmatched", "node", "op_type", "module", "max_abs",
        "limit"}``: ``unmatched`` the recorded module paths no forward hook output
        matched; the node keys are None when every compared node stays within its limit.

    Raises:
        LocalizationError: onnxruntime cannot run the copy with every output exposed, the
            module's hooks match none of the graph's module paths, or no float node output
            can be compared.
    """
    graph = model.graph
    paths = {
        n.output[0]: {p.key: p.value for p in n.metadata_props}.get(KEY_NODE_MODULE)
        for n in graph.node
    }
    got = node_outputs(model, x)
    expected: dict[str, np.ndarray] = {}
    unmatched: list[str] = []
    if module is not None:
        import torch

        last = {path: out for out, path in paths.items() if path}  # a module's last node
        if not last:
            raise LocalizationError(
                f"its nodes record no torch module paths ({KEY_NODE_MODULE} node metadata, "
                "written by the dynamo exporter) to match the module's forward hooks"
            )

        def keep(out: str) -> Callable[..., None]:
            def hook(_module: Any, _inputs: Any, output: Any) -> None:
                if isinstance(output, torch.Tensor):
                    expected[out] = output.detach().numpy()

            return hook

        modules = dict(module.named_modules())
        hooks = [modules[p].register_forward_hook(keep(o)) for p, o in last.items() if p in modules]
        try:
            with torch.inference_mode():
                module(torch.from_numpy(x))
        finally:
            for hook in hooks:
                hook.remove()
        unmatched = [
            p
            for p, o in last.items()
            if o not in expected or o not in got or expected[o].shape != got[o].shape
        ]
        if len(unmatched) == len(last):
            shown = ", ".join(unmatched[:4]) + (", ..." if len(unmatched) > 4 else "")
            raise LocalizationError(
                f"no forward hook of the torch module matches the {len(last)} module paths "
                f"its nodes record ({shown})"
            )
        against = "torch forward hooks by module path"
    else:
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(model)
        inits = {t.name for t in graph.initializer}
        feed = next(i.name for i in graph.input if i.name not in inits)
        expected = dict(evaluator.run(None, {feed: x}, intermediate=True))
        against = "onnx.reference on the same graph"
    found: dict[str, Any] = {
        "against": against,
        "compared": 0,
        "unmatched": unmatched,
        "node": None,
    }
    for node in graph.node:
        out = node.output[0]
        a, b = got.get(out), expected.get(out)
        if a is None or b is None or np.shape(a) != np.shape(b):
            continue
        if not np.issubdtype(np.asarray(b).dtype, np.floating):
            continue
        found["compared"] += 1
        (check,) = compare({out: b}, {out: a}, {out: tol.LOGIT_ATOL + tol.LOGIT_RTOL * np.abs(b)})
        if not check.passed:
            where = {"node": node.name, "op_type": node.op_type, "module": paths.get(out)}
            return {**found, **where, "max_abs": check.value, "limit": check.limit}
    if not found["compared"]:
        raise LocalizationError(
            f"none of its {len(graph.node)} node outputs is a float tensor to compare"
        )
    return found


def localization_lines(where: dict[str, Any] | None) -> list[str]:
    """The report's lines for a localization (:func:`first_diverging_node`'s result)."""
    if where is None:
        return []
    if "unavailable" in where:
        return [f"first diverging node not searched: {where['unavailable']}"]
    if where["node"] is not None:
        line = (
            f"first diverging node: {where['node']} ({where['op_type']}, module "
            f"{where['module'] or 'unknown'}): max abs {fmt(where['max_abs'])} > limit "
            f"{fmt(where['limit'])}, against {where['against']}"
        )
    else:
        line = f"no diverging node among {where['compared']} compared against {where['against']}"
    unmatched = where.get("unmatched") or []
    return [line] + (
        [f"  not compared (no forward hook output to match): {', '.join(unmatched)}"]
        if unmatched
        else []
    )
