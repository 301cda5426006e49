"""Every random stream of maml-rl, derived from one root seed by explicit spawn keys.

One seed → ``np.random.SeedSequence`` children addressed by spawn key, never ``seed + i``
(adjacent runs would share streams):

================================================= ======================================
``SeedSequence(seed, spawn_key=(0,))``            torch seed of the policy's initialisation
``SeedSequence(seed, spawn_key=(1, i))``          meta-iteration ``i``: task generator,
                                                  the seeds of its sample calls, a torch
                                                  seed for the update
``SeedSequence(call_seed, spawn_key=(t,))``       task ``t`` of one sample call: its
                                                  episodes' reset seeds and action noise
``SeedSequence([EVAL_ENTROPY_TAG, seed], key)``   evaluation streams (held-out tasks,
                                                  rollouts, baselines)
================================================= ======================================

Iteration ``i``'s randomness is a function of ``(seed, i)`` alone, so a resumed run
replays exactly the iterations an uninterrupted one would have made, and evaluation can
replay a run's training tasks without any rollout. The evaluation entropy differs from
every training stream's, so the two never share a stream whatever the seeds.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EVAL_ENTROPY_TAG",
    "eval_seed_sequence",
    "init_seed",
    "iteration_seeds",
    "seed_int",
    "task_streams",
]

_INIT_STREAM, _ITERATION_STREAM = 0, 1

#: Mixed into the evaluation seed's entropy ("maml-eval" in ASCII) so that no
#: evaluation stream is a training stream, for any pair of seeds.
EVAL_ENTROPY_TAG = 0x6D616D6C2D6576616C


def seed_int(ss: np.random.SeedSequence) -> int:
    """A 63-bit non-negative int from a seed sequence (fits int64 and every seeding API)."""
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def iteration_seeds(
    seed: int, iteration: int, num_sample_calls: int
) -> tuple[np.random.Generator, list[int], int]:
    """The random streams of one meta-iteration, a pure function of ``(seed, iteration)``.

    Args:
        seed: the run's root seed.
        iteration: 0-based meta-iteration index.
        num_sample_calls: sample calls in the iteration (``num_adapt_steps + 1``).

    Returns:
        ``(task_rng, sampler_seeds, torch_seed)``: the generator for
        ``family.sample_tasks``, one seed per sample call, and a torch seed.
    """
    # SeedSequence(seed, spawn_key=(1, i)) is child i of child 1 of SeedSequence(seed):
    # addressed directly, so a resume needs no replay of earlier spawns.
    ss = np.random.SeedSequence(seed, spawn_key=(_ITERATION_STREAM, iteration))
    task_ss, sampler_ss, torch_ss = ss.spawn(3)
    sampler_seeds = [seed_int(s) for s in sampler_ss.spawn(num_sample_calls)]
    return np.random.default_rng(task_ss), sampler_seeds, seed_int(torch_ss)


def init_seed(seed: int) -> int:
    """The torch seed for the policy's initialisation."""
    return seed_int(np.random.SeedSequence(seed, spawn_key=(_INIT_STREAM,)))


def eval_seed_sequence(seed: int, *key: int) -> np.random.SeedSequence:
    """The evaluation stream ``key`` of evaluation seed ``seed``."""
    return np.random.SeedSequence([EVAL_ENTROPY_TAG, seed], spawn_key=key)


def task_streams(
    seed: int, task_index: int, episodes: int, horizon: int, noise_dim: int, discrete: bool
) -> tuple[list[int], np.ndarray]:
    """The random numbers of task ``task_index``'s episodes in a sample call with ``seed``.

    Both come from ``SeedSequence(seed, spawn_key=(task_index,))`` alone, whatever
    the worker layout; both are prefix-stable in ``episodes`` (episode ``e`` gets
    the same numbers whether the call has ``E`` or more episodes).

    Returns:
        The env reset seed of each episode (``[E]`` ints) and its action noise
        ``[E, T, noise_dim]`` float32: standard normal for Gaussian policies
        (``action = mean + std * noise``), standard Gumbel for discrete actions
        (``action = argmax(logits + noise)``, the Gumbel-max trick).
    """
    reset_ss, noise_ss = np.random.SeedSequence(seed, spawn_key=(task_index,)).spawn(2)
    seeds = [int(s) for s in reset_ss.generate_state(episodes, np.uint64)]
    rng = np.random.Generator(np.random.PCG64(noise_ss))
    if discrete:
        noise = rng.gumbel(size=(episodes, horizon, noise_dim)).astype(np.float32)
    else:
        noise = rng.standard_normal((episodes, horizon, noise_dim), dtype=np.float32)
    return seeds, noise
