"""Random-dynamics families: the model is scaled as the task says, on every path."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from maml_rl.envs import (
    HalfCheetahRandParamsEnv,
    HopperRandParamsEnv,
    Walker2dRandParamsEnv,
)
from maml_rl.envs.mjbatch import native_batch_available
from maml_rl.envs.rand_params import RAND_PARAMS
from maml_rl.tasks import family_class, unwrap_family

IDS = {
    "MetaRL/HopperRandParams-v0": "Hopper-v5",
    "MetaRL/Walker2dRandParams-v0": "Walker2d-v5",
    "MetaRL/HalfCheetahRandParams-v0": "HalfCheetah-v5",
}
STEPPERS = [
    pytest.param("native", id="native"),
    pytest.param("loop", id="loop"),
]


def _skip_without(stepper: str) -> None:
    if stepper == "native" and not native_batch_available(per_sim_models=True):
        pytest.skip(f"mujoco {mujoco.__version__} has no mjb_expand (needs >= 3.17)")


@pytest.mark.parametrize("env_id", IDS)
def test_task_shapes_match_the_model(env_id: str) -> None:
    env = unwrap_family(gym.make(env_id))
    for name, size in env.task_cls.shapes.items():
        assert getattr(env.model, name).size == size, name
    assert set(env.task_cls.shapes) == set(RAND_PARAMS)


@pytest.mark.parametrize("env_id", IDS)
def test_fields_are_nominal_times_base_to_the_u_and_constants_follow(env_id: str) -> None:
    env = unwrap_family(gym.make(env_id))
    nominal = {name: getattr(env.model, name).copy() for name in RAND_PARAMS}
    subtree = env.model.body_subtreemass.copy()
    task = family_class(env_id).sample_tasks(1, np.random.default_rng(0))[0]
    env.set_task(task)
    for name, base in (("body_mass", 1.5), ("body_inertia", 1.5), ("geom_friction", 1.5)):
        u = np.asarray(getattr(task, name)).reshape(nominal[name].shape)
        np.testing.assert_allclose(getattr(env.model, name), nominal[name] * base**u, rtol=1e-15)
    u = np.asarray(task.dof_damping)  # type: ignore[attr-defined]
    np.testing.assert_allclose(env.model.dof_damping, nominal["dof_damping"] * 1.3**u, rtol=1e-15)
    # mj_setConst ran: the derived subtree masses follow the scaled masses.
    assert not np.allclose(env.model.body_subtreemass, subtree)
    np.testing.assert_allclose(env.model.body_subtreemass[0], env.model.body_mass.sum())
    # A second task is applied to the nominal fields, not on top of the first.
    env.set_task(env.default_task())
    for name in RAND_PARAMS:
        np.testing.assert_array_equal(getattr(env.model, name), nominal[name])
    np.testing.assert_array_equal(env.model.body_subtreemass, subtree)


@pytest.mark.parametrize(("env_id", "v5_id"), IDS.items())
def test_nominal_task_is_gymnasium_v5(env_id: str, v5_id: str) -> None:
    """With u = 0 the family is v5's env: same start, physics, obs, reward, termination."""
    ours, ref = gym.make(env_id), gym.make(v5_id)
    obs, _ = ours.reset(seed=7)
    np.testing.assert_array_equal(obs, ref.reset(seed=7)[0])
    rng = np.random.default_rng(0)
    for _ in range(60):
        # float64 actions: v5 would square float32 ones in float32 (this family: float64).
        action = rng.uniform(-1, 1, ours.action_space.shape)
        obs, reward, terminated, _, info = ours.step(action)
        ref_obs, ref_reward, ref_terminated, _, ref_info = ref.step(action)
        np.testing.assert_array_equal(obs, ref_obs)
        assert reward == pytest.approx(ref_reward, rel=1e-12, abs=1e-12)
        assert terminated == ref_terminated
        for key in ("x_velocity", "reward_ctrl", "reward_forward"):
            assert info[key] == pytest.approx(ref_info[key], rel=1e-12, abs=1e-15), key
        if terminated:
            break


@pytest.mark.parametrize("env_id", IDS)
def test_different_tasks_give_different_dynamics(env_id: str) -> None:
    cls = family_class(env_id)
    a, b = cls.sample_tasks(2, np.random.default_rng(1))
    trajectories = []
    for task in (a, b):
        env = gym.make(env_id, task=task)
        env.reset(seed=0)
        actions = np.random.default_rng(2).uniform(-1, 1, (5, *env.action_space.shape))
        trajectories.append([env.step(act.astype(np.float32))[0] for act in actions])
    assert not np.array_equal(trajectories[0][-1], trajectories[1][-1])


