"""The accuracy gate: a quantized bundle may lose at most `max_drop` points against its source on
the same questions, or quantize refuses it (and writes nothing) unless the user allows the drop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgevlm.calibration.scoring import Score

# Points are ratios of whole questions; a tolerance keeps 0.1 + 0.2 style rounding from failing.
EPSILON = 1e-9


class AccuracyGateError(Exception):
    """The quantized bundle lost more accuracy than allowed; the message carries the numbers."""


@dataclass(frozen=True, slots=True)
class GateResult:
    original: Score
    quantized: Score
    max_drop: float
    allowed: bool  # --allow-accuracy-drop
    forms: dict[str, Score] = field(default_factory=dict)  # every form scored; `quantized` is the worst

    @property
    def drop(self) -> float:
        return self.original.points - self.quantized.points

    @property
    def passed(self) -> bool:
        return self.drop <= self.max_drop + EPSILON

    def summary(self, mode: str) -> str:
        return (f"{mode} {self.quantized.points:.1f}% vs original {self.original.points:.1f}% "
                f"on {self.original.total} questions: drop {self.drop:.1f} points (max {self.max_drop:g})")

    def check(self, mode: str) -> None:
        """Raise AccuracyGateError when the drop exceeds the budget and was not allowed."""
        if self.passed or self.allowed:
            return
        raise AccuracyGateError(
            f"accuracy gate failed: {self.summary(mode)}; nothing was written "
            "(--allow-accuracy-drop keeps it anyway)"
        )

    def as_manifest(self, eval_name: str) -> dict[str, Any]:
        return {
            "eval": eval_name,
            "original": self.original.as_dict(),
            "quantized": self.quantized.as_dict(),
            "drop_points": round(self.drop, 3),
            "max_drop_points": self.max_drop,
            "passed": self.passed,
            "drop_allowed": self.allowed,
            "forms": {name: score.as_dict() for name, score in self.forms.items()},
        }
