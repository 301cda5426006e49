"""Plots of fast adaptation, drawn from ``eval.json`` data (matplotlib, Agg backend).

* :func:`plot_adaptation` — one evaluation: every run and baseline as return vs
  adaptation step (mean over tasks, shaded 95 % confidence band); with the SB3 PPO
  baseline, a second panel puts PPO's return against the env steps it trained for
  (log scale), next to the return each run reached after its ``K`` steps and the
  env steps those steps consumed.
* :func:`plot_comparison` — several ``eval.json`` files (e.g. MAML-TRPO and
  MAML-PPO evaluated separately) on one figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from maml_rl.evaluation.report import load_eval

__all__ = ["merge_evaluations", "plot_adaptation", "plot_comparison"]

# Baselines drawn in fixed colours and styles, so figures are comparable.
_BASELINE_STYLE = {
    "random": {"color": "0.45", "linestyle": ":", "marker": "v"},
    "pretrained": {"color": "tab:brown", "linestyle": "--", "marker": "s"},
    "oracle": {"color": "black", "linestyle": "-.", "marker": "*"},
}
_RUN_COLORS = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:cyan"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _draw_curve(ax: Any, curve: Mapping[str, Any], label: str, offset: float, **style: Any) -> None:
    """Mean return per step with 95 % CI error bars, nudged by ``offset`` along x so
    that overlapping intervals of several curves stay readable."""
    steps = [s + offset for s in curve["step"]]
    mean = curve["mean"]
    half = curve.get("ci95") or [None] * len(mean)
    yerr = None if any(h is None for h in half) else half
    ax.errorbar(steps, mean, yerr=yerr, label=label, linewidth=2, markersize=6, capsize=3,
                elinewidth=1, **{"marker": "o", **style})  # fmt: skip


def plot_adaptation(data: Mapping[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Draw an evaluation (an ``eval.json`` dict) to a PNG file.

    Args:
        data: the ``eval.json`` content (:func:`maml_rl.evaluation.evaluate`'s result).
        path: the PNG file to write.
        title: figure title (default: the family and the number of tasks).

    Returns:
        ``path``.
    """
    plt = _pyplot()
    baselines = data.get("baselines", {})
    sb3 = baselines.get("sb3_ppo")
    ncols = 2 if sb3 else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.4 * ncols, 4.6), squeeze=False)
    ax = axes[0][0]

    series = [
        (run["curve"], run["label"], {"color": _RUN_COLORS[j % len(_RUN_COLORS)]})
        for j, run in enumerate(data["runs"])
    ]
    series += [
        (baselines[name]["curve"], name, style)
        for name, style in _BASELINE_STYLE.items()
        if name in baselines
    ]
    # Baselines registered beyond the paper's, in grey shades after them.
    others = [n for n, b in baselines.items() if "curve" in b and n not in _BASELINE_STYLE]
    series += [
        (baselines[name]["curve"], name, {"color": str(0.2 + 0.5 * j / max(1, len(others)))})
        for j, name in enumerate(others)
    ]
    width = min(0.3, 0.06 * (len(series) - 1))
    for i, (curve, label, style) in enumerate(series):
        offset = width * (i / (len(series) - 1) - 0.5) if len(series) > 1 else 0.0
        _draw_curve(ax, curve, label, offset, **style)
    k = data["settings"]["adapt_steps"]
    ax.set_xticks(range(k + 1))
    ax.set_xlabel("adaptation steps (policy-gradient updates)")
    ax.set_ylabel("average return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    settings = data["settings"]
    n = settings["num_tasks"]
    held_out = data.get("task_set", {}).get("held_out", True)
    tasks = f"{n} held-out tasks" if held_out else f"{n} tasks (no held-out set)"
    ax.set_title(
        f"{tasks}, {settings['episodes_per_step']} episodes/step, 95 % CI",
        fontsize="small",
    )

    if sb3:
        ax2 = axes[0][1]
        points = sb3["points"]
        xs = [p["env_steps"] for p in points]
        ys = [p["mean"] for p in points]
        err = [p["ci95"] or 0.0 for p in points]
        ax2.errorbar(xs, ys, yerr=err, color="tab:olive", marker="D", capsize=3,
                     linewidth=2, label="SB3 PPO from scratch")  # fmt: skip
        for p in points:
            ax2.annotate(f"{p['multiplier']:g}×", (p["env_steps"], p["mean"]),
                         textcoords="offset points", xytext=(4, -12), fontsize="small")  # fmt: skip
        budget = sb3["adaptation_budget_env_steps"]
        for j, run in enumerate(data["runs"]):
            color = _RUN_COLORS[j % len(_RUN_COLORS)]
            ax2.axhline(run["curve"]["mean"][-1], color=color, linestyle="--",
                        label=f"{run['label']} after {k} steps")  # fmt: skip
        ax2.axvline(budget, color="0.5", linestyle=":", label=f"adaptation budget ({budget:,})")
        ax2.set_xscale("log")
        ax2.set_xlabel("environment steps per task (PPO training)")
        ax2.set_ylabel("average return")
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize="small")
        ax2.set_title(f"SB3 PPO on {sb3['num_tasks']} of the tasks", fontsize="small")

    fig.suptitle(title or f"Fast adaptation on {data['env_id']}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def merge_evaluations(datas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine several ``eval.json`` dicts of one family into one for plotting.

    Runs are concatenated (labels made unique); baselines are taken from the first
    evaluation that has each. The evaluations must share the family and ``K``.
    """
    if not datas:
        raise ValueError("merge_evaluations needs at least one evaluation")
    first = datas[0]
    for d in datas[1:]:
        if d["env_id"] != first["env_id"]:
            raise ValueError(
                f"cannot compare evaluations of {first['env_id']} and {d['env_id']} in one plot"
            )
        if d["settings"]["adapt_steps"] != first["settings"]["adapt_steps"]:
            raise ValueError(
                "cannot compare evaluations with different --adapt-steps "
                f"({first['settings']['adapt_steps']} and {d['settings']['adapt_steps']})"
            )
    runs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for d in datas:
        for run in d["runs"]:
            label, n = run["label"], 2
            while label in seen:
                label, n = f"{run['label']}-{n}", n + 1
            seen.add(label)
            runs.append({**run, "label": label})
    baselines: dict[str, Any] = {}
    for d in datas:
        for name, b in d.get("baselines", {}).items():
            baselines.setdefault(name, b)
    return {**first, "runs": runs, "baselines": baselines}


def plot_comparison(
    evaluations: Sequence[Mapping[str, Any] | str | Path], path: str | Path
) -> Path:
    """Several evaluations (dicts, ``eval.json`` files or their folders) on one figure."""
    datas = [e if isinstance(e, Mapping) else load_eval(e) for e in evaluations]
    return plot_adaptation(merge_evaluations(datas), path)
