"""Where parity breaks: every node output exposed on a copy of the model (:func:`node_outputs`,
also the variants' per-node comparison), matched in graph order to the torch module's forward
hooks by the module path export records per node, else to ``onnx.reference``.
"""

from __future__ import annotations

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
    """Every node's first output (and the graph outputs) of ``model`` on ``x`` from
    onnxruntime, exposed on a copy (LocalizationError if onnxruntime cannot run it)."""
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
        return onnxruntime_runner(exposed, what)(x)
    except ModelLoadError as exc:
        raise LocalizationError(str(exc)) from None
    except Exception as exc:  # onnxruntime's own error types
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LocalizationError(f"onnxruntime cannot run {what}: {text}") from None


def first_diverging_node(
    model: onnx.ModelProto, x: np.ndarray, module: torch.nn.Module | None = None
) -> dict[str, Any]:
    """The first node, in graph order, whose output breaks ``LOGIT_ATOL + LOGIT_RTOL * |x|``
    against ``module``'s forward hooks (a module's last node carries its output), else
    against ``onnx.reference`` on the same graph.

    Returns:
        ``{"against", "compared", "unmatched", "node", "op_type", "module", "max_abs",
        "limit"}``: ``unmatched`` the module paths no hook output matched; ``node`` is None
        when every compared node stays within its limit.

    Raises:
        LocalizationError: the copy with every output exposed cannot run, the module's
            hooks match none of the recorded module paths, or no float output compares.
    """
    graph = model.graph
    paths = {
        n.output[0]: {p.key: p.value for p in n.metadata_props}.get(KEY_NODE_MODULE)
        for n in graph.node
    }
    got = node_outputs(model, x)
    unmatched: list[str] = []
    if module is not None:
        expected, unmatched = _hooked_outputs(module, x, paths, got)
        against = "torch forward hooks by module path"
    else:
        from onnx.reference import ReferenceEvaluator

        inits = {t.name for t in graph.initializer}
        feed = next(i.name for i in graph.input if i.name not in inits)
        expected = dict(ReferenceEvaluator(model).run(None, {feed: x}, intermediate=True))
        against = "onnx.reference on the same graph"
    found: dict[str, Any] = dict(against=against, compared=0, unmatched=unmatched, node=None)
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


def _hooked_outputs(
    module: torch.nn.Module, x: np.ndarray, paths: dict[str, str | None], got: Outputs
) -> tuple[Outputs, list[str]]:
    """Each module path's forward output, by its last node's output name; unmatched paths."""
    import torch

    last = {path: out for out, path in paths.items() if path}
    if not last:
        raise LocalizationError(
            f"its nodes record no torch module paths ({KEY_NODE_MODULE} node metadata, "
            "written by the dynamo exporter) to match the module's forward hooks"
        )
    expected: Outputs = {}
    modules = dict(module.named_modules())
    output_of = {modules[p]: o for p, o in last.items() if p in modules}

    def keep(hooked: Any, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            expected[output_of[hooked]] = output.detach().numpy()

    hooks = [m.register_forward_hook(keep) for m in output_of]
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
    return expected, unmatched


def node_text(where: dict[str, Any]) -> str:
    """``Gemm_3, Gemm, module net.output``: the diverging node of a localization."""
    return f"{where['node']}, {where['op_type']}, module {where['module'] or 'unknown'}"


def localization_lines(where: dict[str, Any] | None) -> list[str]:
    """The report's lines for a localization (:func:`first_diverging_node`'s result)."""
    if where is None:
        return []
    if "unavailable" in where:
        return [f"first diverging node not searched: {where['unavailable']}"]
    lines = [
        f"first diverging node: {node_text(where)}: max abs {fmt(where['max_abs'])} > limit "
        f"{fmt(where['limit'])}, against {where['against']}"
        if where["node"] is not None
        else f"no diverging node among {where['compared']} compared against {where['against']}"
    ]
    if where.get("unmatched"):
        lines.append(
            f"  not compared (no forward hook output to match): {', '.join(where['unmatched'])}"
        )
    return lines
