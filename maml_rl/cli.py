"""The ``maml-rl`` command line.

Subcommands:

* ``maml-rl envs`` — list the registered task families;
* ``maml-rl train`` — meta-train a policy (a preset, the embedded default, or
  ``--resume`` a run from its checkpoint);
* ``maml-rl evaluate`` — fast adaptation on held-out tasks, with baselines
  (:mod:`maml_rl.evaluation`).

Every error a user can cause ends in one line on stderr and exit status 2,
never a traceback; a run that has to stop part-way (diverged, a dead worker, a full
disk) ends in one line and exit status 1, after checkpointing its last good state.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from maml_rl.errors import RunStopped, os_reason, os_remedy

if TYPE_CHECKING:
    from maml_rl.evaluation import EvalSettings


#: Tasks rendered by ``maml-rl evaluate --video`` without ``--video-tasks``.
DEFAULT_VIDEO_TASKS = 3


class UserError(Exception):
    """An error caused by user input: printed as one line, exit status 2."""


def _cmd_envs(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from maml_rl.tasks import TaskFamily, family_class, family_ids, import_families

    for module in args.imports:
        import_families(module, "--import: ")
    rows = []
    for env_id in family_ids():
        cls: type[TaskFamily] = family_class(env_id)
        spec = gym.spec(env_id)
        rows.append((env_id, str(spec.max_episode_steps), cls.task_distribution))
    header = ("id", "horizon", "task distribution")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(2)]
    for r in [header, *rows]:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]}")
    return 0


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _cmd_train(args: argparse.Namespace) -> int:
    from maml_rl.config import load_config, parse_override, parse_yaml
    from maml_rl.malloc import tune_malloc
    from maml_rl.trainer import Trainer

    tune_malloc()

    overrides: dict[str, object] = dict(parse_override(o) for o in args.overrides)
    # Flags are shorthands for config keys; numbers are parsed like YAML values so the
    # config's validation reports a bad one (``--seed x``) as it does any other key.
    for flag, key, parse in (
        ("logdir", "logdir", False),
        ("seed", "seed", True),
        ("num_batches", "num_batches", True),
        ("sampler", "sampler.backend", False),
        ("workers", "sampler.num_workers", True),
        ("ray_address", "sampler.ray_address", False),
        ("device", "device", False),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = (
                parse_yaml(value, source=f"--{flag.replace('_', '-')}") if parse else value
            )
    if args.ray_address is not None and args.sampler is None and "sampler.backend" not in overrides:
        overrides["sampler.backend"] = "ray"  # an address only makes sense for Ray

    if args.resume is not None:
        for flag in ("config", "logdir"):
            if getattr(args, flag) is not None:
                raise UserError(
                    f"--resume continues the run in its own folder with its stored config; "
                    f"drop --{flag}"
                )
        trainer = Trainer.resume(args.resume, overrides)
        print(f"resuming {trainer.run_dir} after iteration {trainer.iteration}", flush=True)
        if trainer.config_edits:
            taken = ", ".join(f"{k} {a!r} → {b!r}" for k, (a, b) in trainer.config_edits.items())
            print(f"with the edits of {trainer.run_dir / 'config.yaml'}: {taken}", flush=True)
    else:
        config = load_config(args.config, overrides)
        trainer = Trainer(config)
        what = args.config or "the embedded default config (a short run)"
        print(f"training {config.agent} on {config.env.id} with {what}", flush=True)
        print(f"run folder: {trainer.run_dir}", flush=True)
    # A cluster's preemption (SIGTERM) is handled like Ctrl-C: checkpoint, then exit.
    # SIGINT explicitly too: a shell starts `nohup maml-rl train ... &` with SIGINT
    # ignored, and `kill -INT` must still stop it cleanly.
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, _raise_keyboard_interrupt) for s in stops}
    try:
        metrics = trainer.train()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if metrics:
        print(
            f"done: {trainer.iteration} iterations, {trainer.env_steps:,} env steps; "
            f"last return pre-adaptation {metrics['rollout/return_pre_adapt']:.2f}, "
            f"post-adaptation {metrics['rollout/return_post_adapt']:.2f}"
        )
    print(f"checkpoint, metrics.jsonl and TensorBoard logs in {trainer.run_dir}")
    print(f"view them with: tensorboard --logdir {trainer.run_dir.parent}")
    return 0


def evaluate_settings(args: argparse.Namespace) -> EvalSettings:
    """The :class:`~maml_rl.evaluation.EvalSettings` that ``maml-rl evaluate``'s flags ask
    for (``benchmarks/evaluation.py`` has the same flags, but ``--env``).

    Raises:
        ValueError: one line naming the bad flag value.
    """
    from maml_rl.evaluation import (
        EvalSettings,
        parse_baselines,
        parse_fast_lr_schedule,
        parse_multipliers,
    )

    return EvalSettings(
        env_id=getattr(args, "env", None),
        num_tasks=args.num_tasks,
        adapt_steps=args.adapt_steps,
        episodes_per_step=args.episodes_per_step,
        fast_lr_schedule=(
            parse_fast_lr_schedule(args.fast_lr_schedule) if args.fast_lr_schedule else None
        ),
        baselines=parse_baselines(args.baselines),
        seed=args.seed,
        sampler=args.sampler,
        num_workers=args.workers,
        pretrain_iterations=args.pretrain_iterations,
        sb3_multipliers=parse_multipliers(args.sb3_multipliers),
        sb3_tasks=args.sb3_tasks,
        progress=not args.no_progress,
        video_tasks=_video_tasks(args),
    )


def _video_tasks(args: argparse.Namespace) -> int:
    """``--video`` [``--video-tasks N``]: tasks to render (0: no video)."""
    n = getattr(args, "video_tasks", None)
    if n is not None and n < 1:
        raise ValueError(f"--video-tasks must be ≥ 1, got {n}")
    if not getattr(args, "video", False) and n is None:
        return 0
    return n if n is not None else DEFAULT_VIDEO_TASKS


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from maml_rl.evaluation import default_out_dir, evaluate, format_summary
    from maml_rl.malloc import tune_malloc

    tune_malloc()

    settings = evaluate_settings(args)
    out = args.out if args.out is not None else default_out_dir(args.runs)
    result = evaluate(args.runs, settings, out)
    print(format_summary(result))
    print(f"eval.json, adaptation.png and TensorBoard scalars (eval/return_step_<k>) in {out}")
    files = [f for r in result["runs"] for f in r.get("videos", {}).get("files", [])]
    if files:
        print(f"videos (TensorBoard: eval/video_step_<k>, Images tab): {', '.join(files)}")
    return 0


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure fast adaptation on held-out tasks (and baselines)",
        description=(
            "For each held-out task: sample E episodes, take a policy-gradient step, sample "
            "again, K times; report the mean return after 0..K steps with a 95% confidence "
            "interval over tasks. Writes eval.json, adaptation.png and TensorBoard scalars."
        ),
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders or checkpoint files")
    p.add_argument("--env", metavar="ID", help="the family the runs must have been trained on")
    p.add_argument(
        "--num-tasks", type=int, default=40, metavar="N", help="evaluation tasks (default 40)"
    )
    p.add_argument(
        "--adapt-steps", type=int, default=3, metavar="K", help="adaptation steps (default 3)"
    )
    p.add_argument(
        "--episodes-per-step",
        type=int,
        metavar="E",
        help="default: the run's eval.episodes_per_step, else its fast_batch_size",
    )
    p.add_argument(
        "--fast-lr-schedule",
        metavar="LR,LR,...",
        help="step size of each step, the last repeats (default: the run's "
        "eval.fast_lr_schedule, else fast_lr then fast_lr/2)",
    )
    p.add_argument(
        "--baselines",
        default="",
        metavar="NAME,...",
        help="any of random,pretrained,oracle,sb3_ppo (or all); default: none",
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="evaluation seed (0)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN/eval)")
    p.add_argument("--sampler", choices=("sync", "process", "ray"), help="default: the run's")
    p.add_argument("--workers", type=int, metavar="N", help="sampler workers (default: the run's)")
    p.add_argument(
        "--pretrain-iterations",
        type=int,
        metavar="N",
        help="TRPO iterations of the pretrained/oracle baselines (default: the run's)",
    )
    p.add_argument(
        "--sb3-multipliers",
        default="1,10,100",
        metavar="M,...",
        help="SB3 PPO budgets as multiples of K*E*horizon env steps (default 1,10,100)",
    )
    p.add_argument("--sb3-tasks", type=int, metavar="N", help="SB3 PPO on the first N tasks only")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--video",
        action="store_true",
        help="render each run before adaptation and after every step, side by side: "
        "videos/<task>.mp4 (.gif without imageio-ffmpeg) and TensorBoard eval/video_step_<k>",
    )
    p.add_argument(
        "--video-tasks",
        type=int,
        metavar="N",
        help=f"render the first N evaluation tasks (default {DEFAULT_VIDEO_TASKS}; "
        "implies --video)",
    )
    p.set_defaults(func=_cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maml-rl", description="Meta-reinforcement learning on Gymnasium task families."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("envs", help="list the registered task families")
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (its families are listed too); repeatable",
    )
    p.set_defaults(func=_cmd_envs)

    p = sub.add_parser(
        "train",
        help="meta-train a policy",
        description=(
            "Meta-train a policy. Without --config, runs the embedded short Navigation2D "
            "default. Any config key can be set as KEY=VALUE (dotted, e.g. maml.fast_lr=0.05)."
        ),
    )
    p.add_argument("--config", metavar="PATH", help="YAML preset (see configs/)")
    p.add_argument("--logdir", metavar="DIR", help="parent folder of the run folder (logdir)")
    p.add_argument("--seed", metavar="N", help="root seed (seed)")
    p.add_argument("--num-batches", metavar="N", help="meta-iterations (num_batches)")
    p.add_argument("--sampler", metavar="{sync,process,ray}", help="sampler.backend")
    p.add_argument("--workers", metavar="N", help="sampler.num_workers")
    p.add_argument("--ray-address", metavar="ADDR", help="sampler.ray_address (implies ray)")
    p.add_argument("--device", metavar="{cpu,cuda,auto}", help="device of the meta-update")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoint")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=_cmd_train)

    _add_evaluate_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # KEY=VALUE overrides may come before or after options (argparse alone takes one run
    # of positionals), so leftovers that are not options are overrides too.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "train" or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides.extend(extra)
    # As `python -m` does: modules in the working folder can be imported, so a family
    # of one's own is found by its module-qualified id (`my_module:NS/Name-vK`).
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return int(args.func(args))
    except (UserError, ValueError, FileNotFoundError) as exc:
        print(f"maml-rl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RunStopped as exc:
        print(f"maml-rl {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # one the checks before the work could not foresee (a full disk)
        where = f" ({str(exc.filename)!r})" if exc.filename else ""
        print(
            f"maml-rl {args.command}: error: {os_reason(exc)}{where}; {os_remedy(exc)}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt as exc:
        # The trainer's Interrupted says where the checkpoint is and how to resume.
        print(f"maml-rl {args.command}: {str(exc) or 'interrupted'}", file=sys.stderr)
        _release_broken_stdout()
        return 130


def _release_broken_stdout() -> None:
    """After a reader of stdout went away (``maml-rl train | head``), point stdout at
    the null device, so that the interpreter's final flush adds no error of its own."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
