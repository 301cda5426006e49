"""The ``maml-rl`` command line.

Subcommands:

* ``maml-rl envs`` — list the registered task families.

Every error a user can cause ends in one line on stderr and exit status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


class UserError(Exception):
    """An error caused by user input: printed as one line, exit status 2."""


def _cmd_envs(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from maml_rl.tasks import family_class, family_ids

    rows = []
    for env_id in family_ids():
        cls = family_class(env_id)
        spec = gym.spec(env_id)
        rows.append((env_id, str(spec.max_episode_steps), cls.task_distribution))
    header = ("id", "horizon", "task distribution")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(2)]
    for r in [header, *rows]:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maml-rl", description="Meta-reinforcement learning on Gymnasium task families."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("envs", help="list the registered task families")
    p.set_defaults(func=_cmd_envs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (UserError, ValueError, FileNotFoundError) as exc:
        print(f"maml-rl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"maml-rl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
