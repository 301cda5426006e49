"""Task families: Gymnasium compliance, reward formulas, batched == single envs."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from maml_rl.cli import main as cli_main
from maml_rl.envs import (
    AntDirEnv,
    AntGoalEnv,
    AntVelEnv,
    HalfCheetahDirEnv,
    HalfCheetahVelEnv,
)
from maml_rl.envs.locomotion import mujoco_warnings_to_python, sum_squares
from maml_rl.envs.mjbatch import NativeBatch, native_batch_available
from maml_rl.tasks import family_class, family_ids, make_family, unwrap_family

MUJOCO_IDS = [
    "MetaRL/HalfCheetahVel-v0",
    "MetaRL/HalfCheetahDir-v0",
    "MetaRL/HalfCheetahVelSparse-v0",
    "MetaRL/AntVel-v0",
    "MetaRL/AntDir-v0",
    "MetaRL/AntGoal-v0",
    "MetaRL/HopperRandParams-v0",
    "MetaRL/Walker2dRandParams-v0",
    "MetaRL/HalfCheetahRandParams-v0",
    "MetaRL/HumanoidDir-v0",
    "MetaRL/HumanoidFwdBack-v0",
]
# The shipped families (other test modules register test-only ones).
BATCHED_IDS = [
    i
    for i in family_ids()
    if i.startswith("MetaRL/") and callable(getattr(family_class(i), "make_batched", None))
]


def test_every_builtin_family_is_registered() -> None:
    navigation = {"MetaRL/Navigation2D-v0", "MetaRL/Navigation2DSparse-v0"}
    assert set(MUJOCO_IDS) | navigation <= set(family_ids())
    assert set(MUJOCO_IDS) <= set(BATCHED_IDS)


@pytest.mark.parametrize("env_id", family_ids())
def test_check_env(env_id: str) -> None:
    env = gym.make(env_id)
    with warnings.catch_warnings():
        # Unbounded Box observations (as in Gymnasium's own MuJoCo envs) warn.
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id", family_ids())
def test_registered_horizon_and_default_task(env_id: str) -> None:
    cls = family_class(env_id)
    env = gym.make(env_id)
    assert env.spec is not None and env.spec.max_episode_steps == cls.horizon
    family = unwrap_family(env)
    assert isinstance(family.task, cls.task_cls)
    env.close()


# -- reward formulas against hand computations -----------------------------------------


def _prepare(env_id: str, task: dict, seed: int = 3) -> tuple[gym.Env, np.ndarray]:
    env = gym.make(env_id, task=task)
    env.reset(seed=seed)
    inner = env.unwrapped
    rng = np.random.default_rng(seed)
    # A known, non-trivial state: set_state as a user would.
    qpos = inner.init_qpos + rng.uniform(-0.2, 0.2, inner.model.nq)
    qvel = rng.normal(0.0, 1.0, inner.model.nv)
    inner.set_state(qpos, qvel)
    action = rng.uniform(-1.0, 1.0, inner.model.nu).astype(np.float32)
    return env, action


@pytest.mark.parametrize(
    ("env_id", "task", "term"),
    [
        ("MetaRL/HalfCheetahVel-v0", {"velocity": 1.7}, lambda v: -abs(v - 1.7)),
        ("MetaRL/HalfCheetahDir-v0", {"direction": -1.0}, lambda v: -v),
        ("MetaRL/HalfCheetahDir-v0", {"direction": 1.0}, lambda v: v),
    ],
)
def test_half_cheetah_reward_by_hand(env_id: str, task: dict, term) -> None:
    env, action = _prepare(env_id, task)
    data = env.unwrapped.data
    x_before = float(data.qpos[0])
    obs, reward, terminated, truncated, info = env.step(action)
    v_x = (float(data.qpos[0]) - x_before) / 0.05  # dt = 5 × 0.01 s
    a = action.astype(np.float64)
    expected = term(v_x) - 0.05 * float(np.sum(a * a))
    assert reward == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert info["x_velocity"] == pytest.approx(v_x, rel=1e-12)
    assert info["reward_ctrl"] == pytest.approx(-0.05 * float(np.sum(a * a)), rel=1e-12)
    assert not terminated and not truncated
    assert obs.shape == (17,)
    np.testing.assert_array_equal(obs, np.concatenate([data.qpos[1:], data.qvel]))


def _ant_expected(inner, action: np.ndarray, xy_before: np.ndarray, task_term) -> tuple:
    data = inner.data
    velocity = (data.xpos[1, :2] - xy_before) / 0.05
    a = action.astype(np.float64)
    ctrl = 0.005 * float(np.sum(a * a))
    contact = 0.0005 * float(np.sum(np.clip(data.cfrc_ext, -1.0, 1.0) ** 2))
    z = data.qpos[2]
    healthy = bool(
        np.isfinite(data.qpos).all() and np.isfinite(data.qvel).all() and 0.2 <= z <= 1.0
    )
    survive = 1.0 if healthy else 0.0
    return task_term(velocity, data.qpos[:2]) - ctrl - contact + survive, not healthy, contact


@pytest.mark.parametrize(
    ("env_id", "task", "term"),
    [
        ("MetaRL/AntVel-v0", {"velocity": 2.5}, lambda v, xy: 1.0 - abs(v[0] - 2.5)),
        ("MetaRL/AntDir-v0", {"direction": -1.0}, lambda v, xy: -v[0]),
        (
            "MetaRL/AntGoal-v0",
            {"goal": (1.5, -2.0)},
            lambda v, xy: -(abs(xy[0] - 1.5) + abs(xy[1] + 2.0)) + 4.0,
        ),
    ],
)
def test_ant_reward_by_hand(env_id: str, task: dict, term) -> None:
    env, action = _prepare(env_id, task)
    inner = env.unwrapped
    for _ in range(5):  # a few steps, so that the feet touch the ground
        xy_before = inner.data.xpos[1, :2].copy()
        obs, reward, terminated, _, info = env.step(action)
        expected, exp_terminated, contact = _ant_expected(inner, action, xy_before, term)
        assert reward == pytest.approx(expected, rel=1e-12, abs=1e-12)
        assert terminated == exp_terminated
        assert info["reward_contact"] == pytest.approx(-contact, rel=1e-12, abs=1e-15)
    assert obs.shape == (105,)
    # Contact forces actually reached the reward (the test would be vacuous otherwise).
    assert np.any(inner.data.cfrc_ext[1:] != 0.0)


def test_ant_terminates_when_unhealthy_without_survive_bonus() -> None:
    env = gym.make("MetaRL/AntVel-v0")
    env.reset(seed=0)
    inner = env.unwrapped
    qpos = inner.init_qpos.copy()
    qpos[2] = 1.5  # torso far above the healthy range [0.2, 1.0]
    inner.set_state(qpos, np.zeros(inner.model.nv))
    _, _, terminated, truncated, info = env.step(np.zeros(8, dtype=np.float32))
    assert terminated and not truncated
    assert info["reward_survive"] == 0.0
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(np.zeros(8, dtype=np.float32))
    assert not terminated and info["reward_survive"] == 1.0


@pytest.mark.parametrize(
    ("env_id", "v5_id"),
    [("MetaRL/HalfCheetahDir-v0", "HalfCheetah-v5"), ("MetaRL/AntDir-v0", "Ant-v5")],
)
def test_dynamics_and_observations_are_gymnasium_v5(env_id: str, v5_id: str) -> None:
    """Only the reward differs from Gymnasium's v5 env: same start, physics, obs."""
    ours, ref = gym.make(env_id), gym.make(v5_id)
    obs, _ = ours.reset(seed=7)
    ref_obs, _ = ref.reset(seed=7)
    np.testing.assert_array_equal(obs, ref_obs)
    rng = np.random.default_rng(0)
    for _ in range(20):
        action = rng.uniform(-1, 1, ours.action_space.shape).astype(np.float32)
        obs, _, _, _, info = ours.step(action)
        ref_obs, _, _, _, ref_info = ref.step(action)
        np.testing.assert_array_equal(obs, ref_obs)
        assert info["x_velocity"] == ref_info["x_velocity"]
        if "reward_contact" in info:
            assert info["reward_contact"] == pytest.approx(ref_info["reward_contact"], rel=1e-12)


