"""Targets as data: thresholds on a run's measured metrics, read from a TOML file the user passes.

Product code measures (``metrics`` of a bench-suite or evaluation result); whether a figure is good
enough is a project goal, so the thresholds live outside the package (``examples/targets/*.toml``) and
are applied only with ``--targets FILE``.  A file is a list of ``[[target]]`` tables::

    [[target]]
    name = "best_vs_fastest_fp32>=3x"          # key in the result's "targets"
    label = "our best row >= 3x the fastest FP32 row"
    metric = "metrics.best_vs_fastest_fp32.value"   # dotted path into the result dict
    op = ">="                                  # >=, >, <=, <, ==, !=
    threshold = 3.0                            # number or boolean
    require = "all"                            # dict-valued metric: "all" or "any" of its entries

Several conditions that must all hold go in ``[[target.condition]]`` tables (same keys; ``optional =
true`` skips a condition whose metric was not measured).  ``met`` is ``None`` when a required metric is
missing (not measured in this run), never a guess.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from qgnn_deploy.errors import QgnnError

OPS: dict[str, Callable[[Any, Any], bool]] = {">=": operator.ge, ">": operator.gt, "<=": operator.le,
                                              "<": operator.lt, "==": operator.eq, "!=": operator.ne}


@dataclass(frozen=True)
class Condition:
    """One comparison of a metric (dotted path into the result) with a threshold."""

    metric: str
    op: str
    threshold: float | bool
    require: str = "all"
    optional: bool = False


@dataclass(frozen=True)
class Target:
    """A named goal: every condition holds (``label`` is what the report prints)."""

    name: str
    conditions: tuple[Condition, ...]
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _condition(d: dict[str, Any], where: str) -> Condition:
    for key in ("metric", "op", "threshold"):
        if key not in d:
            raise QgnnError(f"{where}: missing '{key}'")
    if d["op"] not in OPS:
        raise QgnnError(f"{where}: op {d['op']!r} is not one of {', '.join(OPS)}")
    if not isinstance(d["threshold"], (int, float, bool)):
        raise QgnnError(f"{where}: threshold must be a number or a boolean")
    if d.get("require", "all") not in ("all", "any"):
        raise QgnnError(f"{where}: require must be 'all' or 'any'")
    return Condition(str(d["metric"]), d["op"], d["threshold"], d.get("require", "all"), bool(d.get("optional")))


def load_targets(path: Path | str) -> list[Target]:
    """Parse a targets file; a malformed one is a one-line :class:`QgnnError`."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise QgnnError(f"targets file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise QgnnError(f"targets file {path}: not TOML ({exc})") from None
    items = doc.get("target")
    if not isinstance(items, list) or not items:
        raise QgnnError(f"targets file {path}: no [[target]] tables")
    out = []
    for i, t in enumerate(items):
        where = f"targets file {path}, target {i + 1}"
        if "name" not in t:
            raise QgnnError(f"{where}: missing 'name'")
        conds = [_condition(c, f"{where} condition {j + 1}") for j, c in enumerate(t.get("condition", []))]
        if "metric" in t:
            conds.insert(0, _condition(t, where))
        if not conds:
            raise QgnnError(f"{where}: needs 'metric' or [[target.condition]]")
        out.append(Target(str(t["name"]), tuple(conds), str(t.get("label", "")),
                          {k: v for k, v in t.items() if k not in ("name", "label", "condition", "metric", "op",
                                                                    "threshold", "require", "optional")}))
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise QgnnError(f"targets file {path}: duplicate target names")
    return out


def resolve(result: dict[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` in ``result`` (``None`` if any step is missing)."""
    cur: Any = result
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _holds(value: Any, cond: Condition) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(OPS[cond.op](value, cond.threshold))


def evaluate_target(target: Target, result: dict[str, Any]) -> dict[str, Any]:
    """``{"value", "met", "label", ...}`` for one target; dict-valued metrics also give ``per_key``."""
    entry: dict[str, Any] = {"label": target.label, "metric": target.conditions[0].metric}
    mets: list[bool | None] = []
    for i, cond in enumerate(target.conditions):
        value = resolve(result, cond.metric)
        if isinstance(value, dict):
            per = {k: _holds(v, cond) for k, v in value.items()}
            known = [m for m in per.values() if m is not None]
            met = (all(known) if cond.require == "all" else any(known)) if known else None
        else:
            per, met = None, _holds(value, cond)
        if i == 0:
            entry.update(value=value, op=cond.op, threshold=cond.threshold)
            if per is not None:
                entry["per_key"] = per
        if met is None and cond.optional:
            continue
        mets.append(met)
    entry["met"] = None if not mets or None in mets else all(mets)
    return entry


def evaluate_targets(targets: list[Target], result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every target evaluated against ``result``, by name, in file order."""
    return {t.name: evaluate_target(t, result) for t in targets}


def format_value(v: Any) -> str:
    """A metric value for a table cell: number to 3 decimals, dicts entry by entry."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return f"{v:.3f}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {format_value(x)}" for k, x in v.items())
    return str(v)


def markdown_table(results: dict[str, dict[str, Any]], title: str = "## Targets") -> list[str]:
    """The targets section of a report (empty when no targets were applied)."""
    if not results:
        return []
    lines = ["", title, "", "| target | value | met |", "|---|---|---|"]
    for name, r in results.items():
        met = "—" if r.get("met") is None else ("yes" if r["met"] else "**NO**")
        lines.append(f"| {name} | {format_value(r.get('value'))} | {met} |")
    return lines
