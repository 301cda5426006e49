"""The linear feature baseline of the original MAML code, fitted per task.

The value of a state is modelled as a linear function of hand-made features
(rllab's ``LinearFeatureBaseline``, which the MAML paper uses for its RL experiments):

    φ(s, t) = [ clip(s, −10, 10),  clip(s, −10, 10)²,  t/100,  (t/100)²,  (t/100)³,  1 ]

with ``t`` the step index within the episode (0 for the first observation). The
time features let a state-blind fit still capture that returns shrink towards the
end of a finite-horizon episode; dividing by 100 keeps ``t³`` in a range where the
normal equations stay well conditioned for horizons of 100–200 (rllab's choice).

Each task gets its own weights, fitted by ridge-regularised least squares on that
task's own (masked) episodes: ``w = (ΦᵀΦ + c I)⁻¹ Φᵀ G``, starting at ``c = 1e-5`` and
multiplying ``c`` by 10 while the solve is singular or non-finite (as rllab does).
All tasks are solved at once as a batch of ``[F, F]`` systems, in float64 (the
normal equations square the condition number; float32 loses digits quickly).

Fitting is an explicit call (:meth:`LinearFeatureBaseline.fit`); nothing fits as a
side effect. :func:`compute_advantages` is the one-call recipe: returns → fit →
values → GAE → per-task normalisation.
"""

from __future__ import annotations

import torch

from maml_rl.batch import EpisodeBatch
from maml_rl.returns import compute_gae, discounted_returns
from maml_rl.threads import torch_threads

__all__ = ["LinearFeatureBaseline", "compute_advantages", "normalize_per_task"]