# -- task sampling ------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", family_ids())
def test_sample_tasks_depends_only_on_the_generator(env_id: str) -> None:
    cls = family_class(env_id)
    np.random.seed(1)  # noqa: NPY002  (the global state must not matter)
    first = cls.sample_tasks(16, np.random.default_rng(123))
    np.random.seed(2)  # noqa: NPY002
    second = cls.sample_tasks(16, np.random.default_rng(123))
    assert first == second
    assert len(set(first)) > 1
    assert cls.sample_tasks(16, np.random.default_rng(124)) != first
    assert all(isinstance(t, cls.task_cls) for t in first)


def test_task_distributions_cover_their_ranges() -> None:
    rng = np.random.default_rng(0)
    v = np.array([t.velocity for t in HalfCheetahVelEnv.sample_tasks(2000, rng)])
    assert 0.0 <= v.min() < 0.05 and 1.95 < v.max() <= 2.0
    v = np.array([t.velocity for t in AntVelEnv.sample_tasks(2000, rng)])
    assert 0.0 <= v.min() < 0.05 and 2.95 < v.max() <= 3.0
    for cls in (HalfCheetahDirEnv, AntDirEnv):
        d = np.array([t.direction for t in cls.sample_tasks(2000, rng)])
        assert set(d) == {-1.0, 1.0} and 0.45 < (d > 0).mean() < 0.55
    g = np.array([t.goal for t in AntGoalEnv.sample_tasks(2000, rng)])
    assert g.shape == (2000, 2) and -3.0 <= g.min() < -2.9 and 2.9 < g.max() <= 3.0


