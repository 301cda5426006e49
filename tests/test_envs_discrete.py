"""The discrete task families: Bernoulli bandits and random tabular MDPs.

Invariants: each passes Gymnasium's env checker; rewards and transitions equal a
hand computation from the seeded generator's draws; task sampling depends on the
given generator only; the natively batched env equals ``K`` single envs step by
step (several episodes, so the per-env generators' continuation is covered too);
bad tasks and bad batched actions are rejected with errors that name the problem.
"""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils import seeding
from gymnasium.utils.env_checker import check_env

from maml_rl.envs import GoalTask2D
from maml_rl.envs.bandit import Bandit5Env, Bandit5Task, Bandit10Task, BanditTask
from maml_rl.envs.tabular_mdp import NUM_ACTIONS, NUM_STATES, TabularMDPEnv, TabularMDPTask
from maml_rl.tasks import family_class, family_ids, make_family

DISCRETE_IDS = [
    "MetaRL/Bandit-5arm-v0",
    "MetaRL/Bandit-10arm-v0",
    "MetaRL/Bandit-50arm-v0",
    "MetaRL/TabularMDP-v0",
]


def _deterministic_mdp() -> tuple[np.ndarray, np.ndarray]:
    """``s' = (s + a + 1) mod 10`` with certainty; ``m[s, a] = 10·s + a``."""
    transitions = np.zeros((NUM_STATES, NUM_ACTIONS, NUM_STATES))
    for s in range(NUM_STATES):
        for a in range(NUM_ACTIONS):
            transitions[s, a, (s + a + 1) % NUM_STATES] = 1.0
    means = 10.0 * np.arange(NUM_STATES)[:, None] + np.arange(NUM_ACTIONS)[None, :]
    return transitions, means


def test_families_are_registered() -> None:
    ids = family_ids()
    for env_id in DISCRETE_IDS:
        assert env_id in ids
        assert gym.spec(env_id).max_episode_steps == family_class(env_id).horizon


