"""OpenVLA's action tokenizer: each action dimension cut into ``n_bins`` uniform bins over the env's bounds, and bin
``b`` written as one fixed vocabulary token.

Bins. Dimension ``d`` spans ``[low_d, high_d]`` in ``n_bins`` equal bins of width ``w_d = (high_d - low_d) / n_bins``;
an action value is clipped to the bounds and falls in bin ``floor((a - low_d) / w_d)`` (the upper edge ``high_d``
belongs to the last bin); a bin reads back as its centre ``low_d + (b + 1/2) w_d``, so every value in the bounds comes
back within half a bin width. (OpenVLA's own code puts 256 bin *edges* on ``[-1, 1]`` and so has 255 usable bins; here
the ``n_bins`` bins are exactly ``n_bins`` tokens.)

Tokens. As OpenVLA overwrites the last 256 tokens of Llama's vocabulary, bin ``b`` is the ``b``-th of the last
``n_bins`` *ordinary* token ids (special and added tokens, the vision pads among them, are never bins), in increasing
id order. The bin tokens keep their text meaning in prompts (the model reads them there too); only the policy's
sampling and log-probs are limited to them (:class:`mmrl.policies.token_vla.policy.TokenVLAPolicy`).

Example:
    >>> bins = ActionBins(np.array([-1.0, 0.0]), np.array([1.0, 10.0]), n_bins=4)
    >>> bins.to_bins(np.array([[0.3, 10.0], [-5.0, 2.4]]))
    array([[2, 3],
           [0, 0]])
    >>> bins.centres(np.array([2, 3]))
    array([0.25, 8.75])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmrl.config import ConfigError


@dataclass(frozen=True)
class ActionBins:
    """Uniform bins per action dimension over finite bounds."""

    low: np.ndarray  # [A] lower bound of each dimension (float64)
    high: np.ndarray  # [A] upper bound of each dimension (float64), > low
    n_bins: int  # bins per dimension (OpenVLA: 256)

    def __post_init__(self) -> None:
        low, high = np.asarray(self.low, np.float64).ravel(), np.asarray(self.high, np.float64).ravel()
        if low.shape != high.shape or not (np.isfinite(low).all() and np.isfinite(high).all()) or (high <= low).any():
            raise ValueError(f"action bins need finite bounds with high > low, got low {low} and high {high}")
        if self.n_bins < 2:
            raise ValueError(f"n_bins: expected an integer >= 2, got {self.n_bins}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def width(self) -> np.ndarray:
        """``[A]`` bin width of each dimension."""
        return (self.high - self.low) / self.n_bins

    def to_bins(self, actions: Any) -> np.ndarray:
        """Actions ``[..., A]`` in env units -> bin indices ``[..., A]`` (int64 in ``[0, n_bins)``); values outside the
        bounds (and the upper edge) go to the end bins."""
        a = np.clip(np.asarray(actions, np.float64), self.low, self.high)  # [..., A]
        return np.minimum(np.floor((a - self.low) / self.width), self.n_bins - 1).astype(np.int64)

    def centres(self, bins: Any) -> np.ndarray:
        """Bin indices ``[..., A]`` -> the bins' centres in env units ``[..., A]`` (float64)."""
        return self.low + (np.asarray(bins, np.float64) + 0.5) * self.width


def bin_token_ids(tokenizer: Any, n_bins: int, vocab_size: int) -> list[int]:
    """The last ``n_bins`` ordinary token ids of ``tokenizer`` below ``vocab_size`` (the model's output size), in
    increasing order: bin ``b`` is token ``ids[b]``. Special and added tokens are skipped; a vocabulary with fewer
    ordinary tokens is a one-line :class:`ConfigError`."""
    reserved = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    ids: list[int] = []
    for i in range(min(len(tokenizer), vocab_size) - 1, -1, -1):  # from the end of the vocabulary down
        if i not in reserved:
            ids.append(i)
            if len(ids) == n_bins:
                return ids[::-1]
    raise ConfigError(f"policy.kwargs.n_bins: {n_bins} bins need {n_bins} ordinary vocabulary tokens; the model's "
                      f"vocabulary has {len(ids)}")  # fmt: skip
