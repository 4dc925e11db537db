"""The one comparator (Polygraphy's ``compare_func``): outputs by name, tolerances by name
(default under ``""``), for export parity and the int8 / fp16 bars alike. Floats pass where
``|actual - expected| <= limit`` element by element (NaN / Inf never pass); integers (labels)
where the share of differing rows, ties in ``excused`` aside, is within the limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Tolerance = float | np.ndarray
#: value, limit, passed, detail: what one comparison measured.
Measured = tuple[float, float, bool, str]


@dataclass
class Check:
    """One comparison: ``name`` (an output, ``loss``, ``signature``, ...), ``subject``
    (``onnxruntime~torch`` or ``""``), ``batch_size`` (or None), the measured ``value``
    against ``limit`` (at the worst element), the ``tolerance``'s name in
    :mod:`onnxedge.runtime.tolerances` (or ``exact``), ``passed`` and a one-line ``detail``."""

    name: str
    subject: str
    batch_size: int | None
    value: float
    limit: float
    tolerance: str
    passed: bool
    detail: str

    @property
    def label(self) -> str:
        """``logits onnxruntime~torch batch=37``: how the check is named in a failure list."""
        batch = "" if self.batch_size is None else f"batch={self.batch_size}"
        return " ".join(p for p in (self.name, self.subject, batch) if p)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return jsonable({"check": self.label, **asdict(self)})


def exact(name: str, subject: str, ok: bool, detail: str) -> Check:
    """A yes / no check (a digest, a signature, a rule)."""
    return Check(name, subject, None, 0.0 if ok else 1.0, 0.0, "exact", ok, detail)


def failures(checks: list[Check]) -> list[str]:
    """Every failing check, one line each: ``label: detail``."""
    return [f"{c.label}: {c.detail}" for c in checks if not c.passed]


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
    """One :class:`Check` per output of ``expected`` (in its order) that has a tolerance.

    Args:
        expected, actual: output name -> array (the same shape on both sides).
        tolerances: output name -> limit (float, or an array broadcasting against the
            output); ``""`` is the default for names not listed.
        subject, batch_size: recorded on each check.
        names: output name -> the tolerance's name (default under ``""``).
        excused: ``(rows,)`` bool: rows whose integer outputs may differ (ties).
    """
    names = names or {}
    checks = []
    for name, want in expected.items():
        limit = tolerances.get(name, tolerances.get(""))
        if limit is None:
            continue  # no tolerance: the caller compares this output elsewhere
        a, b = np.asarray(actual.get(name)), np.asarray(want)
        if name not in actual or a.shape != b.shape:  # a lost output never passes
            lost = f"shape {a.shape}, expected {b.shape}" if name in actual else "output missing"
            measured: Measured = (math.inf, 0.0, False, lost)
        elif np.issubdtype(b.dtype, np.integer) and np.issubdtype(a.dtype, np.integer):
            measured = _compare_labels(a, b, float(np.max(limit)), excused)
        else:
            measured = _compare_floats(a, b, limit)
        value, bound, passed, detail = measured
        tol_name = names.get(name, names.get("", "given"))
        checks.append(Check(name, subject, batch_size, value, bound, tol_name, passed, detail))
    return checks


def _compare_floats(a: np.ndarray, b: np.ndarray, limit: Tolerance) -> Measured:
    if b.size == 0:
        return 0.0, float(np.max(limit)), True, "no rows"
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a64 - b64)
        bound = np.broadcast_to(np.asarray(limit, np.float64), diff.shape)
        ratio = np.where(np.isnan(diff), np.inf, diff / np.maximum(bound, 1e-300))
        rel = diff / np.maximum(np.abs(b64), np.finfo(np.float32).tiny)
    worst = np.unravel_index(int(np.argmax(ratio)), diff.shape)
    finite = bool(np.isfinite(a64).all() and np.isfinite(b64).all())
    value = float(diff.max()) if finite else math.inf
    detail = (
        f"max abs {fmt(value)}, max rel {fmt(float(rel.max()) if finite else math.inf)}; worst "
        f"{fmt(float(diff[worst]))} of limit {fmt(float(bound[worst]))} at row "
        f"{worst[0] if diff.ndim else 0}"
    )
    if not finite:
        detail = (
            f"{int((~np.isfinite(a64)).sum())} NaN/Inf values "
            f"(expected {int((~np.isfinite(b64)).sum())}); {detail}"
        )
    return value, float(bound[worst]), bool((diff <= bound).all()), detail


def _compare_labels(
    a: np.ndarray, b: np.ndarray, share: float, excused: np.ndarray | None
) -> Measured:
    differ, ties = a != b, 0
    if excused is not None and differ.ndim == 1:
        ties = int((differ & excused).sum())
        differ = differ & ~excused
    count = int(differ.sum())
    detail = f"{count} of {differ.size} rows differ"
    detail += f", first at row {int(np.argmax(differ))}" if count else ""
    detail += f"; {ties} tie{'s' if ties != 1 else ''} excused" if ties else ""
    return count / max(differ.size, 1), share, count / max(differ.size, 1) <= share, detail


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