# -- batched env == single envs -----------------------------------------------------------


def _run_equivalence(
    env_id: str, num_envs: int, seeds: list[int], steps: int, rng, **make_kwargs
) -> int:
    """Step a batched env and ``num_envs`` single envs together; returns #early ends."""
    cls = family_class(env_id)
    tasks = cls.sample_tasks(num_envs, rng)
    batched = cls.make_batched(num_envs, **make_kwargs)
    batched.set_tasks(tasks)
    singles = [gym.make(env_id, task=t) for t in tasks]
    early = 0
    for episode in range(2):
        # The second episode resets without seeds: each env's generator continues.
        episode_seeds = seeds if episode == 0 else None
        obs, _ = batched.reset(seed=episode_seeds)
        for k, env in enumerate(singles):
            single_obs, _ = env.reset(seed=None if episode_seeds is None else seeds[k])
            np.testing.assert_array_equal(obs[k], single_obs)
        done = np.zeros(num_envs, dtype=bool)
        space = batched.single_action_space
        for t in range(steps):
            if isinstance(space, gym.spaces.Discrete):
                actions = rng.integers(space.start, space.start + space.n, size=num_envs)
            else:
                # Beyond the action bounds on purpose: clipping must agree too.
                scale = 1.5 * np.maximum(np.abs(space.low), np.abs(space.high))
                actions = (scale * rng.uniform(-1, 1, (num_envs, *space.shape))).astype(np.float32)
            obs, rewards, terminated, truncated, _ = batched.step(actions)
            for k, env in enumerate(singles):
                if done[k]:
                    continue
                o, r, te, tr, _ = env.step(actions[k])
                np.testing.assert_array_equal(obs[k], o, err_msg=f"env {k} step {t}")
                assert rewards[k] == r, f"env {k} step {t}: {rewards[k]!r} != {r!r}"
                assert (terminated[k], truncated[k]) == (te, tr), f"env {k} step {t}"
                if te and t < steps - 1:
                    early += 1
                done[k] = te or tr
            if done.all():
                break
        assert done.all()
    return early


@pytest.mark.parametrize("env_id", BATCHED_IDS)
def test_batched_env_equals_single_envs(env_id: str) -> None:
    steps = family_class(env_id).horizon
    _run_equivalence(env_id, 3, [5, 2**31 - 1, 17], steps, np.random.default_rng(11))


