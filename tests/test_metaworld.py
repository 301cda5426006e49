"""Meta-World's ML1 / ML10 / ML45 as task families (``maml_rl.envs.metaworld``).

* without the ``metaworld`` extra, ``import maml_rl.envs`` works and a ``MetaWorld/`` id
  says in one line how to install it; with it, ``import maml_rl.envs`` still does not
  import ``metaworld``;
* the hard-coded environment lists are Meta-World's own;
* the families pass Gymnasium's ``check_env``; a family env plays exactly as Meta-World's
  own env given Meta-World's own task, also after switching environments (pooled envs);
* the train and test sets are Meta-World's (``ML1(name, seed=0)`` …), fixed, disjoint,
  picklable, and leave the global NumPy state alone;
* ``info["success"]`` is Meta-World's flag: a controller that drives the hand to a reach
  goal succeeds, standing still does not;
* a tiny training through the Trainer gives the same batches and success rates on
  ``sync`` and ``process`` workers, and ``evaluate`` reports the test-set success rate
  with its interval.

Everything but the first group needs the extra (``pip install "maml-rl[metaworld]"``,
which installs mujoco 3.3.0: CI runs it in a second virtual environment).
"""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from maml_rl.cli import main as cli_main
from maml_rl.config import load_config
from maml_rl.envs import metaworld as mwf
from maml_rl.evaluation import EvalSettings, evaluate, format_summary
from maml_rl.tasks import family_class, family_ids, family_spec, make_family, unwrap_family
from maml_rl.trainer import Trainer

from conftest import METAWORLD_PRESETS

HAVE_METAWORLD = importlib.util.find_spec("metaworld") is not None
needs_metaworld = pytest.mark.skipif(
    not HAVE_METAWORLD,
    reason="needs the metaworld extra: pip install 'maml-rl[metaworld]' (mujoco 3.3.0)",
)
pytestmark = pytest.mark.metaworld

REACH = "MetaWorld/ML1-reach-v3"
PUSH = "MetaWorld/ML1-push-v3"
ML10 = "MetaWorld/ML10-v3"
ML45 = "MetaWorld/ML45-v3"


# -- with or without the extra ---------------------------------------------------------------


