"""The benchmarks' targets: each a ratio measured in one run, its goal, and MEETS/MISSES.

A benchmark module returns its checks in its ``--json`` output (``{"checks": [...]}``) and prints
them with `print_table`; ``python -m bench`` gathers every module's checks into one table at the
end. Ratios, not absolute figures: the machine is shared, and both sides of a ratio ran in the
same run, one after the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Check", "print_table", "ratio"]


@dataclass(frozen=True)
class Check:
    """``value`` (a ratio) against ``goal``: at most (``op`` "<=") or at least (">="); a
    ``goal`` of None shows a figure without a target (verdict "info")."""

    name: str
    value: float | None
    goal: float | None
    op: str = "<="
    unit: str = "x"

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        if self.goal is None:
            return "info"
        ok = self.value <= self.goal if self.op == "<=" else self.value >= self.goal
        return "MEETS" if ok else "MISSES"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Check:
        return cls(**data)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def print_table(checks: Iterable[Check], title: str = "summary") -> None:
    checks = list(checks)
    if not checks:
        return
    width = max(len(c.name) for c in checks)
    print(f"\n== {title}")
    print(f"  {'target':<{width}}  {'measured':>9}  {'goal':>9}  verdict")
    for c in checks:
        value = "n/a" if c.value is None else f"{c.value:.3f}{c.unit}"
        goal = "" if c.goal is None else f"{c.op} {c.goal:g}{c.unit}"
        print(f"  {c.name:<{width}}  {value:>9}  {goal:<9}  {c.verdict}")