# The MuJoCo families' two steppers: MuJoCo's batched simulator on 1 and 2 threads,
# and the Python loop over MjData that older MuJoCo versions use.
STEPPERS = [
    pytest.param({"stepper": "native", "num_threads": 1}, id="native-1thread"),
    pytest.param({"stepper": "native", "num_threads": 2}, id="native-2threads"),
    pytest.param({"stepper": "loop"}, id="loop"),
]
needs_native = pytest.mark.skipif(
    not native_batch_available(),
    reason=f"mujoco {mujoco.__version__} has no batched simulator (needs >= 3.17)",
)


def _check_stepper(make_kwargs: dict) -> None:
    if make_kwargs["stepper"] == "native" and not native_batch_available():
        pytest.skip(f"mujoco {mujoco.__version__} has no batched simulator (needs >= 3.17)")


@pytest.mark.parametrize("make_kwargs", STEPPERS)
@pytest.mark.parametrize("env_id", MUJOCO_IDS)
def test_mujoco_steppers_equal_single_envs(env_id: str, make_kwargs: dict) -> None:
    _check_stepper(make_kwargs)
    steps = family_class(env_id).horizon
    _run_equivalence(env_id, 3, [5, 2**31 - 1, 17], steps, np.random.default_rng(11), **make_kwargs)


TERMINATING_IDS = [
    "MetaRL/AntDir-v0",
    "MetaRL/HopperRandParams-v0",
    "MetaRL/Walker2dRandParams-v0",
    "MetaRL/HumanoidDir-v0",
]


@pytest.mark.parametrize("make_kwargs", STEPPERS)
@pytest.mark.parametrize("env_id", TERMINATING_IDS)
def test_batched_env_terminates_early_like_single_envs(env_id: str, make_kwargs: dict) -> None:
    _check_stepper(make_kwargs)
    early = _run_equivalence(
        env_id,
        4,
        [0, 1, 2, 3],
        family_class(env_id).horizon,
        np.random.default_rng(0),
        **make_kwargs,
    )
    assert early >= 1  # the comparison covered early terminations


@needs_native
def test_a_batch_steps_alike_with_one_mjdata_per_thread_or_per_simulation() -> None:
    """The non-persistent batch (one MjData per thread, the faster) steps bit for bit as
    the persistent one, also across resets of some simulations; only functions run on a
    step's own MjData need persistence, and a non-persistent batch refuses them."""
    model = HalfCheetahVelEnv().model
    rng = np.random.default_rng(4)
    batches = [NativeBatch(model, 6, 2, persistent=p) for p in (True, False)]
    start = rng.uniform(-0.3, 0.3, size=(6, model.nq))
    controls = rng.uniform(-1.5, 1.5, size=(60, 6, model.nu))
    for b in batches:
        b.reset()
        b.qpos[:] = start
        b.forward()
        for t, ctrl in enumerate(controls):
            b.ctrl[:] = ctrl
            b.step(None if t % 3 else np.array([0, 2, 5]), nstep=5)
            if t == 30:
                b.reset(np.array([1, 4]))
                b.forward(np.array([1, 4]))
    persistent, per_thread = batches
    assert np.array_equal(persistent.state, per_thread.state)
    assert (persistent.persistent, per_thread.persistent) == (True, False)
    with pytest.raises(RuntimeError, match="persistent=True"):
        per_thread.rne_post_constraint()
    for b in batches:
        b.close()
    # The families pick: Ant reads contact forces (persistent), HalfCheetah does not.
    for cls, persistent_batch in ((AntVelEnv, True), (HalfCheetahVelEnv, False)):
        env = cls.make_batched(2, stepper="native")
        assert env._batch is not None and env._batch.persistent is persistent_batch
        env.close()


