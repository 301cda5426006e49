"""The baselines of fast adaptation: a registry of runners, one per baseline.

:func:`~maml_rl.evaluation.evaluate` compares the runs, on the same held-out tasks and
with the same episodes per step, with the MAML paper's baselines:

* **random**: a freshly initialised policy, adapted with the same policy-gradient
  steps as the meta-trained one;
* **pretrained**: one policy trained by plain TRPO on the training tasks (resampled
  every iteration, no adaptation in the loop;
  :class:`~maml_rl.agents.multitask_trpo.MultiTaskTRPO`), then adapted the same way;
* **oracle**: a policy that also *observes* the task (:mod:`maml_rl.envs.oracle`),
  trained like the pretrained one; it shows what knowing the task is worth;
* **sb3_ppo**: Stable-Baselines3 PPO trained from scratch on each held-out task with
  the env-step budget the adaptation used (and multiples of it): how much standard RL
  it takes to match a few adaptation steps (:mod:`maml_rl.evaluation.sb3`).

**Budgets.** *random* is adapted exactly like the runs. *pretrained* and *oracle* are
trained by plain TRPO (the run's ``trpo.*`` settings) for ``pretrain_iterations``
iterations (default: the run's meta-iterations), each on ``meta_batch_size`` training
tasks of the run's own task stream with ``fast_batch_size`` episodes — the same tasks
the meta-learner saw, one batch per iteration instead of ``K + 1``; *pretrained* is
then adapted like the runs, while *oracle*, which observes the task, is not adapted:
each step samples it afresh with its trained parameters (its ``fast_lr`` entries are
0). *sb3_ppo* trains on each of the first ``sb3_tasks`` evaluation tasks for
``multiplier · K · E · horizon`` env steps (the nominal budget of the adaptation) and
is scored on ``E`` episodes with stochastic actions, as the other methods are.

**Interruptions.** When the evaluation writes an output folder, the two TRPO trainings
save their state to ``<out>/baselines/<name>.pt`` every few iterations and when they
finish (the policy, the iterations done and the settings it was trained with). An
evaluation started again with the same settings continues a training from there —
bit for bit as if it had not stopped: the learner keeps no state between iterations and
every iteration's tasks and seeds are derived from its index — and reuses a finished
one without retraining (also with ``--pretrain-iterations`` raised: it trains on from
where it stopped). A state saved with other settings is ignored and overwritten.

**Adding a baseline** is registering one runner, ``runner(ctx) -> entry``, with
:func:`register_baseline`. ``ctx`` (:class:`EvalContext`) holds what every method of
the evaluation shares: the tasks, step sizes, sampler seeds and samplers;
:meth:`EvalContext.curve` measures a policy's adaptation curve exactly as the runs'
are measured. The entry is what ``eval.json`` records under ``baselines.<name>``; one
with a ``curve`` is plotted and logged like the others. A runner that draws random
numbers takes them from a stream of its own (a new spawn key in
:mod:`maml_rl.evaluation.protocol`), so that adding it changes no other number.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maml_rl.agents.multitask_trpo import MultiTaskTRPO
from maml_rl.agents.policies import Policy
from maml_rl.config import Config
from maml_rl.evaluation.curve import Curve, EvalSamplers, Progress, adaptation_curve
from maml_rl.evaluation.protocol import (
    ORACLE_STREAM,
    PRETRAINED_STREAM,
    RANDOM_INIT_STREAM,
    SB3_STREAM,
    EvalSettings,
    training_task_batches,
)
from maml_rl.evaluation.report import (
    BaselineEntry,
    CurveBaselineEntry,
    OracleEntry,
    SB3Entry,
    SB3Point,
    TrainedBaselineEntry,
)
from maml_rl.evaluation.sb3 import sb3_hyperparameters, sb3_ppo_on_task
from maml_rl.evaluation.stats import mean_confidence_interval
from maml_rl.factories import build_policy
from maml_rl.seeding import eval_seed_sequence, seed_int
from maml_rl.tasks import Task

__all__ = ["BASELINES", "Baseline", "EvalContext", "parse_baselines", "register_baseline"]


# -- what every method shares ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """One evaluation, as the runs and every baseline see it.

    Attributes:
        settings: the evaluation's settings.
        config: the first run's config: the baselines' policy architecture, TRPO
            settings, training tasks and env settings.
        env_id: the task family.
        tasks: the ``N`` evaluation tasks.
        episodes: ``E`` episodes per task and step.
        fast_lrs: the ``K`` step sizes.
        sampler_seeds: the seeds of a curve's ``K + 1`` sample calls.
        pretrain_iterations: TRPO iterations of the baselines that pretrain.
        horizon: the episode length.
        samplers: the samplers, shared by all methods.
        state_dir: where the pretraining baselines save their training state (None:
            nowhere; the evaluation writes no output folder).
    """

    settings: EvalSettings
    config: Config
    env_id: str
    tasks: list[Task]
    episodes: int
    fast_lrs: list[float]
    sampler_seeds: list[int]
    pretrain_iterations: int
    horizon: int
    samplers: EvalSamplers
    state_dir: Path | None = None

    def curve(
        self,
        policy: Policy,
        desc: str,
        *,
        config: Config | None = None,
        env_id: str | None = None,
        adapted: bool = True,
        keep_params: bool = False,
    ) -> Curve:
        """The adaptation curve of ``policy`` on the evaluation tasks.

        Args:
            policy: the policy (not changed).
            desc: the progress bar's label.
            config: the config it was built from (default: the first run's).
            env_id: the family it acts in (default: its config's).
            adapted: ``False``: only fresh episodes at every step, no adaptation.
            keep_params: keep the parameters of every sample call (for videos).
        """
        first = self.config
        with Progress(self.settings.progress, len(self.sampler_seeds), desc) as bar:
            return adaptation_curve(
                self.samplers.get(config or first, policy, env_id), policy, self.tasks,
                episodes=self.episodes,
                fast_lrs=self.fast_lrs if adapted else [0.0] * len(self.fast_lrs),
                seeds=self.sampler_seeds, gamma=first.maml.gamma,
                gae_lambda=first.maml.gae_lambda, progress=bar.update,
                keep_params=keep_params,
            )  # fmt: skip


# -- the registry ----------------------------------------------------------------------------

BaselineRunner = Callable[[EvalContext], BaselineEntry]


def _any_settings(settings: EvalSettings) -> None:
    """Accepts every setting."""


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A registered baseline.

    Attributes:
        name: its name in ``--baselines`` and in ``eval.json``.
        run: measures it in one evaluation, returning its ``eval.json`` entry.
        pretrains: whether it trains on the runs' training tasks; they are then
            replayed for ``pretrain_iterations`` iterations and kept out of the
            evaluation tasks.
        check: raises a one-line ``ValueError`` for settings it cannot run with.
    """

    name: str
    run: BaselineRunner
    pretrains: bool = False
    check: Callable[[EvalSettings], None] = _any_settings


_REGISTRY: dict[str, Baseline] = {}

#: The registered baselines by name, in registration order (the order of ``eval.json``,
#: the summary and the plot).
BASELINES: Mapping[str, Baseline] = types.MappingProxyType(_REGISTRY)


def register_baseline(
    name: str,
    *,
    pretrains: bool = False,
    check: Callable[[EvalSettings], None] = _any_settings,
) -> Callable[[BaselineRunner], BaselineRunner]:
    """Register the decorated runner as the baseline ``name`` (see :class:`Baseline`)."""
    if not name or "," in name or name.strip() != name or name.lower() in ("all", "none"):
        raise ValueError(f"{name!r} cannot name a baseline (it must work in --baselines a,b)")

    def register(runner: BaselineRunner) -> BaselineRunner:
        if name in _REGISTRY:
            raise ValueError(f"a baseline named {name!r} is already registered")
        _REGISTRY[name] = Baseline(name, runner, pretrains, check)
        return runner

    return register


def parse_baselines(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Parse ``"random,oracle"`` (``"all"``, ``"none"`` or ``""``) into baseline names.

    Unknown names raise a one-line error that suggests the closest registered one.
    """
    if text is None:
        return ()
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    items = [s for s in items if s]
    if items in (["all"], ["ALL"]):
        return tuple(BASELINES)
    if items in ([], ["none"]):
        return ()
    for name in items:
        if name not in BASELINES:
            close = difflib.get_close_matches(name, list(BASELINES), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown baseline {name!r}{hint} (choose from {', '.join(BASELINES)}, or all)"
            )
    return tuple(b for b in BASELINES if b in items)  # registry order, no duplicates


# -- the MAML paper's baselines --------------------------------------------------------------


def _fresh_policy(config: Config, seed: int, env_id: str | None = None) -> Policy:
    """A freshly initialised policy with the run's architecture (for ``env_id``'s spaces)."""
    overrides: dict[str, Any] = {"seed": seed}
    if env_id is not None:
        overrides["env.id"] = env_id
    return build_policy(config.replace(overrides))


#: The pretraining baselines save their state every this many iterations (and at the end).
PRETRAIN_SAVE_EVERY = 5


def _pretrain_key(ctx: EvalContext, env_id: str, stream: int) -> dict[str, Any]:
    """Everything a pretraining's iterations depend on except how many there are: a saved
    state with the same key is the same training, stopped earlier."""
    config = ctx.config.to_dict()
    trpo = config["trpo"]
    return {
        "env_id": env_id,
        "eval_seed": ctx.settings.seed,
        "stream": stream,
        "seed": config["seed"],
        "env": config["env"],
        "policy": config["policy"],
        "maml": {
            k: config["maml"][k]
            for k in (
                "gamma",
                "gae_lambda",
                "meta_batch_size",
                "fast_batch_size",
                "num_adapt_steps",
            )
        },
        "trpo": {
            k: trpo[k]
            for k in ("max_kl", "cg_iters", "cg_damping", "ls_max_steps", "ls_backtrack_ratio")
        },
    }


def _load_pretrain_state(
    path: Path, key: dict[str, Any], policy: Policy, iterations: int
) -> tuple[int, int]:
    """Restore ``policy`` from a saved pretraining state with the same ``key`` and at most
    ``iterations`` iterations; returns (iterations done, env steps), (0, 0) if none fits."""
    if not path.is_file():
        return 0, 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a torn or foreign file: train from scratch and overwrite it
        return 0, 0
    done = int(state.get("iteration", 0))
    if state.get("key") != key or not 0 < done <= iterations:
        return 0, 0
    policy.load_state_dict(state["policy"])
    return done, int(state["env_steps"])


def _save_pretrain_state(
    path: Path, key: dict[str, Any], policy: Policy, iteration: int, env_steps: int
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    state = {
        "key": key,
        "iteration": iteration,
        "env_steps": env_steps,
        "policy": policy.state_dict(),
    }
    torch.save(state, tmp)
    os.replace(tmp, path)  # never a half-written state


def _pretrain(
    ctx: EvalContext, env_id: str, stream: int, desc: str, name: str
) -> tuple[Policy, int]:
    """Train one policy by plain TRPO on the run's training tasks, seeded by the
    evaluation stream ``stream``; returns it and the env steps it used. With
    ``ctx.state_dir`` the training saves its state to ``<state_dir>/<name>.pt`` and
    continues from a matching saved one."""
    config, seed = ctx.config, ctx.settings.seed
    policy = _fresh_policy(config, seed_int(eval_seed_sequence(seed, stream)), env_id)
    t = config.trpo
    learner = MultiTaskTRPO(
        policy, gamma=config.maml.gamma, gae_lambda=config.maml.gae_lambda, max_kl=t.max_kl,
        cg_iters=t.cg_iters, cg_damping=t.cg_damping, ls_max_steps=t.ls_max_steps,
        ls_backtrack_ratio=t.ls_backtrack_ratio,
    )  # fmt: skip
    iterations = ctx.pretrain_iterations
    path = ctx.state_dir / f"{name}.pt" if ctx.state_dir is not None else None
    key = _pretrain_key(ctx, env_id, stream)
    start, env_steps = 0, 0
    if path is not None:
        start, env_steps = _load_pretrain_state(path, key, policy, iterations)
    if start and ctx.settings.progress:
        print(f"{desc}: continuing from {path} at iteration {start}/{iterations}", file=sys.stderr)
    sampler = ctx.samplers.get(config, policy, env_id) if start < iterations else None
    with Progress(ctx.settings.progress, iterations, desc) as bar:
        bar.update(start)
        for i, tasks in enumerate(training_task_batches(config, iterations)):
            if i < start or sampler is None:
                continue
            roll_seed = seed_int(eval_seed_sequence(seed, stream, i))
            params = {k: v.detach() for k, v in policy.named_parameters()}
            batch = sampler.sample(tasks, params, config.maml.fast_batch_size, roll_seed)
            learner.step(batch)
            env_steps += batch.env_steps
            bar.update()
            done = i + 1
            if path is not None and (done % PRETRAIN_SAVE_EVERY == 0 or done == iterations):
                _save_pretrain_state(path, key, policy, done, env_steps)
    return policy, env_steps


@register_baseline("random")
def random_baseline(ctx: EvalContext) -> CurveBaselineEntry:
    """A freshly initialised policy, adapted like the runs."""
    seed = seed_int(eval_seed_sequence(ctx.settings.seed, RANDOM_INIT_STREAM))
    curve = ctx.curve(_fresh_policy(ctx.config, seed), "baseline random")
    return {"curve": curve.to_dict()}


@register_baseline("pretrained", pretrains=True)
def pretrained_baseline(ctx: EvalContext) -> TrainedBaselineEntry:
    """Plain TRPO on the training tasks, then adapted like the runs."""
    policy, steps = _pretrain(ctx, ctx.env_id, PRETRAINED_STREAM, "pretrain (TRPO)", "pretrained")
    curve = ctx.curve(policy, "baseline pretrained")
    return {
        "curve": curve.to_dict(),
        "train_iterations": ctx.pretrain_iterations,
        "train_env_steps": steps,
    }


@register_baseline("oracle", pretrains=True)
def oracle_baseline(ctx: EvalContext) -> OracleEntry:
    """Plain TRPO on the training tasks of the family that observes its task; not adapted."""
    # Imported here: `import maml_rl.evaluation` loads no task family.
    from maml_rl.envs.oracle import oracle_env_id

    oracle_id = oracle_env_id(ctx.env_id)
    policy, steps = _pretrain(ctx, oracle_id, ORACLE_STREAM, "train oracle (TRPO)", "oracle")
    # Not adapted: it sees the task (the MAML paper draws it as a flat line), and
    # policy-gradient steps on its near-deterministic policy only do harm.
    curve = ctx.curve(policy, "baseline oracle", env_id=oracle_id, adapted=False)
    return {
        "curve": curve.to_dict(),
        "env_id": oracle_id,
        "train_iterations": ctx.pretrain_iterations,
        "train_env_steps": steps,
    }


def _check_sb3_budget(settings: EvalSettings) -> None:
    if settings.adapt_steps == 0:
        raise ValueError(
            "the sb3_ppo baseline gets the env steps of the adaptation (K · E · horizon), "
            "which is 0 with --adapt-steps 0; use --adapt-steps ≥ 1 or drop sb3_ppo"
        )


@register_baseline("sb3_ppo", check=_check_sb3_budget)
def sb3_ppo_baseline(ctx: EvalContext) -> SB3Entry:
    """SB3 PPO from scratch on each evaluation task, at multiples of the adaptation budget."""
    settings, config = ctx.settings, ctx.config
    base_budget = settings.adapt_steps * ctx.episodes * ctx.horizon
    sub = list(ctx.tasks[: settings.sb3_tasks] if settings.sb3_tasks else ctx.tasks)
    seed = settings.seed
    points: list[SB3Point] = []
    total = len(settings.sb3_multipliers) * len(sub)
    with Progress(settings.progress, total, "baseline sb3_ppo (tasks × budgets)") as bar:
        for j, mult in enumerate(settings.sb3_multipliers):
            budget = max(1, round(mult * base_budget))
            task_returns, used = [], []
            for i, task in enumerate(sub):
                # Reset seeds of the evaluation episodes: per task, shared by the budgets.
                eval_seeds = eval_seed_sequence(seed, SB3_STREAM, i).generate_state(ctx.episodes)
                res = sb3_ppo_on_task(
                    ctx.env_id, task, budget=budget, eval_seeds=[int(s) for s in eval_seeds],
                    seed=int(eval_seed_sequence(seed, SB3_STREAM, i, j + 1).generate_state(1)[0]),
                    env_kwargs=dict(config.env.kwargs),
                    max_episode_steps=config.env.max_episode_steps,
                )  # fmt: skip
                task_returns.append(float(res.returns.mean()))
                used.append(res.env_steps)
                bar.update()
            mean, half = mean_confidence_interval(task_returns)
            hp = sb3_hyperparameters(budget)
            points.append(
                {
                    "multiplier": mult,
                    "budget_env_steps": budget,
                    "n_steps": hp["n_steps"],
                    "batch_size": hp["batch_size"],
                    "env_steps": float(np.mean(used)),
                    "mean": mean,
                    "ci95": half,
                    "ci_low": mean - half if half is not None else None,
                    "ci_high": mean + half if half is not None else None,
                    "per_task_mean": task_returns,
                }
            )
    return {
        "num_tasks": len(sub),
        "adaptation_budget_env_steps": base_budget,
        "policy": "SB3 PPO, MlpPolicy, default hyperparameters but n_steps/batch_size",
        "points": points,
    }
