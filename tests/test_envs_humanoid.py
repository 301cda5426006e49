"""Humanoid direction families: v5's body and costs, the task's forward term."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

from maml_rl.envs import HumanoidDirEnv
from maml_rl.tasks import unwrap_family


def _mass_center(model, data) -> np.ndarray:
    mass = model.body_mass[:, None]
    return (np.sum(mass * data.xipos, axis=0) / np.sum(mass))[:2]


def test_fwdback_forward_is_humanoid_v5() -> None:
    """Direction +1: observation, reward and termination of Gymnasium's Humanoid-v5
    with its four ``include_*_in_observation`` flags off (qpos[2:] and qvel)."""
    flags = ("cinert", "cvel", "qfrc_actuator", "cfrc_ext")
    ours, ref = (
        gym.make("MetaRL/HumanoidFwdBack-v0", task={"direction": 1.0}),
        gym.make("Humanoid-v5", **{f"include_{f}_in_observation": False for f in flags}),
    )
    obs, _ = ours.reset(seed=3)
    np.testing.assert_array_equal(obs, ref.reset(seed=3)[0])
    rng = np.random.default_rng(0)
    for _ in range(40):
        action = rng.uniform(-0.4, 0.4, 17)  # float64: v5 squares float32 in float32
        obs, reward, terminated, _, info = ours.step(action)
        ref_obs, ref_reward, ref_terminated, _, ref_info = ref.step(action)
        np.testing.assert_array_equal(obs, ref_obs)
        assert reward == pytest.approx(ref_reward, rel=1e-12, abs=1e-12)
        assert terminated == ref_terminated
        for key in ("x_velocity", "y_velocity", "reward_contact", "reward_ctrl"):
            assert info[key] == pytest.approx(ref_info[key], rel=1e-12, abs=1e-15), key
        if terminated:
            break
    assert obs.shape == (45,)


@pytest.mark.parametrize("angle", [0.3, 2.0, 4.5])
def test_direction_reward_by_hand(angle: float) -> None:
    env = gym.make("MetaRL/HumanoidDir-v0", task={"angle": angle})
    env.reset(seed=1)
    inner = env.unwrapped
    rng = np.random.default_rng(4)
    contact_seen = False
    for _ in range(15):
        before = _mass_center(inner.model, inner.data)
        action = rng.uniform(-0.4, 0.4, 17)
        _, reward, terminated, _, info = env.step(action)
        v = (_mass_center(inner.model, inner.data) - before) / 0.015
        forward = 1.25 * (math.cos(angle) * v[0] + math.sin(angle) * v[1])
        ctrl = 0.1 * float(np.sum(action * action))
        contact = min(5e-7 * float(np.sum(inner.data.cfrc_ext**2)), 10.0)
        contact_seen |= contact > 0
        z = inner.data.qpos[2]
        survive = 5.0 if 1.0 < z < 2.0 else 0.0
        assert info["reward_forward"] == pytest.approx(forward, rel=1e-9, abs=1e-9)
        assert reward == pytest.approx(forward + survive - ctrl - contact, rel=1e-9, abs=1e-9)
        assert terminated == (survive == 0.0)
        if terminated:
            break
    assert contact_seen  # the contact cost was exercised


def test_humanoid_terminates_when_the_torso_leaves_1_to_2_m() -> None:
    env = gym.make("MetaRL/HumanoidDir-v0")
    env.reset(seed=0)
    inner = env.unwrapped
    qpos = inner.init_qpos.copy()
    qpos[2] = 0.5
    inner.set_state(qpos, np.zeros(inner.model.nv))
    _, _, terminated, truncated, info = env.step(np.zeros(17))
    assert terminated and not truncated and info["reward_survive"] == 0.0
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(np.zeros(17))
    assert not terminated and info["reward_survive"] == 5.0


def test_direction_tasks_cover_the_circle() -> None:
    angles = np.array(
        [t.angle for t in HumanoidDirEnv.sample_tasks(2000, np.random.default_rng(0))]
    )
    assert 0.0 <= angles.min() < 0.01 and 2 * math.pi - 0.01 < angles.max() < 2 * math.pi
    family = unwrap_family(gym.make("MetaRL/HumanoidDir-v0"))
    with pytest.raises(ValueError, match=r"PlanarDirectionTask.angle must lie in \[0, 6.28319\]"):
        family.set_task({"angle": 7.0})