def test_importing_the_families_does_not_import_metaworld() -> None:
    code = (
        "import sys, maml_rl.envs, maml_rl.envs.metaworld\n"
        "from maml_rl.tasks import family_ids\n"
        "ids = family_ids()\n"
        "print('metaworld' in sys.modules, sum(i.startswith('MetaWorld/') for i in ids))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "52" if HAVE_METAWORLD else "0"]


@pytest.mark.skipif(HAVE_METAWORLD, reason="checks the message shown without the extra")
def test_without_the_extra_an_id_says_how_to_install_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"pip install 'maml-rl\[metaworld\]'.*mujoco==3\.3\.0"):
        family_spec(REACH)
    code = cli_main(["train", f"env.id={REACH}", "--logdir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith(f"maml-rl train: error: {REACH}: Meta-World is not installed")
    assert list(tmp_path.iterdir()) == []


# -- with the extra --------------------------------------------------------------------------


@needs_metaworld
def test_the_environment_lists_are_metaworlds() -> None:
    from metaworld import env_dict

    assert list(mwf.ENV_NAMES) == list(env_dict.ALL_V3_ENVIRONMENTS)
    assert list(mwf.ML10_TRAIN) == list(env_dict.ML10_V3["train"])
    assert list(mwf.ML10_TEST) == list(env_dict.ML10_V3["test"])
    assert list(mwf.ML45_TRAIN) == list(env_dict.ML45_V3["train"])
    assert list(mwf.ML45_TEST) == list(env_dict.ML45_V3["test"])
    for name, cls in env_dict.ALL_V3_ENVIRONMENTS.items():
        env = cls()
        assert env._random_reset_space.shape == (mwf.RAND_VEC_SIZES[name],), name
        env.close()
        assert family_spec(mwf.ml1_env_id(name)).max_episode_steps == 500
        assert family_class(mwf.ml1_env_id(name)) is mwf.ml1_class(name)


@needs_metaworld
@pytest.mark.parametrize("env_id", [REACH, PUSH, ML10, ML45])
def test_check_env(env_id: str) -> None:
    env = make_family(env_id)
    assert env.spec is not None and env.spec.max_episode_steps == 500
    assert env.observation_space.shape == (39,) and env.action_space.shape == (4,)
    family = unwrap_family(env)
    assert family.reports_success and isinstance(family.task, mwf.MetaWorldTask)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(infinity|maximum and minimum).*")
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


def _metaworld_reference(task: mwf.MetaWorldTask, actions: np.ndarray) -> list[tuple]:
    """Meta-World's own env, freshly built, given Meta-World's own task."""
    from metaworld import env_dict

    env = env_dict.ALL_V3_ENVIRONMENTS[task.env_name]()
    env.set_task(task.to_metaworld())
    obs, _ = env.reset()
    out = [(obs, 0.0, False)]
    for a in actions:
        obs, reward, _, _, info = env.step(a)
        out.append((obs, float(reward), bool(info["success"])))
    env.close()
    return out


def _play(env: gym.Env, task: mwf.MetaWorldTask, actions: np.ndarray, seed: int) -> list[tuple]:
    unwrap_family(env).set_task(task)
    obs, _ = env.reset(seed=seed)
    out = [(obs, 0.0, False)]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        assert not terminated and not truncated
        out.append((obs, reward, info["success"]))
    return out


def _assert_same(got: list[tuple], want: list[tuple]) -> None:
    assert len(got) == len(want)
    for (o1, r1, s1), (o2, r2, s2) in zip(got, want, strict=True):
        np.testing.assert_array_equal(o1, o2)
        assert (r1, s1) == (r2, s2)


@needs_metaworld
def test_a_family_env_plays_exactly_as_metaworlds_own_env() -> None:
    import metaworld

    actions = np.random.default_rng(0).uniform(-1, 1, size=(30, 4))
    ml1 = metaworld.ML1("reach-v3", seed=mwf.TASK_SEED)
    for i in (0, 7):
        theirs = ml1.train_tasks[i]
        env = ml1.train_classes["reach-v3"]()
        env.set_task(theirs)
        want = [(env.reset()[0], 0.0, False)]
        for a in actions:
            obs, reward, _, _, info = env.step(a)
            want.append((obs, float(reward), bool(info["success"])))
        ours = make_family(REACH)
        _assert_same(_play(ours, mwf.MetaWorldTask.from_metaworld(theirs), actions, seed=i), want)
        ours.close()


@needs_metaworld
def test_switching_environments_reuses_envs_without_a_trace() -> None:
    """An ML10 env hops between environments (and takes envs another instance handed
    back); each episode equals a freshly built Meta-World env's."""
    train, test = mwf.ML10Env.train_tasks(), mwf.ML10Env.test_tasks()
    by_env: dict[str, list[mwf.MetaWorldTask]] = {}
    for t in [*train, *test]:
        by_env.setdefault(t.env_name, []).append(t)  # type: ignore[attr-defined]
    a, b = make_family(ML10), make_family(ML10)
    actions = np.random.default_rng(1).uniform(-1, 1, size=(15, 4))
    plan = [
        (a, by_env["push-v3"][0]),  # a hands its reach env back, builds a push env
        (b, by_env["reach-v3"][3]),  # same environment: b keeps its env
        (a, by_env["reach-v3"][1]),  # a takes the reach env it handed back
        (b, by_env["push-v3"][2]),  # b takes the push env a played before
        (a, by_env["drawer-open-v3"][4]),  # a test environment, built
        (a, by_env["push-v3"][5]),  # none idle: built
        (b, by_env["reach-v3"][1]),  # b takes a's reach env
    ]
    for k, (env, task) in enumerate(plan):
        _assert_same(_play(env, task, actions, seed=k), _metaworld_reference(task, actions))
    a.close()
    b.close()


@needs_metaworld
def test_the_pool_keeps_at_most_max_idle_envs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mwf, "MAX_IDLE", 1)
    monkeypatch.setattr(mwf, "_IDLE", [])
    env = make_family(ML10)  # holds a reach env
    by_name = {t.env_name: t for t in mwf.ML10Env.train_tasks()}  # type: ignore[attr-defined]
    for name in ("push-v3", "sweep-v3", "reach-v3"):
        unwrap_family(env).set_task(by_name[name])
    # reach handed back, then push (reach closed), then sweep (push closed)
    assert [name for name, _ in mwf._IDLE] == ["sweep-v3"]
    actions = np.random.default_rng(2).uniform(-1, 1, size=(10, 4))
    task = by_name["reach-v3"]
    _assert_same(_play(env, task, actions, seed=0), _metaworld_reference(task, actions))
    env.close()


@needs_metaworld
def test_ml1_task_sets_are_metaworlds_fixed_and_disjoint() -> None:
    import metaworld

    state = np.random.get_state()  # noqa: NPY002  (Meta-World seeds the global state)
    train, test = mwf.ml1_class("reach-v3").train_tasks(), mwf.ml1_class("reach-v3").test_tasks()
    ml1 = metaworld.ML1("reach-v3", seed=mwf.TASK_SEED)
    assert train == [mwf.MetaWorldTask.from_metaworld(t) for t in ml1.train_tasks]
    assert test == [mwf.MetaWorldTask.from_metaworld(t) for t in ml1.test_tasks]
    assert len(set(train)) == 50 and len(set(test)) == 50 and not set(train) & set(test)
    assert {t.env_name for t in train + test} == {"reach-v3"}  # type: ignore[attr-defined]
    assert mwf.ml1_class("reach-v3").train_tasks() == train  # fixed: the same every call
    np.testing.assert_array_equal(np.random.get_state()[1], state[1])  # type: ignore[index]  # noqa: NPY002
    # Picklable, serialisable, and checked against the family.
    assert pickle.loads(pickle.dumps(train)) == train
    assert mwf.MetaWorldTask.from_dict(test[3].to_dict()) == test[3]
    push_task = mwf.ml1_class("push-v3").train_tasks()[0]
    env = make_family(REACH)
    with pytest.raises(ValueError, match=r"a task of push-v3 is not in this benchmark"):
        unwrap_family(env).set_task(push_task)
    env.close()
    with pytest.raises(ValueError, match=r"rand_vec of door-open-v3 has 3 components"):
        mwf.MetaWorldTask(env=float(mwf.ENV_NAMES.index("door-open-v3")), rand_vec=(1.0,) * 6)
    # sample_tasks draws from the train set with the generator only.
    drawn = mwf.ml1_class("reach-v3").sample_tasks(20, np.random.default_rng(5))
    assert len(set(drawn)) == 20 and set(drawn) <= set(train)
    assert drawn == mwf.ml1_class("reach-v3").sample_tasks(20, np.random.default_rng(5))


@needs_metaworld
def test_ml10_holds_out_whole_environments() -> None:
    train, test = mwf.ML10Env.train_tasks(), mwf.ML10Env.test_tasks()
    train_envs = [t.env_name for t in train]  # type: ignore[attr-defined]
    test_envs = [t.env_name for t in test]  # type: ignore[attr-defined]
    assert set(train_envs) == set(mwf.ML10_TRAIN) and set(test_envs) == set(mwf.ML10_TEST)
    assert all(train_envs.count(n) == 50 for n in mwf.ML10_TRAIN)
    assert all(test_envs.count(n) == 50 for n in mwf.ML10_TEST)
    assert not set(train_envs) & set(test_envs)


@needs_metaworld
@pytest.mark.slow
def test_ml45_holds_out_whole_environments() -> None:
    train, test = mwf.ML45Env.train_tasks(), mwf.ML45Env.test_tasks()
    assert len(train) == 45 * 50 and len(test) == 5 * 50
    assert {t.env_name for t in train} == set(mwf.ML45_TRAIN)  # type: ignore[attr-defined]
    assert {t.env_name for t in test} == set(mwf.ML45_TEST)  # type: ignore[attr-defined]


@needs_metaworld
def test_success_is_metaworlds_flag() -> None:
    env = make_family(REACH)
    task = mwf.ml1_class("reach-v3").test_tasks()[0]
    goal = np.asarray(task.rand_vec[3:])  # type: ignore[attr-defined]
    stay = _play(env, task, np.zeros((60, 4)), seed=0)
    assert not any(s for _, _, s in stay)
    unwrap_family(env).set_task(task)
    obs, _ = env.reset(seed=0)
    reached = False
    for _ in range(200):  # a proportional controller moves the hand onto the goal
        obs, _, _, _, info = env.step(np.append(np.clip(25 * (goal - obs[:3]), -1, 1), 0.0))
        if info["success"]:
            reached = True
            break
    assert reached and np.linalg.norm(obs[:3] - goal) < 0.05
    env.close()


def test_mujoco_other_than_metaworlds_pin_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    if not HAVE_METAWORLD:
        pytest.skip("needs the metaworld extra: pip install 'maml-rl[metaworld]' (mujoco 3.3.0)")
    real = mwf.importlib.metadata.version
    monkeypatch.setattr(
        mwf.importlib.metadata,
        "version",
        lambda name: "4.0.1" if name == "mujoco" else real(name),
    )
    with pytest.raises(ValueError, match=r"requires mujoco==3\.3\.0, this environment has mujoco"):
        mwf._check_mujoco_version()


# -- training and evaluation -----------------------------------------------------------------

TINY_RUN = [f"env.id={REACH}", "env.max_episode_steps=15", "maml.meta_batch_size=3",
            "maml.fast_batch_size=2", "policy.hidden_sizes=[8, 8]", "trpo.cg_iters=3",
            "update_threads=1", "num_batches=2", "checkpoint_every=0"]  # fmt: skip


@needs_metaworld
@pytest.mark.slow
def test_training_records_success_alike_on_sync_and_process(tmp_path: Path) -> None:
    results = {}
    for backend in ("sync", "process"):
        run = [f"sampler.backend={backend}", f"logdir={tmp_path}", f"run_name={backend}"]
        config = load_config(None, [*TINY_RUN, "sampler.num_workers=2", *run])
        trainer = Trainer(config, console=False)
        results[backend] = trainer.train()
        trainer.close()
    sync, process = results["sync"], results["process"]
    for key in ("rollout/success_pre_adapt", "rollout/success_post_adapt"):
        assert 0.0 <= sync[key] <= 1.0
    same = [k for k in sync if k.startswith(("rollout/", "train/"))]
    assert {k: sync[k] for k in same} == {k: process[k] for k in same}

    result = evaluate(
        [tmp_path / "sync"], EvalSettings(adapt_steps=1, num_tasks=4, progress=False), out=""
    )
    assert result["task_set"]["held_out"]
    assert "fixed test set (50 tasks)" in result["task_set"]["rule"]
    success = result["runs"][0]["curve"]["success"]
    assert len(success["mean"]) == 2 and len(success["ci95"]) == 2
    assert all(0.0 <= m <= 1.0 for m in success["mean"])
    assert all(len(per_task) == 4 for per_task in success["per_task_mean"])
    assert "success %" in format_summary(result)


@needs_metaworld
@pytest.mark.parametrize("path", METAWORLD_PRESETS, ids=lambda p: p.name)
def test_the_preset_has_the_metaworld_papers_settings(path: Path) -> None:
    cfg = load_config(path)
    assert family_spec(cfg.env.id).max_episode_steps == cfg.env.max_episode_steps == 500
    assert cfg.policy.hidden_sizes == (128, 128) and cfg.policy.activation == "tanh"
    assert (cfg.maml.meta_batch_size, cfg.maml.fast_batch_size) == (20, 10)
    assert (cfg.maml.num_adapt_steps, cfg.trpo.max_kl) == (1, 0.01)
    assert cfg.maml.fast_lr == 0.1
    assert cfg.env.id in family_ids()


SHIPPED_REACH = (
    Path(__file__).resolve().parents[1] / "benchmarks/results/checkpoints/metaworld/ml1_reach.pt"
)


@needs_metaworld
@pytest.mark.slow
def test_the_shipped_reach_policy_adapts_on_test_goals() -> None:
    """The README's ML1 reach-v3 result: one step takes held-out goals to success."""
    result = evaluate(
        [SHIPPED_REACH],
        EvalSettings(adapt_steps=1, num_tasks=2, progress=False),
        out="",
    )
    assert result["env_id"] == REACH and result["task_set"]["held_out"]
    curve = result["runs"][0]["curve"]
    assert curve["mean"][1] > curve["mean"][0]
    success = curve["success"]["mean"]
    assert success[1] == 1.0 and success[0] < 1.0, success