@needs_native
def test_native_stepper_uses_the_threads_asked_for_and_closes() -> None:
    env = HalfCheetahVelEnv.make_batched(4, num_threads=2, stepper="native")
    assert (env.stepper, env.num_threads) == ("native", 2)
    # Never more threads than simulations.
    assert HalfCheetahVelEnv.make_batched(1, num_threads=2, stepper="native").num_threads == 1
    env.reset(seed=0)
    env.close()
    with pytest.raises(gym.error.ClosedEnvironmentError):
        env.reset(seed=0)
    with pytest.raises(ValueError, match="stepper must be"):
        HalfCheetahVelEnv.make_batched(2, stepper="threads")
    with pytest.raises(ValueError, match="num_threads must be"):
        HalfCheetahVelEnv.make_batched(2, num_threads=0)


def test_navigation_dynamics_reward_and_goal_termination_by_hand() -> None:
    env = gym.make("MetaRL/Navigation2D-v0")
    env.unwrapped.set_task({"goal": (0.25, -0.13)})
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    # Actions are clipped to [-1, 1] and scaled by 0.1: (3, -0.5) moves by (0.1, -0.05).
    obs, reward, terminated, truncated, info = env.step(np.array([3.0, -0.5], np.float32))
    np.testing.assert_allclose(obs, [0.1, -0.05], rtol=1e-6)
    assert reward == pytest.approx(-np.hypot(0.15, 0.08))
    assert info["distance"] == pytest.approx(np.hypot(0.15, 0.08))
    assert not terminated and not truncated
    # Within 0.01 in one coordinate only: still running.
    obs, _, terminated, _, _ = env.step(np.array([1.0, -0.75], np.float32))
    np.testing.assert_allclose(obs, [0.2, -0.125], rtol=1e-6)
    assert not terminated
    # Within 0.01 in both: the episode ends, and the last reward is still paid.
    _, reward, terminated, truncated, _ = env.step(np.array([0.45, 0.0], np.float32))
    assert terminated and not truncated
    assert reward == pytest.approx(-np.hypot(0.005, 0.005), abs=1e-9)


def test_batched_navigation_terminates_at_the_goal_like_single_envs() -> None:
    # Goals one step of (+1, +1) away, and noisy actions around it: some envs hit
    # the goal box early, the others run to the time limit.
    rng = np.random.default_rng(3)
    env_id = "MetaRL/Navigation2D-v0"
    batched = family_class(env_id).make_batched(8)
    tasks = [{"goal": (0.1 + 0.01 * g, 0.1)} for g in rng.uniform(-1.5, 1.5, size=8)]
    batched.set_tasks(tasks)
    batched.reset(seed=list(range(8)))
    singles = [gym.make(env_id) for _ in range(8)]
    for env, task in zip(singles, tasks, strict=True):
        env.unwrapped.set_task(task)
        env.reset(seed=0)
    actions = np.ones((8, 2), np.float32)
    _, rewards, terminated, _, _ = batched.step(actions)
    for k, env in enumerate(singles):
        _, r, te, _, _ = env.step(actions[k])
        assert (rewards[k], terminated[k]) == (r, te)
    assert 0 < terminated.sum() < 8  # both outcomes were covered


def test_batched_env_shapes_and_errors() -> None:
    env = HalfCheetahVelEnv.make_batched(4, max_episode_steps=3)
    obs, _ = env.reset(seed=0)  # int seed: env k gets seed + k, as Gymnasium's vector envs
    single = gym.make("MetaRL/HalfCheetahVel-v0")
    np.testing.assert_array_equal(obs[2], single.reset(seed=2)[0])
    assert obs.shape == (4, 17) and obs.dtype == np.float64
    for t in range(3):
        obs, rewards, terminated, truncated, info = env.step(np.zeros((4, 6)))
        assert rewards.shape == terminated.shape == truncated.shape == (4,)
        assert info["reward_ctrl"].shape == (4,)
        assert truncated.all() == (t == 2)
    with pytest.raises(ValueError, match=r"actions must have shape \(4, 6\)"):
        env.step(np.zeros((3, 6)))
    with pytest.raises(ValueError, match="reset needs 4 seeds"):
        env.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="set_tasks needs 4 tasks"):
        env.set_tasks([{"velocity": 1.0}])
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\]"):
        env.set_tasks([{"velocity": 2.5}] * 4)
    with pytest.raises(ValueError, match="num_envs must be"):
        AntGoalEnv.make_batched(0)


