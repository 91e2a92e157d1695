"""When a newly trained model becomes the one that scores: the promotion gate and the
newest-week rule (DESIGN §6)."""

from __future__ import annotations

import math


def gate(new_score: float, current_score: float | None, tolerance: float) -> tuple[bool, str]:
    """Promote unless the new model's mean test Spearman trails the current production model's,
    measured on the same (the new model's) test days, by more than ``tolerance``.

    A new model whose score is not finite is never promoted, not even the first one: it would
    score every new video with a model nobody could evaluate. A production model whose score on
    these days is not finite is replaced by any new model with a finite one.
    """
    if not math.isfinite(new_score):
        return False, f"new model's mean test Spearman is {new_score}: not promoted"
    if current_score is None:
        return True, "no production model yet: the first model becomes production"
    if not math.isfinite(current_score):
        return True, (
            f"production's mean test Spearman on these days is {current_score}; the new "
            f"model's is {new_score:.4f}: promoted"
        )
    delta = new_score - current_score
    if delta >= -tolerance:
        return True, (
            f"mean test Spearman {new_score:.4f} vs production {current_score:.4f} "
            f"(delta {delta:+.4f} >= -{tolerance}): promoted"
        )
    return False, (
        f"mean test Spearman {new_score:.4f} trails production {current_score:.4f} by "
        f"{-delta:.4f} > tolerance {tolerance}: not promoted"
    )


def moves_alias(week: str, weeks_with_models: list[str]) -> bool:
    """The newest-week rule: the registry's `production` alias follows only the newest week's
    model, so that retraining an old week (a backfill) never takes production back in time.
    (Scoring reads the promoted records of the lake as of each day and needs no alias.)"""
    return all(w <= week for w in weeks_with_models)
