"""Perception-aware reward helpers that are pure functions (no model calls).

Example:
    >>> temporal_contrast_bonus([True, False, True], acc_ordered=0.67, acc_shuffled=0.5)
    [0.3, 0.0, 0.3]
"""

from __future__ import annotations

import math


def temporal_contrast_bonus(
    correct_ordered: list[bool], acc_ordered: float, acc_shuffled: float, bonus: float = 0.3, ratio: float = 0.8
) -> list[float]:
    """Video-R1 T-GRPO temporal bonus for one group, values in {0, bonus}.

    The group is also rolled out on temporally shuffled frames. If ``acc_ordered >= ratio * acc_shuffled`` (the model
    does at least nearly as well with the true order, so it uses it), every correct ordered response gets ``+bonus``;
    otherwise nobody does. Non-finite accuracies give no bonus.

    Args:
        correct_ordered: per ordered response, whether it was correct. [G]
        acc_ordered: accuracy of the group on ordered frames.
        acc_shuffled: accuracy of the group on shuffled frames.
        bonus: the bonus (Video-R1: 0.3).
        ratio: the factor on the shuffled accuracy (Video-R1: 0.8).
    """
    if not (math.isfinite(acc_ordered) and math.isfinite(acc_shuffled)):
        return [0.0] * len(correct_ordered)
    granted = acc_ordered >= ratio * acc_shuffled
    return [float(bonus) if granted and bool(c) else 0.0 for c in correct_ordered]