def test_sum_squares_is_exact_and_independent_of_batch_size() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 84)) * 10.0 ** rng.integers(-8, 8, size=(37, 84))
    batched = sum_squares(x)
    np.testing.assert_allclose(batched, np.sum(x * x, axis=1), rtol=1e-14)
    singles = np.array([sum_squares(row[None])[0] for row in x])
    np.testing.assert_array_equal(batched, singles)


# -- errors and the CLI ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_id", "task", "match"),
    [
        (
            "MetaRL/HalfCheetahVel-v0",
            {"velocty": 1.0},
            "unknown HalfCheetahVelTask field 'velocty'.*did you mean 'velocity'",
        ),
        (
            "MetaRL/HalfCheetahVel-v0",
            {"velocity": 2.5},
            r"HalfCheetahVelTask.velocity must lie in \[0, 2\], got 2.5",
        ),
        ("MetaRL/AntVel-v0", {"velocity": -0.1}, r"AntVelTask.velocity must lie in \[0, 3\]"),
        ("MetaRL/AntVel-v0", {"velocity": "fast"}, "AntVelTask.velocity must be a number"),
        (
            "MetaRL/AntDir-v0",
            {"direction": 0.5},
            r"DirectionTask.direction must be one of \{-1, 1\}",
        ),
        ("MetaRL/AntGoal-v0", {"goal": (1.0, 2.0, 3.0)}, "AntGoalTask.goal must have 2 components"),
        ("MetaRL/AntGoal-v0", {"goal": (1.0, 4.0)}, r"AntGoalTask.goal must lie in \[-3, 3\]"),
        ("MetaRL/AntGoal-v0", {}, "AntGoalTask is missing field"),
    ],
)
def test_bad_task_names_the_field_and_the_range(env_id: str, task: dict, match: str) -> None:
    env = unwrap_family(gym.make(env_id))
    with pytest.raises(ValueError, match=match):
        env.set_task(task)
    with pytest.raises(ValueError, match=match):
        gym.make(env_id, task=task)


def test_task_of_another_family_is_rejected() -> None:
    cheetah = unwrap_family(gym.make("MetaRL/HalfCheetahVel-v0"))
    ant_task = AntVelEnv.sample_tasks(1, np.random.default_rng(0))[0]
    with pytest.raises(ValueError, match="expected a HalfCheetahVelTask, got a AntVelTask"):
        cheetah.set_task(ant_task)
    nav_task = family_class("MetaRL/Navigation2D-v0").sample_tasks(1, np.random.default_rng(0))[0]
    with pytest.raises(ValueError, match="expected a AntGoalTask, got a GoalTask2D"):
        unwrap_family(gym.make("MetaRL/AntGoal-v0")).set_task(nav_task)


def test_unknown_id_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'MetaRL/HalfCheetahVel-v0'"):
        make_family("MetaRL/HalfCheetaVel-v0")
    with pytest.raises(ValueError, match="did you mean 'MetaRL/AntGoal-v0'"):
        family_class("MetaRL/AntGoal-v1")