@pytest.mark.parametrize("stepper", STEPPERS)
@pytest.mark.parametrize("env_id", IDS)
def test_batched_env_follows_new_tasks_like_single_envs(env_id: str, stepper: str) -> None:
    """Tasks set again on a used batched env scale the nominal model, per simulation."""
    _skip_without(stepper)
    cls = family_class(env_id)
    rng = np.random.default_rng(5)
    batched = cls.make_batched(3, stepper=stepper, num_threads=2)
    batched.set_tasks(cls.sample_tasks(3, rng))
    batched.reset(seed=[0, 1, 2])
    batched.step(np.zeros((3, *batched.single_action_space.shape)))
    tasks = cls.sample_tasks(3, rng)
    batched.set_tasks(tasks)
    obs, _ = batched.reset(seed=[3, 4, 5])
    singles = [gym.make(env_id, task=t) for t in tasks]
    for k, env in enumerate(singles):
        np.testing.assert_array_equal(obs[k], env.reset(seed=3 + k)[0])
    actions = rng.uniform(-1, 1, (20, 3, *batched.single_action_space.shape))
    done = np.zeros(3, dtype=bool)
    for t, step_actions in enumerate(actions):
        obs, rewards, _, _, _ = batched.step(step_actions)
        for k, env in enumerate(singles):
            if done[k]:
                continue
            o, r, te, _, _ = env.step(step_actions[k])
            np.testing.assert_array_equal(obs[k], o, err_msg=f"env {k} step {t}")
            assert rewards[k] == r
            done[k] = te


@pytest.mark.parametrize("stepper", [None, *STEPPERS])
def test_a_new_task_keeps_the_current_state(stepper: str | None) -> None:
    """mj_setConst overwrites the simulation's state; setting a task must not."""
    if stepper is not None:
        _skip_without(stepper)
    rng = np.random.default_rng(0)
    task = HopperRandParamsEnv.sample_tasks(1, rng)[0]
    if stepper is None:
        env = unwrap_family(gym.make("MetaRL/HopperRandParams-v0"))
        env.reset(seed=0)
        env.step(np.ones(3, dtype=np.float32))
        before = (env.data.qpos.copy(), env.data.qvel.copy())
        env.set_task(task)
        after = (env.data.qpos, env.data.qvel)
    else:
        batched = HopperRandParamsEnv.make_batched(2, stepper=stepper, num_threads=1)
        batched.reset(seed=[0, 1])
        batched.step(np.ones((2, 3)))
        before = (batched._qpos.copy(), batched._qvel.copy())
        batched.set_tasks([task, task])
        batched._gather()
        after = (batched._qpos, batched._qvel)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_sampled_exponents_cover_their_range_per_field() -> None:
    tasks = Walker2dRandParamsEnv.sample_tasks(400, np.random.default_rng(0))
    for name in RAND_PARAMS:
        u = np.array([getattr(t, name) for t in tasks])
        assert u.shape == (400, Walker2dRandParamsEnv.task_cls.shapes[name])
        assert -3.0 <= u.min() < -2.95 and 2.95 < u.max() <= 3.0
        assert abs(u.mean()) < 0.1


@pytest.mark.parametrize(
    ("task", "match"),
    [
        (
            {"body_mass": (0.0,) * 4, "body_inertia": (0.0,) * 24, "dof_damping": (0.0,) * 9,
             "geom_friction": (0.0,) * 27},
            "HalfCheetahRandParamsTask.body_mass must have 8 components",
        ),
        (
            {"body_mass": (3.5,) * 8, "body_inertia": (0.0,) * 24, "dof_damping": (0.0,) * 9,
             "geom_friction": (0.0,) * 27},
            r"HalfCheetahRandParamsTask.body_mass must lie in \[-3, 3\]",
        ),
        ({"body_mass": (0.0,) * 8}, "HalfCheetahRandParamsTask is missing field"),
    ],
)  # fmt: skip
def test_bad_rand_params_task_says_which_field(task: dict, match: str) -> None:
    env = unwrap_family(gym.make("MetaRL/HalfCheetahRandParams-v0"))
    with pytest.raises(ValueError, match=match):
        env.set_task(task)


def test_native_stepper_expands_only_the_task_fields() -> None:
    if not native_batch_available(per_sim_models=True):
        pytest.skip(f"mujoco {mujoco.__version__} has no mjb_expand (needs >= 3.17)")
    env = HalfCheetahRandParamsEnv.make_batched(3, stepper="native", num_threads=1)
    tasks = HalfCheetahRandParamsEnv.sample_tasks(3, np.random.default_rng(0))
    env.set_tasks(tasks)
    assert set(env._model_rows) == set(RAND_PARAMS)
    single = unwrap_family(gym.make("MetaRL/HalfCheetahRandParams-v0", task=tasks[2]))
    np.testing.assert_array_equal(env._model_rows["body_mass"][2], single.model.body_mass)
    np.testing.assert_array_equal(
        env._model_rows["geom_friction"][2], single.model.geom_friction.reshape(-1)
    )
    env.close()


def test_without_per_sim_model_fields_auto_falls_back_to_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A MuJoCo with the batched simulator but no mjb_expand: the loop stepper, or one line."""
    import maml_rl.envs.locomotion as locomotion

    monkeypatch.setattr(locomotion, "native_batch_available", lambda per_sim=False: not per_sim)
    assert HopperRandParamsEnv.make_batched(2).stepper == "loop"
    with pytest.raises(RuntimeError, match=r"no per-simulation model fields.*stepper='loop'"):
        HopperRandParamsEnv.make_batched(2, stepper="native")
