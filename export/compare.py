"""The one comparator: outputs by name against outputs by name, tolerances by name.

Shaped like Polygraphy's ``compare_func`` and optimum's ``validate_model_outputs``:
``expected`` and ``actual`` map output names to arrays, ``tolerances`` maps output names
to a limit, with a default under ``""``; an output with no limit (and no default) is not
compared. Parity of an export (:mod:`onnxedge.export.verify`) and the bar of an int8 /
fp16 variant (:mod:`onnxedge.export.variants`) are this same comparison with other
tolerances.

- Float outputs: the check is ``|actual - expected| <= limit`` element by element, where the
  limit is a float or an array that broadcasts against the output (a per-row or
  per-element bound); the figure reported is the max abs error. NaN / Inf anywhere fails.
- Integer outputs (labels): the limit is the share of rows that may differ; rows in
  ``excused`` (label ties) do not count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Tolerance = float | np.ndarray


@dataclass
class Check:
    """One comparison with its tolerance.

    Attributes:
        name: what is checked (an output name such as ``logits`` / ``label``, or ``loss``,
            ``finite``, ``signature``, ``graph_weights_sha256``, ...).
        subject: what was compared (``onnxruntime~torch``), or ``""``.
        batch_size: the batch size the computations ran at, or None.
        value: the measured figure (max abs error, share of rows differing, ...).
        limit: the largest value that passes (at the worst element, for array limits).
        tolerance: the limit's name in :mod:`onnxedge.runtime.tolerances`, or ``exact``.
        passed: value within limit.
        detail: one line saying what was measured.
    """

    name: str
    subject: str
    batch_size: int | None
    value: float
    limit: float
    tolerance: str
    passed: bool
    detail: str

    def __post_init__(self) -> None:
        self.value, self.limit, self.passed = (
            float(self.value),
            float(self.limit),
            bool(self.passed),
        )

    @property
    def label(self) -> str:
        """``logits onnxruntime~torch batch=37``: how the check is named in a failure list."""
        parts = [
            self.name,
            self.subject,
            "" if self.batch_size is None else f"batch={self.batch_size}",
        ]
        return " ".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return jsonable(
            {"check": self.label, **{k: getattr(self, k) for k in self.__dataclass_fields__}}
        )


def exact(name: str, subject: str, ok: bool, detail: str) -> Check:
    """A yes / no check (a digest, a signature, a rule)."""
    return Check(name, subject, None, 0.0 if ok else 1.0, 0.0, "exact", ok, detail)


def compare(
    expected: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
    tolerances: Mapping[str, Tolerance],
    *,
    subject: str = "",
    batch_size: int | None = None,
    names: Mapping[str, str] | None = None,
    excused: np.ndarray | None = None,
) -> list[Check]:
    """Compare every output the two sides share and that has a tolerance.

    Args:
        expected, actual: output name -> array (the same shape on both sides).
        tolerances: output name -> limit (float, or an array broadcasting against the
            output); ``""`` is the default for names not listed.
        subject: what is compared, for the check names (``onnxruntime~torch``).
        batch_size: recorded on each check.
        names: output name -> the tolerance's name in :mod:`onnxedge.runtime.tolerances`.
        excused: ``(rows,)`` bool: rows whose integer outputs may differ (ties).

    Returns:
        One :class:`Check` per output compared, in ``expected``'s order.
    """
    checks = []
    for name, want in expected.items():
        limit = tolerances.get(name, tolerances.get(""))
        if limit is None:
            continue  # no tolerance: the caller compares this output elsewhere
        tol_name = (names or {}).get(name, (names or {}).get("", "given"))
        a, b = np.asarray(actual.get(name)), np.asarray(want)
        if name not in actual or a.shape != b.shape:  # a lost output never passes
            detail = (
                "output missing" if name not in actual else f"shape {a.shape}, expected {b.shape}"
            )
            checks.append(Check(name, subject, batch_size, math.inf, 0, tol_name, False, detail))
        elif np.issubdtype(b.dtype, np.integer) and np.issubdtype(a.dtype, np.integer):
            checks.append(
                _compare_labels(
                    name, a, b, float(np.max(limit)), subject, batch_size, tol_name, excused
                )
            )
        else:
            checks.append(_compare_floats(name, a, b, limit, subject, batch_size, tol_name))
    return checks


def _compare_floats(
    name: str,
    a: np.ndarray,
    b: np.ndarray,
    limit: Tolerance,
    subject: str,
    batch_size: int | None,
    tol_name: str,
) -> Check:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a64 - b64)
        bound = np.broadcast_to(np.asarray(limit, np.float64), diff.shape)
        bad = ~(diff <= bound)  # NaN never passes
    if diff.size == 0:
        return Check(
            name, subject, batch_size, 0.0, float(np.max(limit)), tol_name, True, "no rows"
        )
    finite = bool(np.isfinite(a64).all() and np.isfinite(b64).all())
    worst = np.unravel_index(
        int(np.argmax(np.where(np.isnan(diff), np.inf, diff / np.maximum(bound, 1e-300)))),
        diff.shape,
    )
    value = float(diff.max()) if finite else math.inf
    rel = (
        float((diff / np.maximum(np.abs(b64), np.finfo(np.float32).tiny)).max())
        if finite
        else math.inf
    )
    detail = (
        f"max abs {fmt(value)}, max rel {fmt(rel)}; worst {fmt(float(diff[worst]))} of limit "
        f"{fmt(float(bound[worst]))} at row {worst[0] if diff.ndim else 0}"
    )
    if not finite:
        detail = (
            f"{int((~np.isfinite(a64)).sum())} NaN/Inf values "
            f"(expected {int((~np.isfinite(b64)).sum())}); " + detail
        )
    return Check(
        name, subject, batch_size, value, float(bound[worst]), tol_name, not bad.any(), detail
    )


def _compare_labels(
    name: str,
    a: np.ndarray,
    b: np.ndarray,
    share: float,
    subject: str,
    batch_size: int | None,
    tol_name: str,
    excused: np.ndarray | None,
) -> Check:
    differ = a != b
    ties = 0
    if excused is not None and differ.ndim == 1:
        ties = int((differ & excused).sum())
        differ = differ & ~excused
    count, rows = int(differ.sum()), max(differ.size, 1)
    first = f", first at row {int(np.argmax(differ))}" if count else ""
    excuse = f"; {ties} tie{'s' if ties != 1 else ''} excused" if ties else ""
    return Check(
        name,
        subject,
        batch_size,
        count / rows,
        share,
        tol_name,
        count / rows <= share,
        f"{count} of {differ.size} rows differ{first}{excuse}",
    )


def render_checks(checks: list[Check]) -> list[str]:
    """One line per (check, subject): its worst figure over batch sizes against its limit."""
    groups: dict[tuple[str, str], list[Check]] = {}
    for c in checks:
        groups.setdefault((c.name, c.subject), []).append(c)
    lines = [f"{'check':22}{'compared':34}{'worst':>11}{'limit':>11}  {'':4}tolerance"]
    for (name, subject), group in groups.items():
        failed = [c for c in group if not c.passed]
        worst = max(failed or group, key=lambda c: c.value)
        lines.append(
            f"{name:22}{subject or '-':34}{fmt(worst.value):>11}{fmt(worst.limit):>11}  "
            f"{'ok' if not failed else 'FAIL':4}{worst.tolerance}"
        )
    return lines


def fmt(value: float) -> str:
    """A figure for a table: ``1.23e-06``, ``0``, ``inf``."""
    if not math.isfinite(value):
        return str(value)
    return "0" if value == 0 else f"{value:.2e}"


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, NaN / Inf to strings (JSON has none)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
