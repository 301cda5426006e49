"""Returns and GAE against analytic oracles (maml_rl.returns)."""

from __future__ import annotations

import pytest
import torch

from maml_rl.returns import compute_gae, discounted_returns

GAMMA = 0.9


def _episode_tensors(
    lengths: list[int], horizon: int, *, terminated_ends: list[bool]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``mask``, ``terminated``, ``truncated`` ``[T, B]`` for episodes of given lengths."""
    b = len(lengths)
    mask = torch.zeros(horizon, b, dtype=torch.float64)
    terminated = torch.zeros(horizon, b, dtype=torch.bool)
    truncated = torch.zeros(horizon, b, dtype=torch.bool)
    for j, (length, term) in enumerate(zip(lengths, terminated_ends, strict=True)):
        mask[:length, j] = 1.0
        (terminated if term else truncated)[length - 1, j] = True
    return mask, terminated, truncated


def _gae_oracle(
    rewards: list[float], values: list[float], final_value: float, terminal: bool, lam: float
) -> list[float]:
    """GAE by its definition, A_t = Σ_k (γλ)^k δ_{t+k}, written out with plain floats."""
    n = len(rewards)
    nxt = [*values[1:], 0.0 if terminal else final_value]
    deltas = [rewards[t] + GAMMA * nxt[t] - values[t] for t in range(n)]
    return [sum((GAMMA * lam) ** k * deltas[t + k] for k in range(n - t)) for t in range(n)]


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
@pytest.mark.parametrize("terminal", [False, True])
def test_gae_matches_definition_with_constant_values(lam: float, terminal: bool) -> None:
    rewards = [1.0, -2.0, 0.5, 3.0]
    values = [0.7] * 4
    final_value = 0.7
    mask, term, trunc = _episode_tensors([4], 4, terminated_ends=[terminal])
    adv = compute_gae(
        torch.tensor(rewards, dtype=torch.float64).unsqueeze(1),
        torch.tensor(values, dtype=torch.float64).unsqueeze(1),
        torch.tensor([final_value], dtype=torch.float64),
        term, trunc, mask, GAMMA, lam,
    )  # fmt: skip
    expected = _gae_oracle(rewards, values, final_value, terminal, lam)
    torch.testing.assert_close(adv[:, 0], torch.tensor(expected, dtype=torch.float64))


def _random_case(seed: int) -> dict[str, torch.Tensor]:
    """Three episodes: full-length truncated, short terminated, short truncated."""
    g = torch.Generator().manual_seed(seed)
    horizon = 7
    mask, term, trunc = _episode_tensors([7, 4, 5], horizon, terminated_ends=[False, True, False])
    return {
        "rewards": torch.randn(horizon, 3, generator=g, dtype=torch.float64),
        "values": torch.randn(horizon, 3, generator=g, dtype=torch.float64),
        "final_values": torch.randn(3, generator=g, dtype=torch.float64),
        "terminated": term,
        "truncated": trunc,
        "mask": mask,
    }


def test_gae_lambda_one_is_bootstrapped_return_minus_value() -> None:
    c = _random_case(0)
    adv = compute_gae(**c, gamma=GAMMA, gae_lambda=1.0)
    ret = discounted_returns(
        c["rewards"], GAMMA, mask=c["mask"], terminated=c["terminated"],
        truncated=c["truncated"], final_values=c["final_values"],
    )  # fmt: skip
    torch.testing.assert_close(adv, (ret - c["values"]) * c["mask"])


def test_gae_lambda_zero_is_td_error() -> None:
    c = _random_case(1)
    adv = compute_gae(**c, gamma=GAMMA, gae_lambda=0.0)
    r, v, m = c["rewards"], c["values"], c["mask"]
    # Episode 0 (length 7, truncated): bootstrap from final_values at the last step.
    nxt0 = torch.cat([v[1:, 0], c["final_values"][:1]])
    torch.testing.assert_close(adv[:, 0], r[:, 0] + GAMMA * nxt0 - v[:, 0])
    # Episode 1 (length 4, terminated): no bootstrap at its last step.
    nxt1 = torch.cat([v[1:4, 1], torch.zeros(1, dtype=v.dtype)])
    torch.testing.assert_close(adv[:4, 1], r[:4, 1] + GAMMA * nxt1 - v[:4, 1])
    assert torch.all(adv[4:, 1] == 0) and torch.all(m[4:, 1] == 0)


def test_truncation_bootstraps_and_termination_does_not() -> None:
    rewards = torch.ones(3, 2, dtype=torch.float64)
    final_values = torch.full((2,), 10.0, dtype=torch.float64)
    mask, term, trunc = _episode_tensors([3, 3], 3, terminated_ends=[False, True])
    ret = discounted_returns(
        rewards, GAMMA, mask=mask, terminated=term, truncated=trunc, final_values=final_values
    )
    # Truncated: 1 + γ·10 at the last step; terminated: just the reward.
    assert ret[2, 0].item() == pytest.approx(1.0 + GAMMA * 10.0)
    assert ret[2, 1].item() == pytest.approx(1.0)
    # The bootstrap term propagates back discounted: difference γ^{L-t} V(s_L).
    diff = ret[:, 0] - ret[:, 1]
    expected = torch.tensor([GAMMA**3, GAMMA**2, GAMMA], dtype=torch.float64) * 10.0
    torch.testing.assert_close(diff, expected)
    adv = compute_gae(
        rewards, torch.zeros_like(rewards), final_values, term, trunc, mask, GAMMA, 1.0
    )
    torch.testing.assert_close(adv, ret)


def test_monte_carlo_returns_without_final_values() -> None:
    rewards = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    ret = discounted_returns(rewards, 0.5)
    torch.testing.assert_close(
        ret[:, 0], torch.tensor([1 + 0.5 * 2 + 0.25 * 3, 2 + 1.5, 3.0]).double()
    )


def test_padding_is_zero_and_ignored() -> None:
    c = _random_case(2)
    adv = compute_gae(**c, gamma=GAMMA, gae_lambda=0.95)
    ret = discounted_returns(c["rewards"], GAMMA, mask=c["mask"], terminated=c["terminated"])
    pad = c["mask"] == 0
    assert pad.any() and torch.all(adv[pad] == 0) and torch.all(ret[pad] == 0)
    # Garbage in padded rewards/values changes nothing.
    dirty = dict(c)
    dirty["rewards"] = torch.where(pad, torch.full_like(c["rewards"], 1e6), c["rewards"])
    dirty["values"] = torch.where(pad, torch.full_like(c["values"], -1e6), c["values"])
    torch.testing.assert_close(compute_gae(**dirty, gamma=GAMMA, gae_lambda=0.95), adv)


def test_trailing_batch_dims_match_per_column() -> None:
    g = torch.Generator().manual_seed(3)
    t, n, e = 6, 2, 3
    rewards = torch.randn(t, n, e, generator=g)
    values = torch.randn(t, n, e, generator=g)
    final = torch.randn(n, e, generator=g)
    lengths = torch.tensor([[6, 2, 4], [1, 6, 3]])
    mask = (torch.arange(t).view(t, 1, 1) < lengths).float()
    term = torch.zeros(t, n, e, dtype=torch.bool)
    trunc = torch.zeros(t, n, e, dtype=torch.bool)
    for i in range(n):
        for j in range(e):
            (term if (i + j) % 2 else trunc)[lengths[i, j] - 1, i, j] = True
    adv = compute_gae(rewards, values, final, term, trunc, mask, GAMMA, 0.9)
    for i in range(n):
        for j in range(e):
            col = compute_gae(
                rewards[:, i, j : j + 1], values[:, i, j : j + 1], final[i, j : j + 1],
                term[:, i, j : j + 1], trunc[:, i, j : j + 1], mask[:, i, j : j + 1], GAMMA, 0.9,
            )  # fmt: skip
            torch.testing.assert_close(adv[:, i, j], col[:, 0])


def test_shape_and_range_errors() -> None:
    c = _random_case(4)
    with pytest.raises(ValueError, match="values must have the shape of rewards"):
        compute_gae(**{**c, "values": c["values"][:-1]}, gamma=GAMMA, gae_lambda=1.0)
    with pytest.raises(ValueError, match="final_values"):
        compute_gae(**{**c, "final_values": c["final_values"][:2]}, gamma=GAMMA, gae_lambda=1.0)
    with pytest.raises(ValueError, match="mask must have the shape"):
        discounted_returns(c["rewards"], GAMMA, mask=c["mask"].T)
    with pytest.raises(ValueError, match="gamma must be in"):
        discounted_returns(c["rewards"], 1.5)
    with pytest.raises(ValueError, match="gae_lambda must be in"):
        compute_gae(**c, gamma=GAMMA, gae_lambda=-0.1)
    with pytest.raises(ValueError, match="floating-point"):
        discounted_returns(torch.ones(3, dtype=torch.long), GAMMA)


def test_layout_errors() -> None:
    c = _random_case(5)
    holey = c["mask"].clone()
    holey[2, 0] = 0.0  # the episode would restart at t = 3
    with pytest.raises(ValueError, match="prefix"):
        compute_gae(**{**c, "mask": holey}, gamma=GAMMA, gae_lambda=1.0)
    early = c["truncated"].clone()
    early[1, 0] = True  # truncated, yet the mask continues
    with pytest.raises(ValueError, match="one episode"):
        compute_gae(**{**c, "truncated": early}, gamma=GAMMA, gae_lambda=1.0)