class LinearFeatureBaseline:
    """Per-task linear value baseline on ``[obs, obs², t, t², t³, 1]`` features.

    Args:
        reg_coeff: initial ridge coefficient ``c`` (rllab: 1e-5).
        max_tries: how many times ``c`` is multiplied by 10 before giving up.
        time_scale: ``t`` is divided by this before the powers (rllab: 100).
        obs_clip: observations are clipped to ``[-obs_clip, obs_clip]`` (rllab: 10).

    Attributes:
        weights: ``[N, F]`` float64 weights of the last :meth:`fit` (None before),
            ``F = 2 * obs_dim + 4``.
    """

    def __init__(
        self,
        reg_coeff: float = 1e-5,
        max_tries: int = 5,
        time_scale: float = 100.0,
        obs_clip: float = 10.0,
    ) -> None:
        if not reg_coeff > 0:
            raise ValueError(f"reg_coeff must be > 0, got {reg_coeff}")
        if max_tries < 1:
            raise ValueError(f"max_tries must be ≥ 1, got {max_tries}")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        if not obs_clip > 0:
            raise ValueError(f"obs_clip must be > 0, got {obs_clip}")
        self.reg_coeff = float(reg_coeff)
        self.max_tries = int(max_tries)
        self.time_scale = float(time_scale)
        self.obs_clip = float(obs_clip)
        self.weights: torch.Tensor | None = None

    @staticmethod
    def num_features(obs_dim: int) -> int:
        """``F = 2 * obs_dim + 4``."""
        return 2 * obs_dim + 4

    def features(self, observations: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """The feature vectors ``φ(s, t)``.

        Args:
            observations: ``[..., obs_dim]``.
            steps: ``[...]`` step index of each observation within its episode
                (broadcastable to ``observations.shape[:-1]``).

        Returns:
            ``[..., 2 * obs_dim + 4]``, in the dtype of ``observations``.
        """
        obs = observations.clamp(-self.obs_clip, self.obs_clip)
        t = (steps.to(obs.dtype) / self.time_scale).expand(obs.shape[:-1]).unsqueeze(-1)
        return torch.cat([obs, obs * obs, t, t * t, t * t * t, torch.ones_like(t)], dim=-1)

    def fit(
        self, observations: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor
    ) -> LinearFeatureBaseline:
        """Fit one weight vector per task on that task's valid steps.

        Args:
            observations: ``[N, T, E, obs_dim]`` (task-major, as in
                :class:`~maml_rl.batch.EpisodeBatch`); step ``t`` is the index along dim 1.
            returns: ``[N, T, E]`` regression targets (discounted returns).
            mask: ``[N, T, E]``, 1 for steps that happened; padding does not count.

        Returns:
            ``self`` (the weights are in :attr:`weights`).

        Raises:
            ValueError: on mismatched shapes.
            RuntimeError: if some task's system stays singular or non-finite after
                ``max_tries`` increases of the ridge coefficient (non-finite data).
        """
        if observations.dim() != 4:
            raise ValueError(
                f"observations must be [N, T, E, obs_dim], got shape {tuple(observations.shape)}"
            )
        nte = tuple(observations.shape[:3])
        for name, tensor in (("returns", returns), ("mask", mask)):
            if tuple(tensor.shape) != nte:
                raise ValueError(
                    f"{name} must have shape {nte} ([N, T, E], matching observations), "
                    f"got {tuple(tensor.shape)}"
                )
        n, t, e, _ = observations.shape
        steps = torch.arange(t, device=observations.device).view(1, t, 1)
        m = mask.to(torch.float64).reshape(n, t * e, 1)
        phi = self.features(observations.to(torch.float64), steps).reshape(n, t * e, -1) * m
        target = (returns.to(torch.float64).reshape(n, t * e, 1)) * m
        gram = phi.transpose(1, 2) @ phi  # [N, F, F]
        rhs = phi.transpose(1, 2) @ target  # [N, F, 1]
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)

        weights = torch.zeros(n, gram.shape[-1], dtype=torch.float64, device=gram.device)
        todo = torch.arange(n, device=gram.device)
        reg = self.reg_coeff
        for _ in range(self.max_tries):
            # One thread: with several, torch 2.13's batched LU (MKL getrf inside torch's
            # own OpenMP loop over the batch) fails on Ant-sized systems (214 features:
            # "oneMKL ERROR: Parameter 6 was incorrect on entry to DLASWP") and then
            # never returns. The solve is ~1 % of the fit; the products above keep the threads.
            with torch_threads(1):
                sol, info = torch.linalg.solve_ex(gram[todo] + reg * eye, rhs[todo])
            ok = (info == 0) & torch.isfinite(sol).all(dim=(1, 2))
            weights[todo[ok]] = sol[ok, :, 0]
            todo = todo[~ok]
            if todo.numel() == 0:
                break
            reg *= 10.0  # ill-conditioned: regularise harder, as rllab does
        else:
            raise RuntimeError(
                f"baseline fit failed for tasks {todo.tolist()} even with ridge coefficient "
                f"{reg / 10:g}; check their observations and returns for NaN/inf"
            )
        self.weights = weights
        return self

    def predict(
        self, observations: torch.Tensor, steps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Value estimates with each task's own weights.

        Args:
            observations: ``[N, ..., obs_dim]``, task ``i``'s observations in row ``i``.
            steps: ``[N, ...]`` step indices (broadcastable). Default: the index along
                dim 1, for ``[N, T, E, obs_dim]`` batches.

        Returns:
            ``[N, ...]`` values, in the dtype of ``observations``.
        """
        if self.weights is None:
            raise RuntimeError("LinearFeatureBaseline.predict called before fit")
        n = self.weights.shape[0]
        if observations.dim() < 2 or observations.shape[0] != n:
            raise ValueError(
                f"observations must be [N={n}, ..., obs_dim] (the fitted task count), "
                f"got shape {tuple(observations.shape)}"
            )
        if observations.shape[-1] * 2 + 4 != self.weights.shape[1]:
            raise ValueError(
                f"observations must end in obs_dim={(self.weights.shape[1] - 4) // 2} "
                f"(the fitted size), got shape {tuple(observations.shape)}"
            )
        if steps is None:
            if observations.dim() < 3:
                raise ValueError("steps must be given unless observations are [N, T, ...]")
            t = observations.shape[1]
            steps = torch.arange(t, device=observations.device).view(
                1, t, *([1] * (observations.dim() - 3))
            )
        phi = self.features(observations.to(torch.float64), steps)
        w = self.weights.view(n, *([1] * (phi.dim() - 2)), -1)
        return (phi * w).sum(-1).to(observations.dtype)


def compute_advantages(
    batch: EpisodeBatch,
    gamma: float,
    gae_lambda: float,
    *,
    normalize: bool = True,
    baseline: LinearFeatureBaseline | None = None,
) -> torch.Tensor:
    """Per-task GAE advantages of a batch, with a freshly fitted linear baseline.

    Steps: discounted Monte-Carlo returns (no bootstrap, the fit target) → fit the
    baseline per task (explicitly, here) → values at every observation and at each
    episode's final observation (step index = episode length) → GAE, bootstrapping
    truncated episodes with the final value → optionally normalise each task's
    advantages to zero mean and unit standard deviation over its valid steps.

    Args:
        batch: the episodes, ``[N, T, E, ...]``.
        gamma: discount factor.
        gae_lambda: GAE ``λ``.
        normalize: normalise per task (over valid steps), as pytorch-maml-rl does.
        baseline: the baseline to fit (default: a new :class:`LinearFeatureBaseline`).

    Returns:
        ``[N, T, E]`` advantages in the batch's dtype and device, zero on padding.
    """
    baseline = LinearFeatureBaseline() if baseline is None else baseline
    # The returns/GAE functions are time-major: [N, T, E] -> [T, N, E].
    rewards = batch.rewards.transpose(0, 1)
    mask = batch.mask.transpose(0, 1)
    terminated = batch.terminated.transpose(0, 1)
    truncated = batch.truncated.transpose(0, 1)
    returns = discounted_returns(
        rewards, gamma, mask=mask, terminated=terminated, truncated=truncated
    )
    baseline.fit(batch.observations, returns.transpose(0, 1), batch.mask)
    values = baseline.predict(batch.observations).transpose(0, 1)
    final_values = baseline.predict(
        batch.final_observations.unsqueeze(1), batch.lengths.unsqueeze(1)
    ).squeeze(1)  # [N, E]
    adv = compute_gae(
        rewards, values, final_values, terminated, truncated, mask, gamma, gae_lambda
    ).transpose(0, 1)
    if normalize:
        adv = normalize_per_task(adv, batch.mask)
    return adv


def normalize_per_task(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise ``x`` to zero mean and unit std over each task's valid entries.

    Args:
        x: ``[N, ...]``.
        mask: ``[N, ...]``, 1 for valid entries.
        eps: added to the standard deviation.

    Returns:
        ``[N, ...]``, zero where ``mask`` is 0.
    """
    m = mask.to(x.dtype)
    dims = tuple(range(1, x.dim()))
    count = m.sum(dims, keepdim=True).clamp(min=1.0)
    mean = (x * m).sum(dims, keepdim=True) / count
    var = (((x - mean) * m) ** 2).sum(dims, keepdim=True) / count
    return (x - mean) / (var.sqrt() + eps) * m
