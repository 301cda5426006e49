"""Tasks: validation, serialisation and pickling of every family's task type."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest

from maml_rl.envs import AntGoalTask, DirectionTask, GoalTask2D, HalfCheetahVelTask
from maml_rl.tasks import Task, family_class, family_ids


@pytest.mark.parametrize("env_id", family_ids())
def test_round_trip_through_dict_json_and_pickle(env_id: str) -> None:
    cls = family_class(env_id)
    for task in cls.sample_tasks(5, np.random.default_rng(0)):
        data = task.to_dict()
        assert json.loads(json.dumps(data)) == data  # plain JSON types only
        assert cls.task_cls.from_dict(data) == task
        assert cls.task_cls.coerce(data) == task
        clone = pickle.loads(pickle.dumps(task))
        assert clone == task and hash(clone) == hash(task) and type(clone) is type(task)


@pytest.mark.parametrize("env_id", family_ids())
def test_describe_names_every_field(env_id: str) -> None:
    task_cls = family_class(env_id).task_cls
    text = task_cls.describe()
    for field in dataclasses.fields(task_cls):
        assert field.name in text


def test_values_are_normalised_to_floats() -> None:
    task = AntGoalTask(goal=np.array([1, -2.5], dtype=np.float32))  # type: ignore[arg-type]
    assert task.goal == (1.0, -2.5) and all(type(v) is float for v in task.goal)
    assert type(HalfCheetahVelTask(velocity=np.float32(1.5)).velocity) is float
    assert DirectionTask(direction=-1) == DirectionTask(direction=-1.0)


def test_tasks_are_frozen() -> None:
    task = HalfCheetahVelTask(velocity=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.velocity = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: HalfCheetahVelTask(velocity=True), "must be a number, got bool"),
        (lambda: HalfCheetahVelTask(velocity=float("nan")), "must be finite"),
        (lambda: HalfCheetahVelTask(velocity=(1.0, 2.0)), "must be a single number"),
        (lambda: HalfCheetahVelTask(velocity=None), "must be a number"),
        (lambda: AntGoalTask(goal=1.0), "must have 2 components"),
        (lambda: AntGoalTask(goal=[[1.0, 2.0]]), "flat sequence of numbers"),
        (lambda: AntGoalTask(goal=(0.0, float("inf"))), "must be finite"),
        (lambda: GoalTask2D(goal=(0.6, 0.0)), r"must lie in \[-0.5, 0.5\]"),
        (lambda: DirectionTask(direction=0.0), r"must be one of \{-1, 1\}"),
        (lambda: DirectionTask.from_dict([1.0]), "must be a DirectionTask or a mapping"),
        (lambda: DirectionTask.from_dict({"direction": 1.0, "speed": 2.0}), "unknown"),
    ],
)
def test_invalid_values_raise_one_line_errors(make, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert "\n" not in str(info.value)


def test_coerce_rejects_a_task_of_another_type() -> None:
    with pytest.raises(ValueError, match="expected a DirectionTask, got a HalfCheetahVelTask"):
        DirectionTask.coerce(HalfCheetahVelTask(velocity=1.0))


def test_every_family_task_type_is_a_task() -> None:
    for env_id in family_ids():
        assert issubclass(family_class(env_id).task_cls, Task)
