"""What an evaluation writes: ``eval.json``, TensorBoard scalars and the plot.

**Outputs** (in ``out``): ``eval.json`` (schema below), ``adaptation.png`` (the
adaptation curves, SB3 PPO against its env-step budgets) and TensorBoard scalars
``eval/return_step_<k>`` under ``tensorboard/<label>/`` (x-axis: the checkpoint's
environment steps).

``eval.json`` (``schema_version`` 1)::

    {
      "schema_version": 1, "maml_rl_version": str, "env_id": str,
      "settings": {"num_tasks", "adapt_steps", "episodes_per_step", "fast_lr_schedule",
                   "step_fast_lr": [K], "seed", "baselines": [...], "confidence": 0.95,
                   "horizon", "sampler", "pretrain_iterations", "sb3_multipliers"},
      "task_set": {"held_out": bool, "rule": str, "num_tasks": N,
                   "training_tasks_checked": int, "redrawn": int},
      "tasks": [task dicts, N],
      "runs": [{"label", "path", "agent", "iteration", "env_steps", "curve": CURVE,
                "videos": VIDEOS}],           # "videos" only with --video
      "baselines": {
        "random": {"curve": CURVE},
        "pretrained": {"curve": CURVE, "train_iterations", "train_env_steps"},
        "oracle": {"curve": CURVE, "env_id", "train_iterations", "train_env_steps"},
        "sb3_ppo": {"num_tasks", "adaptation_budget_env_steps": K·E·horizon, "policy",
                    "points": [{"multiplier", "budget_env_steps", "n_steps", "batch_size",
                                "env_steps", "mean", "ci95", "ci_low", "ci_high",
                                "per_task_mean": [num_tasks]}]}
      },
      "timing_s": {label: seconds}
    }
    CURVE = {"step": [0..K], "fast_lr": [null, lr_1, …, lr_K],
             "mean": [K+1], "ci95": [K+1], "ci_low": [K+1], "ci_high": [K+1],
             "env_steps_per_task": [K+1],      # cumulative, episodes actually played
             "per_task_mean": [[N] × (K+1)], "per_task_ci95": [[N] × (K+1)],
             "gain": [K+1], "gain_ci95": [K+1]}   # with K ≥ 1; absent in older files

    VIDEOS = {"tasks": [indices into "tasks"], "files": [paths relative to out],
              "returns": [[K+1] per video task], "tensorboard_tags": [...]}
             or {"skipped": "why (one line)"}

``mean`` is the mean over tasks of each task's mean episode return, ``ci95`` the
half-width of its 95 % t-interval over the ``N`` tasks (``null`` when undefined);
``per_task_ci95`` is each task's t-interval over its ``E`` episodes. ``gain`` is the mean
over tasks of step ``k``'s return minus step 0's on the same task (the same seeds), and
``gain_ci95`` its paired t-interval (``null`` at step 0): the tasks' spread, which
dominates ``ci95``, cancels in it. The typed
dictionaries below spell the schema out; a baseline registered by a user adds its own
entry under ``baselines`` (one with a ``curve`` is plotted and logged like the others).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

from maml_rl.checkpoint import CHECKPOINT_NAME

__all__ = [
    "EVAL_JSON",
    "PLOT_NAME",
    "SCHEMA_VERSION",
    "BaselineEntry",
    "CurveBaselineEntry",
    "CurveEntry",
    "EvalResult",
    "OracleEntry",
    "RunEntry",
    "SB3Entry",
    "SB3Point",
    "SettingsEntry",
    "TaskSetEntry",
    "TrainedBaselineEntry",
    "VideoEntry",
    "default_out_dir",
    "format_summary",
    "load_eval",
    "run_label",
    "unique_labels",
    "write_outputs",
]

EVAL_JSON = "eval.json"
PLOT_NAME = "adaptation.png"
SCHEMA_VERSION = 1


# -- the schema -------------------------------------------------------------------------------


class SuccessEntry(TypedDict):
    """Success rate after ``0..K`` steps (families reporting ``info["success"]``)."""

    mean: list[float]
    ci95: list[float | None]
    per_task_mean: list[list[float]]


class CurveEntry(TypedDict):
    """``CURVE``: one method's adaptation curve (``None``: an interval of one value);
    ``success`` only for families that report it."""

    step: list[int]
    fast_lr: list[float | None]
    mean: list[float]
    ci95: list[float | None]
    ci_low: list[float | None]
    ci_high: list[float | None]
    env_steps_per_task: list[float]
    per_task_mean: list[list[float]]
    per_task_ci95: list[list[float | None]]
    gain: NotRequired[list[float]]
    gain_ci95: NotRequired[list[float | None]]
    success: NotRequired[SuccessEntry]


class SettingsEntry(TypedDict):
    """What was measured (``pretrain_iterations``/``sb3_multipliers``: ``None`` unless
    a baseline that uses them ran)."""

    num_tasks: int
    adapt_steps: int
    episodes_per_step: int
    fast_lr_schedule: list[float]
    step_fast_lr: list[float]
    seed: int
    baselines: list[str]
    confidence: float
    horizon: int
    sampler: str
    pretrain_iterations: int | None
    sb3_multipliers: list[float] | None


class TaskSetEntry(TypedDict):
    """How the evaluation tasks were chosen."""

    held_out: bool
    rule: str
    num_tasks: int
    training_tasks_checked: int
    redrawn: int


class VideoEntry(TypedDict):
    """The videos of one run (``--video``): which tasks, the files, the return each
    rendered episode had (episode 0 of each step's sample call), or why there are none."""

    tasks: NotRequired[list[int]]
    files: NotRequired[list[str]]
    returns: NotRequired[list[list[float]]]
    tensorboard_tags: NotRequired[list[str]]
    skipped: NotRequired[str]


class RunEntry(TypedDict):
    """One evaluated run."""

    label: str
    path: str
    agent: str
    iteration: int
    env_steps: int
    curve: CurveEntry
    videos: NotRequired[VideoEntry]


class CurveBaselineEntry(TypedDict):
    """A baseline that is only an adaptation curve (``random``)."""

    curve: CurveEntry


class TrainedBaselineEntry(CurveBaselineEntry):
    """A baseline trained on the run's training tasks first (``pretrained``)."""

    train_iterations: int
    train_env_steps: int


class OracleEntry(TrainedBaselineEntry):
    """The ``oracle``, trained on the task-observing family ``env_id``."""

    env_id: str


class SB3Point(TypedDict):
    """SB3 PPO at one budget: statistics over the tasks it ran on."""

    multiplier: float
    budget_env_steps: int
    n_steps: int
    batch_size: int
    env_steps: float
    mean: float
    ci95: float | None
    ci_low: float | None
    ci_high: float | None
    per_task_mean: list[float]


class SB3Entry(TypedDict):
    """The ``sb3_ppo`` baseline: points at multiples of the adaptation budget."""

    num_tasks: int
    adaptation_budget_env_steps: int
    policy: str
    points: list[SB3Point]


BaselineEntry = CurveBaselineEntry | TrainedBaselineEntry | OracleEntry | SB3Entry


class EvalResult(TypedDict):
    """An ``eval.json`` (what :func:`maml_rl.evaluation.evaluate` returns)."""

    schema_version: int
    maml_rl_version: str
    env_id: str
    settings: SettingsEntry
    task_set: TaskSetEntry
    tasks: list[dict[str, Any]]
    runs: list[RunEntry]
    baselines: dict[str, BaselineEntry]
    timing_s: dict[str, float]


# -- names ------------------------------------------------------------------------------------


def run_label(path: str | Path) -> str:
    """A run's short name: its folder's name (for a checkpoint file, the file's folder's
    name when it is ``checkpoint.pt``, else the file's stem)."""
    p = Path(path)
    if p.is_dir():
        return p.resolve().name or "run"
    return (p.resolve().parent.name if p.name == CHECKPOINT_NAME else p.stem) or "run"


def unique_labels(labels: Sequence[str]) -> list[str]:
    """``labels`` with repeats numbered: ``a, a, b`` → ``a, a-2, b``."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        n = seen.get(label, 0)
        seen[label] = n + 1
        out.append(label if n == 0 else f"{label}-{n + 1}")
    return out


def default_out_dir(runs: Sequence[str | Path]) -> Path:
    """Where :func:`~maml_rl.evaluation.evaluate` writes by default: ``<run folder>/eval``
    for one run, ``eval/<label>-vs-<label>…`` (in the working folder) for several."""
    if len(runs) == 1:
        p = Path(runs[0])
        return (p if p.is_dir() else p.parent) / "eval"
    return Path("eval") / "-vs-".join(unique_labels([run_label(r) for r in runs]))


# -- files ------------------------------------------------------------------------------------


def write_outputs(result: Mapping[str, Any], out: str | Path) -> None:
    """Write ``eval.json``, the adaptation plot and TensorBoard scalars to ``out``."""
    from maml_rl.evaluation.plot import plot_adaptation  # matplotlib only when plotting
    from maml_rl.logger import TensorBoardLogger

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in result.items() if not k.startswith("_")}
    tmp = out / f".{EVAL_JSON}.tmp"
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(out / EVAL_JSON)
    plot_adaptation(data, out / PLOT_NAME)
    curves = [(r["label"], r["env_steps"], r["curve"]) for r in data["runs"]]
    curves += [
        (f"baseline-{name}", b.get("train_env_steps", 0), b["curve"])
        for name, b in data["baselines"].items()
        if "curve" in b
    ]
    for label, step, curve in curves:
        logger = TensorBoardLogger(out / "tensorboard" / label)
        try:
            logger.write(
                {f"eval/return_step_{k}": m for k, m in zip(curve["step"], curve["mean"],
                                                             strict=True)},
                step=int(step),
            )  # fmt: skip
        finally:
            logger.close()


def load_eval(path: str | Path) -> EvalResult:
    """Read an ``eval.json`` (a file or the folder holding it), checking its schema."""
    p = Path(path)
    file = p / EVAL_JSON if p.is_dir() else p
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"no {EVAL_JSON} at {str(path)!r}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(file)!r} is not a readable {EVAL_JSON}: {exc}") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{str(file)!r} is not an {EVAL_JSON} of schema version {SCHEMA_VERSION}")
    return cast(EvalResult, data)


def format_summary(result: Mapping[str, Any]) -> str:
    """A markdown table of an evaluation: mean return ± 95 % CI per method and step."""
    k = result["settings"]["adapt_steps"]

    def cell(mean: float, half: float | None) -> str:
        return f"{mean:.2f} ± {half:.2f}" if half is not None else f"{mean:.2f}"

    header = "| method | " + " | ".join(f"step {s}" for s in range(k + 1)) + " |"
    lines = [header, "|---" * (k + 2) + "|"]
    rows = [(r["label"], r["curve"]) for r in result["runs"]]
    rows += [(n, b["curve"]) for n, b in result["baselines"].items() if "curve" in b]
    for name, curve in rows:
        cells = [cell(m, h) for m, h in zip(curve["mean"], curve["ci95"], strict=True)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if "gain" in curve:
            gains = zip(curve["gain"][1:], curve["gain_ci95"][1:], strict=True)
            cells = ["", *(f"{m:+.2f}" + ("" if h is None else f" ± {h:.2f}") for m, h in gains)]
            lines.append(f"| {name}: gain over step 0, paired | " + " | ".join(cells) + " |")
        if "success" in curve:
            s = curve["success"]
            cells = [cell(100 * m, None if h is None else 100 * h)
                     for m, h in zip(s["mean"], s["ci95"], strict=True)]  # fmt: skip
            lines.append(f"| {name}: success % | " + " | ".join(cells) + " |")
    sb3 = result["baselines"].get("sb3_ppo")
    if sb3:
        lines.append("")
        lines.append(
            f"SB3 PPO from scratch ({sb3['num_tasks']} tasks; adaptation budget "
            f"{sb3['adaptation_budget_env_steps']:,} env steps per task):"
        )
        for p in sb3["points"]:
            lines.append(
                f"- {p['multiplier']:g}× ({p['env_steps']:,.0f} env steps): "
                f"{cell(p['mean'], p['ci95'])}"
            )
    ts = result["task_set"]
    n = ts["num_tasks"]
    tasks = (
        f"{n} held-out tasks" if ts["held_out"] else f"{n} tasks (the family has no held-out set)"
    )
    lines.append("")
    lines.append(
        f"{result['env_id']}: {tasks}, "
        f"{result['settings']['episodes_per_step']} episodes per step, "
        f"step sizes {result['settings']['step_fast_lr']}"
    )
    return "\n".join(lines)