@pytest.mark.parametrize("env_id", DISCRETE_IDS)
def test_check_env(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning is a failure here
        check_env(env, skip_render_check=True)


def test_bandit_reward_is_a_bernoulli_draw_from_np_random() -> None:
    env = gym.make("MetaRL/Bandit-5arm-v0", task={"probs": [0.0, 1.0, 0.3, 0.5, 0.9]})
    for arm, prob in enumerate([0.0, 1.0, 0.3, 0.5, 0.9]):
        for seed in range(20):
            obs, _ = env.reset(seed=seed)
            assert obs.tolist() == [0.0]
            _, reward, terminated, truncated, info = env.step(arm)
            # The hand computation: one uniform from the env's seeded generator.
            uniform = seeding.np_random(seed)[0].random()
            assert reward == (1.0 if uniform < prob else 0.0)
            assert terminated and truncated  # one pull; the time limit is 1 too
            assert info["prob"] == prob


def test_bandit_empirical_mean_matches_probability() -> None:
    env = Bandit5Env(task=Bandit5Task(probs=(0.2, 0.2, 0.7, 0.2, 0.2)))
    env.reset(seed=0)
    rewards = []
    for _ in range(4000):
        rewards.append(env.step(2)[1])
        env.reset()  # no seed: the generator continues
    assert abs(np.mean(rewards) - 0.7) < 0.03  # 4 standard errors


def test_tabular_mdp_transition_and_reward_by_hand() -> None:
    transitions, means = _deterministic_mdp()
    env = gym.make("MetaRL/TabularMDP-v0", task=TabularMDPTask.from_arrays(transitions, means))
    obs, _ = env.reset(seed=7)
    assert obs.tolist() == [1.0] + [0.0] * (NUM_STATES - 1)  # start state 0
    rng = seeding.np_random(7)[0]
    state = 0
    for action in [0, 4, 2, 3, 1, 1, 0, 2, 4, 3]:
        obs, reward, terminated, truncated, info = env.step(action)
        noise = rng.standard_normal()
        rng.random()  # the uniform that picks s' (irrelevant: transitions are certain)
        assert reward == means[state, action] + noise
        state = (state + action + 1) % NUM_STATES
        assert info["state"] == state and obs[state] == 1.0 and obs.sum() == 1.0
        assert not terminated
    assert truncated  # after horizon = 10 steps


def test_tabular_mdp_next_state_is_inverse_cdf_of_the_uniform() -> None:
    transitions = np.zeros((NUM_STATES, NUM_ACTIONS, NUM_STATES))
    transitions[:, :, 3] = 0.25
    transitions[:, :, 5] = 0.5
    transitions[:, :, 8] = 0.25
    env = TabularMDPEnv(task=TabularMDPTask.from_arrays(transitions, np.zeros((10, 5))))
    for seed in range(30):
        env.reset(seed=seed)
        rng = seeding.np_random(seed)[0]
        rng.standard_normal()
        uniform = rng.random()
        expected = 3 if uniform < 0.25 else 5 if uniform < 0.75 else 8
        assert env.step(0)[4]["state"] == expected


@pytest.mark.parametrize("env_id", DISCRETE_IDS)
def test_same_generator_seed_same_tasks(env_id: str) -> None:
    family = family_class(env_id)
    np.random.seed(0)  # noqa: NPY002  (the legacy global state is what must not matter)
    first = family.sample_tasks(4, np.random.default_rng(123))
    np.random.seed(1)  # noqa: NPY002
    second = family.sample_tasks(4, np.random.default_rng(123))
    assert first == second
    assert first != family.sample_tasks(4, np.random.default_rng(124))
    assert all(isinstance(t, family.task_cls) for t in first)


def test_task_distributions() -> None:
    rng = np.random.default_rng(0)
    probs = np.array(
        [t.probs for t in family_class("MetaRL/Bandit-10arm-v0").sample_tasks(200, rng)]
    )
    assert probs.shape == (200, 10) and probs.min() >= 0.0 and probs.max() <= 1.0
    assert abs(probs.mean() - 0.5) < 0.02
    tasks = TabularMDPEnv.sample_tasks(100, rng)
    p = np.array([t.transitions for t in tasks]).reshape(100, NUM_STATES, NUM_ACTIONS, NUM_STATES)
    m = np.array([t.reward_means for t in tasks])
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-12)
    # Dirichlet(1) over 10 states: each probability has mean 0.1 and variance 9/1100.
    assert abs(p.mean() - 0.1) < 1e-3 and abs(p.var() - 9 / 1100) < 5e-4
    assert abs(m.mean() - 1.0) < 0.05 and abs(m.std() - 1.0) < 0.05


@pytest.mark.parametrize("env_id", DISCRETE_IDS)
def test_batched_equals_single_envs(env_id: str) -> None:
    family = family_class(env_id)
    num_envs = 6
    tasks = family.sample_tasks(num_envs, np.random.default_rng(0))
    batched = family.make_batched(num_envs, gym.spec(env_id).max_episode_steps)
    batched.set_tasks(tasks)
    singles = [make_family(env_id, task=task) for task in tasks]
    action_rng = np.random.default_rng(1)
    seeds = [int(s) for s in np.random.SeedSequence(5).generate_state(num_envs)]
    for episode in range(3):
        # Seeded once, then unseeded resets: each env's generator must continue.
        episode_seeds = seeds if episode == 0 else None
        obs, _ = batched.reset(seed=episode_seeds)
        for k, env in enumerate(singles):
            single_obs, _ = env.reset(seed=None if episode_seeds is None else seeds[k])
            np.testing.assert_array_equal(obs[k], single_obs)
        for _ in range(family.horizon):
            actions = action_rng.integers(0, batched.single_action_space.n, size=num_envs)
            obs, rewards, terminated, truncated, _ = batched.step(actions)
            for k, env in enumerate(singles):
                o, r, te, tr, _ = env.step(actions[k])
                np.testing.assert_array_equal(obs[k], o)
                assert rewards[k] == r and terminated[k] == te and truncated[k] == tr


