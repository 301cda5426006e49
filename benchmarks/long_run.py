"""Run presets to their full budget across interruptions, and report where each run stands.

    python benchmarks/long_run.py run configs/halfcheetah_vel_trpo.yaml [more presets ...] \
        [--root runs/long] [--workers 2] [KEY=VALUE ...]
    python benchmarks/long_run.py run PRESET ... --evaluate "--adapt-steps 3 --baselines random"
    python benchmarks/long_run.py status [--root runs/long]

``run`` works through the presets one after another. Each preset has one run folder,
``<root>/<preset name>`` (e.g. ``runs/long/halfcheetah_vel_trpo``): a finished run is
skipped, an interrupted one continues from its checkpoint (``maml-rl train --resume``, which
replays exactly the iterations an uninterrupted run would have made), a missing one starts.
So the same command, started again after a reboot or in the next working session, picks
up where the machine stopped and never retrains what is finished. Overrides (``KEY=VALUE``)
apply when a run starts; on resume only the resumable keys (``num_batches``,
``checkpoint_every``, ``sampler.*``, the TRPO curvature knobs, ...) are passed on.
``checkpoint_every`` defaults to 5 here, so an interruption loses at most a few
iterations.

With ``--evaluate ARGS`` each finished run is then evaluated before the next preset
starts: ``benchmarks/evaluation.py <run> ARGS``, writing ``<run>/eval-paper/``. An
evaluation whose ``eval.json`` is newer than the run's checkpoint is done and skipped; an
interrupted one starts again, and its baselines' trainings continue from their saved
state (``<run>/eval-paper/baselines/``). A run already trained past the command's budget
(a queue's later stage raised it) is not evaluated by it: that checkpoint belongs to the
stage with the larger ``num_batches``, which evaluates it.

``status`` prints, per run folder under ``root``: iterations done of the budget, env steps,
seconds per iteration (median of the last 10), the ETA of what is left at that pace, and
the mean pre/post-adaptation return of the last 10 iterations. The last line is JSON.

SIGINT/SIGTERM stop the current training cleanly (it checkpoints the last finished
iteration) and end the queue.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The overrides passed on to a resumed run: ``maml_rl.trainer.RESUMABLE_KEYS`` (not
#: imported, so that ``status`` starts without torch) and ``sampler.*``.
RESUMABLE_OVERRIDES = (
    "num_batches=",
    "checkpoint_every=",
    "keep_checkpoint_every=",
    "max_rejected_iterations=",
    "update_threads=",
    "device=",
    "trpo.hvp_dtype=",
    "trpo.hvp_subsample=",
    "sampler.",
)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The run's ``metrics.jsonl`` records (an unfinished last line is skipped)."""
    path = run_dir / "metrics.jsonl"
    records: list[dict[str, Any]] = []
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def budget(run_dir: Path) -> int | None:
    """``num_batches`` from the run's stored ``config.yaml``."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return int(data.get("num_batches", 0)) or None


def target_iterations(run_dir: Path, overrides: Sequence[str]) -> int | None:
    """Where this invocation takes the run: the last ``num_batches=N`` override, else the
    stored budget (``None``: no run yet, or an override that is not a number — the
    trainer reports that one)."""
    given = [o.partition("=")[2] for o in overrides if o.startswith("num_batches=")]
    if not given:
        return budget(run_dir)
    try:
        return int(given[-1])
    except ValueError:
        return None


def checkpoint_iteration(run_dir: Path) -> int | None:
    """The iteration of the run's ``checkpoint.pt`` (``None``: no checkpoint)."""
    from maml_rl.checkpoint import load_checkpoint

    if not (run_dir / "checkpoint.pt").is_file():
        return None
    return int(load_checkpoint(run_dir)["iteration"])


