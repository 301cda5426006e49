"""The per-task linear feature baseline and compute_advantages (maml_rl.baseline)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from maml_rl.baseline import LinearFeatureBaseline, compute_advantages, normalize_per_task
from maml_rl.batch import EpisodeBatch
from maml_rl.envs.navigation import GoalTask2D
from maml_rl.returns import compute_gae, discounted_returns

N, T, E, OBS = 3, 12, 4, 2


def _batch(seed: int, lengths: torch.Tensor, *, terminate: bool = False) -> EpisodeBatch:
    """A random float64 batch whose episode ``(i, e)`` lasts ``lengths[i, e]`` steps."""
    g = torch.Generator().manual_seed(seed)
    n, e = lengths.shape
    mask = (torch.arange(T).view(1, T, 1) < lengths.view(n, 1, e)).double()
    last = torch.zeros(n, T, e, dtype=torch.bool)
    last.scatter_(1, (lengths - 1).view(n, 1, e), True)
    # Episodes shorter than T terminated (if asked), the others hit the time limit.
    short = (lengths < T).view(n, 1, e)
    terminated = last & short if terminate else torch.zeros_like(last)
    truncated = last & ~terminated
    return EpisodeBatch(
        observations=torch.randn(n, T, e, OBS, generator=g, dtype=torch.float64) * mask[..., None],
        actions=torch.randn(n, T, e, 2, generator=g, dtype=torch.float64) * mask[..., None],
        rewards=torch.randn(n, T, e, generator=g, dtype=torch.float64) * mask,
        log_probs=torch.zeros(n, T, e, dtype=torch.float64),
        terminated=terminated,
        truncated=truncated,
        mask=mask,
        final_observations=torch.randn(n, e, OBS, generator=g, dtype=torch.float64),
        tasks=[GoalTask2D(goal=(0.1 * i, 0.0)) for i in range(n)],
    )


FULL = torch.full((N, E), T)
RAGGED = torch.tensor([[12, 5, 9, 1], [3, 12, 12, 7], [12, 12, 12, 12]])


def test_features_are_obs_squares_and_time_powers() -> None:
    base = LinearFeatureBaseline()
    obs = torch.tensor([[[3.0, -20.0]]])
    phi = base.features(obs, torch.tensor([[50]]))
    t = 0.5
    expected = torch.tensor([3.0, -10.0, 9.0, 100.0, t, t * t, t**3, 1.0])  # obs clipped to ±10
    torch.testing.assert_close(phi[0, 0], expected)
    assert base.num_features(OBS) == phi.shape[-1]


@pytest.mark.parametrize("lengths", [FULL, RAGGED], ids=["full", "ragged"])
def test_fit_recovers_linear_target_per_task(lengths: torch.Tensor) -> None:
    batch = _batch(0, lengths)
    base = LinearFeatureBaseline(reg_coeff=1e-10)
    g = torch.Generator().manual_seed(1)
    true_w = torch.randn(N, base.num_features(OBS), generator=g, dtype=torch.float64)
    phi = base.features(batch.observations, torch.arange(T).view(1, T, 1))
    target = (phi * true_w.view(N, 1, 1, -1)).sum(-1)
    # Garbage targets on padding must not matter.
    target = torch.where(batch.mask > 0, target, torch.full_like(target, 1e3))
    base.fit(batch.observations, target, batch.mask)
    assert base.weights is not None
    pred = base.predict(batch.observations)
    valid = batch.mask > 0
    torch.testing.assert_close(pred[valid], target[valid], rtol=1e-6, atol=1e-6)


def test_tasks_are_fitted_independently() -> None:
    batch = _batch(2, RAGGED)
    returns = discounted_returns(
        batch.rewards.transpose(0, 1), 0.99, mask=batch.mask.transpose(0, 1)
    )
    returns = returns.transpose(0, 1)
    joint = LinearFeatureBaseline().fit(batch.observations, returns, batch.mask)
    for i in range(N):
        alone = LinearFeatureBaseline().fit(
            batch.observations[i : i + 1], returns[i : i + 1], batch.mask[i : i + 1]
        )
        assert joint.weights is not None and alone.weights is not None
        torch.testing.assert_close(joint.weights[i], alone.weights[0])


def test_singular_system_is_regularised_and_nonfinite_data_raises() -> None:
    # All-zero observations: the obs columns of Φ vanish, ΦᵀΦ is singular; the ridge
    # term keeps the solve finite.
    obs = torch.zeros(1, T, E, OBS, dtype=torch.float64)
    returns = torch.ones(1, T, E, dtype=torch.float64)
    mask = torch.ones(1, T, E, dtype=torch.float64)
    base = LinearFeatureBaseline().fit(obs, returns, mask)
    assert base.weights is not None and torch.isfinite(base.weights).all()
    torch.testing.assert_close(base.predict(obs), returns, rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError, match="NaN/inf"):
        LinearFeatureBaseline().fit(obs, returns * float("nan"), mask)


def test_shape_errors() -> None:
    batch = _batch(3, FULL)
    base = LinearFeatureBaseline()
    with pytest.raises(ValueError, match=r"observations must be \[N, T, E, obs_dim\]"):
        base.fit(batch.observations[0], batch.rewards, batch.mask)
    with pytest.raises(ValueError, match="returns must have shape"):
        base.fit(batch.observations, batch.rewards[:, :-1], batch.mask)
    with pytest.raises(RuntimeError, match="before fit"):
        base.predict(batch.observations)
    base.fit(batch.observations, batch.rewards, batch.mask)
    with pytest.raises(ValueError, match="fitted task count"):
        base.predict(batch.observations[:1])
    with pytest.raises(ValueError, match="reg_coeff must be > 0"):
        LinearFeatureBaseline(reg_coeff=0.0)


@pytest.mark.parametrize("terminate", [False, True])
def test_compute_advantages_is_gae_with_the_fitted_baseline(terminate: bool) -> None:
    batch = _batch(4, RAGGED, terminate=terminate)
    gamma, lam = 0.95, 0.9
    adv = compute_advantages(batch, gamma, lam, normalize=False)
    assert adv.shape == (N, T, E)
    # The same pipeline written out step by step.
    tm = lambda x: x.transpose(0, 1)  # noqa: E731
    returns = discounted_returns(
        tm(batch.rewards), gamma, mask=tm(batch.mask), terminated=tm(batch.terminated)
    )
    base = LinearFeatureBaseline().fit(batch.observations, tm(returns), batch.mask)
    values = base.predict(batch.observations)
    # The final observation follows step L - 1, so its time index is L.
    final = base.predict(batch.final_observations.unsqueeze(1), batch.lengths.unsqueeze(1))[:, 0]
    expected = compute_gae(
        tm(batch.rewards), tm(values), final, tm(batch.terminated), tm(batch.truncated),
        tm(batch.mask), gamma, lam,
    )  # fmt: skip
    torch.testing.assert_close(adv, tm(expected))
    # Truncated episodes use the final value; changing it must change their advantages.
    moved = EpisodeBatch(**{**batch.__dict__, "final_observations": batch.final_observations + 1})
    changed = (compute_advantages(moved, gamma, lam, normalize=False) - adv).abs().sum(1) > 0
    assert torch.equal(changed, batch.truncated.any(1))


def test_normalized_advantages_are_standardised_per_task() -> None:
    batch = _batch(5, RAGGED)
    adv = compute_advantages(batch, 0.99, 1.0)
    valid = batch.mask > 0
    assert torch.all(adv[~valid] == 0)
    for i in range(N):
        a = adv[i][valid[i]]
        assert abs(a.mean().item()) < 1e-10
        assert a.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)


def test_normalize_per_task_ignores_padding() -> None:
    x = torch.tensor([[1.0, 3.0, 100.0], [2.0, 2.0, 2.0]])
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    out = normalize_per_task(x, m)
    torch.testing.assert_close(out[0], torch.tensor([-1.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], torch.zeros(3))


def test_an_ant_sized_fit_on_two_threads_returns() -> None:
    """214 features (Ant's 105-d observations) on two torch threads: the batched LU of
    torch 2.13 + MKL used to fail inside its OpenMP loop and never return. Run in a
    subprocess so that a regression fails on the timeout instead of hanging the suite."""
    code = """
import torch
from maml_rl.baseline import LinearFeatureBaseline
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
obs = torch.randn(40, 200, 20, 105, generator=g) * 5
returns = torch.randn(40, 200, 20, generator=g)
mask = (torch.rand(40, 200, 20, generator=g) < 0.3).double()
b = LinearFeatureBaseline(105).fit(obs, returns, mask)
assert torch.isfinite(b.weights).all()
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "ok" and "DLASWP" not in out.stdout + out.stderr