def test_bad_sample_tasks_arguments() -> None:
    with pytest.raises(ValueError, match=r"numpy\.random\.Generator"):
        AntVelEnv.sample_tasks(3, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integer ≥ 0"):
        AntVelEnv.sample_tasks(-1, np.random.default_rng(0))


def test_env_pickles_with_its_current_task() -> None:
    env = unwrap_family(gym.make("MetaRL/AntGoal-v0"))
    env.set_task({"goal": (2.0, -1.0)})
    copy = pickle.loads(pickle.dumps(env))
    assert copy.task == env.task
    obs, _ = copy.reset(seed=4)
    np.testing.assert_array_equal(obs, env.reset(seed=4)[0])


def test_cli_lists_every_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["envs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for env_id in family_ids():
        cls = family_class(env_id)
        (line,) = [ln for ln in lines if ln.split()[0] == env_id]
        # The registered time limit (a family registered with gymnasium.register may set
        # its own, e.g. tests/test_plugins.py's).
        assert line.split()[1] == str(gym.spec(env_id).max_episode_steps)
        if env_id.startswith("MetaRL/"):
            assert gym.spec(env_id).max_episode_steps == cls.horizon
        assert cls.task_distribution in line


@pytest.mark.parametrize("env_id", ["MetaRL/HalfCheetahVel-v0", "MetaRL/AntDir-v0"])
def test_building_a_mujoco_family_leaves_no_log_file_and_no_handler(
    env_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MuJoCo's default warning handler appends to MUJOCO_LOG.TXT in the working folder;
    # half_cheetah.xml's deprecated settotalmass used to add a line per env built.
    monkeypatch.chdir(tmp_path)
    before = mujoco.get_mju_user_warning()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the known warning is dropped, not re-raised
        make_family(env_id).close()
        family_class(env_id).make_batched(2).close()
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert mujoco.get_mju_user_warning() is before


def test_other_mujoco_warnings_become_python_warnings() -> None:
    with mujoco_warnings_to_python(ignore=("known",)):
        handler = mujoco.get_mju_user_warning()
        assert handler is not None
        with pytest.warns(RuntimeWarning, match="MuJoCo: something else"):
            handler("something else")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            handler("a known one")  # dropped


# -- sparse-reward families ------------------------------------------------------------


def test_navigation_sparse_pays_only_within_the_radius() -> None:
    env = gym.make("MetaRL/Navigation2DSparse-v0", task={"angle": np.pi / 2})  # goal (0, 1)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    rewards, dense = [], []
    for _ in range(11):
        _, reward, terminated, truncated, info = env.step(np.array([0.0, 1.0], np.float32))
        assert not terminated and not truncated
        rewards.append(reward)
        dense.append(info["reward_dense"])
    distance = -np.array(dense)
    # At (0, 0.1 t), 1 − t/10 from the goal: paid from t = 8 (0.2 away) on, nothing before.
    np.testing.assert_allclose(distance[:10], 1.0 - 0.1 * np.arange(1, 11), atol=1e-12)
    inside = distance <= 0.2
    assert not inside[:7].any() and inside[8:].all()  # t = 8 sits on the edge
    np.testing.assert_array_equal(np.array(rewards)[~inside], 0.0)
    np.testing.assert_allclose(np.array(rewards)[inside], 1.0 - distance[inside], rtol=1e-15)
    assert env.spec is not None and env.spec.max_episode_steps == 50


def test_navigation_sparse_goals_lie_on_the_upper_half_circle() -> None:
    cls = family_class("MetaRL/Navigation2DSparse-v0")
    tasks = cls.sample_tasks(500, np.random.default_rng(0))
    angles = np.array([t.angle for t in tasks])
    assert 0.0 <= angles.min() < 0.02 and np.pi - 0.02 < angles.max() <= np.pi
    env = unwrap_family(gym.make("MetaRL/Navigation2DSparse-v0"))
    env.set_task(tasks[0])
    np.testing.assert_allclose(env._goal, [np.cos(angles[0]), np.sin(angles[0])], rtol=1e-15)
    with pytest.raises(ValueError, match=r"HalfCircleGoalTask.angle must lie in \[0, 3.14159\]"):
        env.set_task({"angle": -0.1})


def test_half_cheetah_vel_sparse_reward_by_hand_and_dense_in_info() -> None:
    dense_env, _ = _prepare("MetaRL/HalfCheetahVel-v0", {"velocity": 0.4})
    env, action = _prepare("MetaRL/HalfCheetahVelSparse-v0", {"velocity": 0.4})
    rng = np.random.default_rng(1)
    paid = unpaid = 0
    for _ in range(30):
        _, dense_reward, *_ = dense_env.step(action)
        _, reward, terminated, _, info = env.step(action)
        gap = abs(info["x_velocity"] - 0.4)
        assert info["reward_dense"] == dense_reward  # HalfCheetahVel's reward, same state
        assert reward == (1.0 - gap if gap < 0.5 else 0.0)
        assert not terminated
        paid += reward > 0
        unpaid += reward == 0
        action = rng.uniform(-1, 1, 6).astype(np.float32)
    assert paid and unpaid  # both sides of the band were seen
