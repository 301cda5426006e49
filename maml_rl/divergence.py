"""Rejected meta-steps: why an outer update left ``θ`` as it was.

A meta-update is *rejected* — ``θ`` and the outer optimiser's state stay exactly as they
were — when something it builds on is not finite: the rollouts of ``θ`` or of the
adapted policies, the adapted parameters, the outer loss, the meta-gradient, the step
direction or the updated policy. A non-finite value therefore never becomes ``θ``. A
TRPO step whose meta-gradient is exactly zero is rejected too: there is nothing to step
along, and nothing will change in the next iteration either. (A TRPO line search that
finds no better step within the trust region is a rejection too, but an ordinary one.)
Non-finite and zero-gradient rejections are *abnormal*: enough of them in a row stop a
run (``max_rejected_iterations``).

The trainer and the agents report the reason as the metric ``train/step_rejected_reason``
with the code of a :class:`StepRejection` (TensorBoard scalars are numbers; 0: the step
was taken); the console line and ``metrics.jsonl`` (``step_rejected_reason``) carry its
text.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable

import torch

__all__ = ["REJECTION_TAG", "StepRejection", "all_finite", "rejection_text"]

#: The metric that carries a :class:`StepRejection` code.
REJECTION_TAG = "train/step_rejected_reason"


class StepRejection(enum.IntEnum):
    """Why a meta-step was rejected (the value is the metric's code)."""

    NONE = 0
    NO_IMPROVEMENT = 1
    POLICY = 2
    ADAPTED = 3
    LOSS = 4
    GRADIENT = 5
    DIRECTION = 6
    UPDATE = 7
    ZERO_GRADIENT = 8

    @property
    def text(self) -> str:
        """A few words for the console line and ``metrics.jsonl``."""
        return _TEXT[self]

    @property
    def non_finite(self) -> bool:
        """Whether a non-finite value caused it (a sign of divergence)."""
        return StepRejection.POLICY <= self <= StepRejection.UPDATE

    @property
    def abnormal(self) -> bool:
        """Whether it is a sign that the run cannot go on as configured: a non-finite
        value, or a meta-gradient that is exactly zero."""
        return self.non_finite or self == StepRejection.ZERO_GRADIENT


_TEXT = {
    StepRejection.NONE: "",
    StepRejection.NO_IMPROVEMENT: "no better step within the trust region",
    StepRejection.POLICY: "the policy's rollouts are non-finite",
    StepRejection.ADAPTED: "the adapted policy is non-finite",
    StepRejection.LOSS: "the outer loss is non-finite",
    StepRejection.GRADIENT: "the meta-gradient is non-finite",
    StepRejection.DIRECTION: "the step direction is non-finite",
    StepRejection.UPDATE: "the updated policy is non-finite",
    StepRejection.ZERO_GRADIENT: "the meta-gradient is zero",
}


def rejection_text(code: float) -> str | None:
    """The text of a ``train/step_rejected_reason`` code; ``None`` for 0 (step taken) or a
    value that is no code."""
    if not math.isfinite(code) or code != int(code):
        return None
    try:
        return StepRejection(int(code)).text or None
    except ValueError:  # not a code
        return None


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every entry of every tensor is finite."""
    return all(bool(torch.isfinite(t).all()) for t in tensors)
