"""Discounted returns and generalized advantage estimation on padded episodes.

Everything here is a pure function on time-major tensors ``[T, ...]``: ``T`` steps
along dim 0 and any trailing batch shape ``B`` (``[T, E]`` for the episodes of one
task, ``[T, N, E]`` for a whole :class:`~maml_rl.batch.EpisodeBatch` transposed
with ``batch.rewards.transpose(0, 1)``).

Layout. Each column (one index into the trailing dims) holds **one episode** that
starts at ``t = 0`` and runs while ``mask`` is 1; after its last step the column is
padding (``mask = 0``). The episode's last step ``L - 1`` ends it in one of two ways:

* ``terminated[L - 1]``: the transition reached a terminal state, whose value is 0
  by definition — no bootstrap;
* otherwise it was **truncated** (``truncated[L - 1]``, a time limit, or simply cut by
  the end of the batch): the state after it is an ordinary state, so its value is
  bootstrapped with ``final_values`` — the value estimate at the episode's final
  observation. Treating a time limit as a terminal state biases every return near
  the limit (Pardo et al., 2018, "Time Limits in Reinforcement Learning").

Padding is zero in every output.
"""

from __future__ import annotations

import torch

__all__ = ["compute_gae", "discounted_returns"]


def _check_inputs(
    rewards: torch.Tensor,
    *,
    mask: torch.Tensor | None,
    terminated: torch.Tensor | None,
    truncated: torch.Tensor | None,
    values: torch.Tensor | None = None,
    final_values: torch.Tensor | None = None,
    gamma: float,
    gae_lambda: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate shapes and ranges; return float ``mask`` and bool ``terminated``/``ends``.

    ``ends[t]`` is True at the last step of each episode, ``continues = mask[t+1]``
    (as a float) says whether step ``t + 1`` belongs to the same episode.
    """
    if rewards.dim() < 1 or not rewards.is_floating_point():
        raise ValueError(
            f"rewards must be a floating-point tensor [T, ...], got dtype {rewards.dtype} "
            f"and shape {tuple(rewards.shape)}"
        )
    shape = tuple(rewards.shape)
    named = {"values": values, "mask": mask, "terminated": terminated, "truncated": truncated}
    for name, tensor in named.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} must have the shape of rewards {shape} ([T, ...]), "
                f"got {tuple(tensor.shape)}"
            )
    if final_values is not None and tuple(final_values.shape) != shape[1:]:
        raise ValueError(
            f"final_values must have the shape of one time step of rewards {shape[1:]}, "
            f"got {tuple(final_values.shape)}"
        )
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if not 0.0 <= gae_lambda <= 1.0:
        raise ValueError(f"gae_lambda must be in [0, 1], got {gae_lambda}")

    valid = torch.ones_like(rewards) if mask is None else mask.to(rewards.dtype)
    if (valid[1:] > valid[:-1]).any():
        raise ValueError(
            "mask must be 1 for a prefix of each column and 0 after it (one episode per "
            "column, starting at t = 0); found a column where it rises from 0 to 1"
        )
    term = (
        torch.zeros(shape, dtype=torch.bool, device=rewards.device)
        if terminated is None
        else terminated.bool()
    )
    # Step t + 1 continues the episode of step t iff it is valid (mask is a prefix).
    continues = torch.zeros_like(valid)
    continues[:-1] = valid[1:]
    if truncated is not None or terminated is not None:
        flagged = term if truncated is None else term | truncated.bool()
        if (flagged & (continues > 0)).any():
            raise ValueError(
                "terminated/truncated is set at a step that the mask continues; each "
                "column must hold one episode (no autoreset inside a column)"
            )
    return valid, term, continues


def _reverse_discounted_sum(x: torch.Tensor, discount: torch.Tensor) -> torch.Tensor:
    """``y[t] = x[t] + discount[t] * y[t + 1]`` backwards in time, ``y[T] = 0``."""
    out = torch.empty_like(x)
    acc = torch.zeros_like(x[0])
    for t in range(x.shape[0] - 1, -1, -1):
        acc = x[t] + discount[t] * acc
        out[t] = acc
    return out


def discounted_returns(
    rewards: torch.Tensor,
    gamma: float,
    *,
    mask: torch.Tensor | None = None,
    terminated: torch.Tensor | None = None,
    truncated: torch.Tensor | None = None,
    final_values: torch.Tensor | None = None,
) -> torch.Tensor:
    """Discounted reward-to-go ``G_t = Σ_k γ^k r_{t+k}`` of each step of each episode.

    Args:
        rewards: ``[T, ...]`` floating point.
        gamma: discount factor in ``[0, 1]``.
        mask: ``[T, ...]``, 1 for steps that happened, 0 for padding (default: all 1).
        terminated: ``[T, ...]`` bool, True at a step that reached a terminal state.
        truncated: ``[T, ...]`` bool, True at the last step of an episode cut by a time
            limit (used to check the layout; any non-terminated end is a truncation).
        final_values: ``[...]``, value estimate at each episode's final observation. If
            given, a truncated episode's return is bootstrapped with it:
            ``G_{L-1} = r_{L-1} + γ V(s_L)``. If None, returns stop at the episode end
            (the Monte-Carlo return, as the original MAML code fits its baseline on).

    Returns:
        ``[T, ...]`` returns, zero on padding.

    Raises:
        ValueError: on mismatched shapes, ``gamma`` outside ``[0, 1]`` or a mask that
            is not one episode per column.
    """
    valid, term, continues = _check_inputs(
        rewards, mask=mask, terminated=terminated, truncated=truncated,
        final_values=final_values, gamma=gamma,
    )  # fmt: skip
    x = rewards * valid
    if final_values is not None:
        # At each episode's last step, add γ V(s_L) unless s_L is terminal.
        last = valid * (1.0 - continues) * (~term).to(rewards.dtype)
        x = x + gamma * last * final_values.unsqueeze(0)
    return _reverse_discounted_sum(x, gamma * continues) * valid


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    final_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> torch.Tensor:
    """Generalized advantage estimates (Schulman et al., 2016, eq. 16).

    With the TD error ``δ_t = r_t + γ V(s_{t+1}) − V(s_t)``, the estimate is
    ``A_t = Σ_k (γλ)^k δ_{t+k}``, summed until the episode ends. At an episode's
    last step, ``V(s_{t+1})`` is 0 if it terminated and ``final_values`` otherwise
    (truncation bootstraps). The two special cases (paper §3):

    * ``λ = 0``: ``A_t = δ_t``, the one-step TD error (low variance, biased by V);
    * ``λ = 1``: ``A_t = G_t − V(s_t)`` with ``G_t`` the bootstrapped discounted return
      (unbiased for any V, high variance).

    Args:
        rewards: ``[T, ...]`` floating point.
        values: ``[T, ...]`` value estimates ``V(s_t)`` of the observation before step t
            (entries on padding are ignored).
        final_values: ``[...]``, ``V(s_L)`` at each episode's final observation.
        terminated: ``[T, ...]`` bool, True at a step that reached a terminal state.
        truncated: ``[T, ...]`` bool, True at the last step of a time-limited episode.
        mask: ``[T, ...]``, 1 for steps that happened, 0 for padding.
        gamma: discount factor in ``[0, 1]``.
        gae_lambda: GAE ``λ`` in ``[0, 1]``.

    Returns:
        ``[T, ...]`` advantages, zero on padding.

    Raises:
        ValueError: on mismatched shapes, ``gamma``/``gae_lambda`` outside ``[0, 1]`` or
            a mask that is not one episode per column.
    """
    valid, term, continues = _check_inputs(
        rewards, values=values, final_values=final_values, mask=mask,
        terminated=terminated, truncated=truncated, gamma=gamma, gae_lambda=gae_lambda,
    )  # fmt: skip
    values = values * valid
    next_values = torch.zeros_like(values)
    next_values[:-1] = values[1:]
    # Where the episode ends, V(s_{t+1}) is the final observation's value, or 0 if terminal.
    bootstrap = final_values.unsqueeze(0) * (~term).to(values.dtype)
    next_values = continues * next_values + (1.0 - continues) * bootstrap
    deltas = (rewards + gamma * next_values - values) * valid
    return _reverse_discounted_sum(deltas, gamma * gae_lambda * continues) * valid