def summary(run_dir: Path) -> dict[str, Any]:
    records = read_metrics(run_dir)
    total = budget(run_dir)
    done = checkpoint_iteration(run_dir) or 0
    last = records[-10:]
    pace = statistics.median(r["time/iteration_s"] for r in last) if last else None
    left = max(0, (total or 0) - done)

    def mean(key: str) -> float | None:
        return statistics.fmean(r[key] for r in last) if last else None

    return {
        "run": run_dir.name,
        "iterations_done": done,
        "num_batches": total,
        "env_steps": records[done - 1]["env_steps"] if 0 < done <= len(records) else 0,
        "s_per_iteration": pace,
        "eta_h": pace * left / 3600 if pace is not None else None,
        "return_pre_adapt": mean("rollout/return_pre_adapt"),
        "return_post_adapt": mean("rollout/return_post_adapt"),
        "finished": total is not None and done >= total,
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def cmd_status(root: Path) -> int:
    runs = (
        sorted(p for p in root.iterdir() if (p / "config.yaml").is_file()) if root.is_dir() else []
    )
    rows = [summary(p) for p in runs]
    print(
        f"{'run':<34} {'done':>9} {'env steps':>13} {'s/it':>6} {'ETA h':>6} {'pre':>9} {'post':>9}"
    )
    for r in rows:
        done = f"{r['iterations_done']}/{r['num_batches'] or '?'}"
        pace = _fmt(r["s_per_iteration"], ".1f")
        print(
            f"{r['run']:<34} {done:>9} {r['env_steps']:>13,} {pace:>6} "
            f"{_fmt(r['eta_h'], '.1f'):>6} {_fmt(r['return_pre_adapt'], '.2f'):>9} "
            f"{_fmt(r['return_post_adapt'], '.2f'):>9}" + ("  finished" if r["finished"] else "")
        )
    print(json.dumps({"runs": rows}))
    return 0


def train_command(
    preset: Path, run_dir: Path, overrides: list[str], workers: int | None
) -> list[str]:
    """The ``maml-rl train`` command that starts or continues ``run_dir``."""
    cmd = [sys.executable, "-m", "maml_rl.cli", "train"]
    if (run_dir / "checkpoint.pt").is_file():
        kept = [o for o in overrides if o.startswith(RESUMABLE_OVERRIDES)]
        cmd += ["--resume", str(run_dir), *kept]
    else:
        cmd += ["--config", str(preset), f"logdir={run_dir.parent}", f"run_name={run_dir.name}"]
        cmd += ["checkpoint_every=5", *overrides]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    return cmd


def evaluation_done(run_dir: Path) -> bool:
    """Whether ``run_dir`` has an ``eval-paper/eval.json`` written after its checkpoint."""
    result, checkpoint = run_dir / "eval-paper" / "eval.json", run_dir / "checkpoint.pt"
    return (
        result.is_file()
        and checkpoint.is_file()
        and result.stat().st_mtime >= checkpoint.stat().st_mtime
    )


def evaluate_command(run_dir: Path, evaluate: str) -> list[str]:
    """The ``benchmarks/evaluation.py`` command that evaluates ``run_dir``."""
    script = Path(__file__).with_name("evaluation.py")
    return [sys.executable, str(script), str(run_dir), *shlex.split(evaluate)]


def cmd_run(
    presets: list[Path],
    root: Path,
    overrides: list[str],
    workers: int | None,
    evaluate: str | None = None,
) -> int:
    stop = {"requested": False}
    child: dict[str, subprocess.Popen[bytes] | None] = {"proc": None}

    def forward(signum: int, frame: object) -> None:
        stop["requested"] = True
        proc = child["proc"]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # the trainer checkpoints and exits

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, forward)
    for preset in presets:
        if not preset.is_file():
            print(f"long_run: preset {preset} not found", file=sys.stderr)
            return 2
    for preset in presets:
        run_dir = root / preset.stem
        if stop["requested"]:
            break
        total = target_iterations(run_dir, overrides)
        done = checkpoint_iteration(run_dir)
        trained = total is not None and done is not None and done >= total
        # Trained past this budget (a later stage of a queue raised it): the checkpoint
        # is not this stage's, so neither is its evaluation; the later stage evaluates.
        past = trained and done > total
        if trained:
            print(f"long_run: {run_dir} finished ({done}/{total}); skipped", flush=True)
        for step in ("train", "evaluate"):
            if (step == "train" and trained) or (step == "evaluate" and evaluate is None):
                continue
            if step == "evaluate" and past:
                print(
                    f"long_run: {run_dir} is past this budget ({done}/{total}); its "
                    "evaluation is left to the command with the larger num_batches",
                    flush=True,
                )
                continue
            if step == "evaluate" and evaluation_done(run_dir):
                print(f"long_run: {run_dir}/eval-paper is up to date; skipped", flush=True)
                continue
            if stop["requested"]:
                return 0
            if step == "train":
                cmd = train_command(preset, run_dir, overrides, workers)
            else:
                cmd = evaluate_command(run_dir, evaluate or "")
            print(f"long_run: {' '.join(cmd[1:])}", flush=True)
            child["proc"] = proc = subprocess.Popen(cmd)
            rc = proc.wait()
            child["proc"] = None
            if rc != 0:
                print(f"long_run: {run_dir} stopped (exit {rc}); run the same command to continue")
                return rc
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start or continue presets, one after another")
    run.add_argument("presets", nargs="+", help="YAML presets, or KEY=VALUE overrides")
    run.add_argument("--root", default="runs/long", type=Path)
    run.add_argument("--workers", type=int, default=None, help="sampler.num_workers")
    run.add_argument(
        "--evaluate",
        metavar="ARGS",
        default=None,
        help="evaluate each finished run: benchmarks/evaluation.py RUN ARGS (quoted)",
    )
    status = sub.add_parser("status", help="where each run under --root stands")
    status.add_argument("--root", default="runs/long", type=Path)
    # Presets and overrides may stand on both sides of the options.
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-")]
    if unknown or (extra and args.command != "run"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if args.command == "status":
        return cmd_status(args.root)
    words = [*args.presets, *extra]
    presets = [Path(p) for p in words if "=" not in p]
    overrides = [p for p in words if "=" in p]
    return cmd_run(presets, args.root, overrides, args.workers, args.evaluate)


if __name__ == "__main__":
    sys.exit(main())