def test_batched_rejects_bad_actions() -> None:
    batched = family_class("MetaRL/Bandit-5arm-v0").make_batched(3)
    batched.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        batched.step(np.zeros((3, 1), dtype=np.int64))
    with pytest.raises(ValueError, match=r"integers in \[0, 4\]"):
        batched.step(np.array([0, 5, 1]))
    with pytest.raises(ValueError, match=r"integers in \[0, 4\]"):
        batched.step(np.array([0.0, 1.5, 1.0]))
    # Integral floats are accepted as indices.
    assert batched.step(np.array([0.0, 1.0, 4.0]))[1].shape == (3,)


def test_batched_step_before_reset_is_an_error() -> None:
    batched = TabularMDPEnv.make_batched(2)
    with pytest.raises(gym.error.ResetNeeded):
        batched.step(np.array([0, 1]))


def test_single_env_rejects_bad_actions() -> None:
    env = gym.make("MetaRL/TabularMDP-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"integer in \[0, 4\]"):
        env.step(5)


@pytest.mark.parametrize(
    ("env_id", "task", "pattern"),
    [
        (
            "MetaRL/Bandit-5arm-v0",
            {"prob": [0.5] * 5},
            r"unknown Bandit5Task field 'prob'.*'probs'",
        ),
        (
            "MetaRL/Bandit-5arm-v0",
            {"probs": [0.5, 0.5, 1.5, 0.5, 0.5]},
            r"probs must lie in \[0, 1\]",
        ),
        ("MetaRL/Bandit-5arm-v0", {"probs": [0.5] * 4}, r"probs must have 5 components"),
        ("MetaRL/Bandit-5arm-v0", {"probs": "high"}, r"probs must be a number or a sequence"),
        ("MetaRL/Bandit-5arm-v0", Bandit10Task(probs=(0.5,) * 10), r"another family"),
        ("MetaRL/Bandit-5arm-v0", GoalTask2D(goal=(0.0, 0.0)), r"another family"),
        ("MetaRL/TabularMDP-v0", {"transitions": [0.1] * 500}, r"missing field\(s\): reward_means"),
        (
            "MetaRL/TabularMDP-v0",
            {"transitions": [0.2] * 500, "reward_means": [0.0] * 50},
            r"transitions must give.*summing to 1",
        ),
        (
            "MetaRL/TabularMDP-v0",
            {"transitions": [0.1] * 500, "reward_means": [float("nan")] * 50},
            r"reward_means must be finite",
        ),
    ],
)
def test_bad_task_is_rejected(env_id: str, task: object, pattern: str) -> None:
    env = make_family(env_id)
    with pytest.raises(ValueError, match=pattern):
        env.unwrapped.set_task(task)  # type: ignore[attr-defined]
    batched = family_class(env_id).make_batched(1)
    with pytest.raises(ValueError, match=pattern):
        batched.set_tasks([task])


def test_bandit_base_task_needs_an_arm_count() -> None:
    with pytest.raises(ValueError, match="single number"):
        BanditTask(probs=(0.5, 0.5))


@pytest.mark.parametrize("env_id", DISCRETE_IDS)
def test_task_serialisation_round_trip(env_id: str) -> None:
    family = family_class(env_id)
    task = family.sample_tasks(1, np.random.default_rng(3))[0]
    assert family.task_cls.from_dict(task.to_dict()) == task
    assert pickle.loads(pickle.dumps(task)) == task
    assert hash(pickle.loads(pickle.dumps(task))) == hash(task)


@pytest.mark.parametrize("env_id", [*DISCRETE_IDS, "MetaRL/Navigation2D-v0"])
def test_make_batched_rejects_a_zero_time_limit(env_id: str) -> None:
    with pytest.raises(ValueError, match="max_episode_steps must be ≥ 1, got 0"):
        family_class(env_id).make_batched(2, max_episode_steps=0)
