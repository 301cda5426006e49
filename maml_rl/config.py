"""Typed, validated training configuration.

A :class:`Config` is a tree of frozen dataclasses. Every field has a type, a
default, an optional range and a docstring; the defaults form the *embedded
default run* (a short Navigation2D meta-training that finishes in a minute or
two on a laptop CPU). Presets in ``configs/*.yaml`` override any subset of the
fields, and ``KEY=VALUE`` overrides (dotted keys, YAML-parsed values) apply on
top::

    cfg = load_config("configs/halfcheetah_vel_trpo.yaml", ["maml.fast_lr=0.05", "seed=3"])
    cfg.maml.fast_lr          # 0.05
    cfg.to_dict()             # plain nested dict (YAML/JSON/checkpoint friendly)

Anything wrong — an unknown key (the closest valid key is suggested), a value of
the wrong type, a value out of range — raises *one* :class:`ValueError` that
names the dotted key, what was expected and what was given. The agents' sections
live next to the agents that take them (each hyperparameter has one home, where it is
used); this module assembles the run's config from them.

The names follow DESIGN.md's vocabulary (``meta_batch_size``, ``fast_batch_size``,
``fast_lr``, ``max_kl``, ...), grouped by who uses them:

=========== ==============================================================
``env``     the task family (id, constructor kwargs, episode length)
``policy``  the MLP policy
``sampler`` the rollout backend and its workers
``maml``    the meta-learning loop shared by every agent (tasks, episodes,
            inner step, discounting): :class:`maml_rl.agents.maml.MAMLConfig`
``trpo``    the MAML-TRPO outer step (``agent: maml_trpo``):
            :class:`maml_rl.agents.maml_trpo.TRPOConfig`
``ppo``     the MAML-PPO outer step (``agent: maml_ppo``):
            :class:`maml_rl.agents.maml_ppo.PPOConfig`
``eval``    the defaults of ``maml-rl evaluate`` for the run (its flags override
            them; training ignores this section)
=========== ==============================================================
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from maml_rl.agents.maml import MAMLConfig
from maml_rl.agents.maml_ppo import PPOConfig
from maml_rl.agents.maml_trpo import TRPOConfig
from maml_rl.validation import Validated, bounded, build, got

__all__ = [
    "Config",
    "EnvConfig",
    "EvalConfig",
    "MAMLConfig",
    "PPOConfig",
    "PolicyConfig",
    "SamplerConfig",
    "TRPOConfig",
    "apply_overrides",
    "config_from_dict",
    "dump_yaml",
    "load_config",
    "parse_override",
    "parse_yaml",
]


# -- sections ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EnvConfig(Validated):
    """The task family."""

    id: str = "MetaRL/Navigation2D-v0"
    """Registered task-family id (``maml-rl envs`` lists them)."""

    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Keyword arguments for the env's constructor (``gymnasium.make(id, **kwargs)``)."""

    max_episode_steps: int | None = bounded(None, ge=1)
    """Episode length (time limit); ``null`` keeps the family's registered horizon."""


@dataclasses.dataclass(frozen=True)
class PolicyConfig(Validated):
    """The Gaussian (continuous actions) or categorical (discrete actions) MLP policy."""

    hidden_sizes: tuple[int, ...] = bounded((100, 100), ge=1)
    """Hidden layer widths (the MAML paper: two layers of 100)."""

    activation: Literal["relu", "tanh"] = "relu"
    """Hidden-layer nonlinearity (the MAML paper: ReLU)."""

    init_std: float = bounded(1.0, gt=0.0)
    """Initial action standard deviation of the Gaussian policy (state-independent, learned)."""

    init: Literal["default", "xavier"] = "default"
    """Initialisation of the hidden layers: ``default`` (torch's: uniform weights and biases)
    or ``xavier`` (Glorot-uniform weights, zero biases, as the original MAML code). The
    output layer starts near zero in both."""


@dataclasses.dataclass(frozen=True)
class SamplerConfig(Validated):
    """Where the rollouts run (the same seed gives the same episodes on every backend)."""

    backend: Literal["sync", "process", "ray"] = "sync"
    """``sync``: in the trainer process; ``process``: local worker processes; ``ray``: Ray
    actors."""

    num_workers: int = bounded(1, ge=1)
    """Number of worker processes / Ray actors (ignored by ``sync``)."""

    ray_address: str | None = None
    """Address of a running Ray cluster (``ray start --head``); ``null`` starts a local one."""

    num_threads: int = bounded(0, ge=0)
    """Threads on which each sampling process steps the MuJoCo simulations (mujoco ≥ 3.17);
    0: the machine's cores, divided among the workers. Episodes do not depend on it."""

    restart_workers: bool = False
    """Replace a ``process`` worker or Ray actor that dies (killed, out of memory) and play
    its episodes again — the same batch, bit for bit; ``false``: training stops, with a
    checkpoint of the last finished iteration and the command that resumes it."""

    ray_connect_timeout_s: float = bounded(30.0, gt=0.0)
    """Seconds a Ray cluster at ``ray_address`` has to answer (an address where nothing
    listens fails at once)."""


@dataclasses.dataclass(frozen=True)
class EvalConfig(Validated):
    """How ``maml-rl evaluate`` adapts this run by default (its flags override these).

    The protocol belongs with the experiment: a preset that reproduces a paper's table
    carries the paper's test protocol, so ``maml-rl evaluate RUN`` needs no flags.
    """

    episodes_per_step: int | None = bounded(None, ge=1)
    """Episodes per task and adaptation step; ``null``: ``maml.fast_batch_size``."""

    fast_lr_schedule: tuple[float, ...] | None = bounded(None, gt=0.0)
    """Step size of each adaptation step, the last one repeating; ``null``: ``maml.fast_lr``
    for the first step and half of it after (the MAML paper's rule)."""


@dataclasses.dataclass(frozen=True)
class Config(Validated):
    """A complete training run. The defaults are the embedded short Navigation2D run."""

    agent: Literal["maml_trpo", "maml_ppo"] = "maml_trpo"
    """Meta-learner: ``maml_trpo`` (uses ``trpo.*``) or ``maml_ppo`` (uses ``ppo.*``)."""

    seed: int = bounded(1, ge=0)
    """Root seed: tasks, rollouts and the policy's initialisation all derive from it."""

    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Torch device of the meta-update (rollouts always run on CPU); ``auto``: CUDA if present."""

    update_threads: int = bounded(1, ge=1)
    """Torch threads for the meta-update on CPU (sampling always uses 1 per process). 1 by
    default: more threads pay only on cores nothing else uses (idle OpenMP threads spin and
    slow everything else down). Set 2 or more on a machine the run has to itself."""

    num_batches: int = bounded(30, ge=1)
    """Meta-iterations (outer updates) to run."""

    checkpoint_every: int = bounded(10, ge=0)
    """Write ``checkpoint.pt`` every this many iterations (and always at the end); 0: only
    at the end."""

    keep_checkpoint_every: int = bounded(0, ge=0)
    """Also keep a copy ``checkpoints/iteration_<N>.pt`` every this many iterations, to
    evaluate the policy along the run (``maml-rl evaluate RUN/checkpoints/*.pt``); 0: keep
    only the latest ``checkpoint.pt``."""

    max_rejected_iterations: int = bounded(5, ge=0)
    """Stop training (after checkpointing) once this many consecutive meta-steps were
    rejected, at least one of them for non-finite values (a diverged run) or a meta-gradient
    that is exactly zero (a run that cannot move), naming the likely cause; 0: never stop.
    Rejections by a TRPO line search alone (finite, no better step found) never stop a
    run."""

    video_every: int = bounded(0, ge=0)
    """Log a video of adaptation to TensorBoard (``eval/video_step_<k>``) every this many
    iterations: the policy before and after each of ``num_adapt_steps`` steps on
    ``video_tasks`` tasks of the evaluation stream, as ``maml-rl evaluate --video`` renders
    it; 0 (default): never. Training itself is unchanged (its own random streams)."""

    video_tasks: int = bounded(2, ge=1)
    """Tasks in each training video (``video_every``)."""

    logdir: str = "runs"
    """Parent folder of the run folder."""

    run_name: str | None = None
    """Run folder name under ``logdir``; ``null``: ``<env-name>-<agent>-<timestamp>``."""

    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    """The task family."""

    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
    """The policy network."""

    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)
    """The rollout backend."""

    maml: MAMLConfig = dataclasses.field(default_factory=MAMLConfig)
    """The meta-learning loop."""

    trpo: TRPOConfig = dataclasses.field(default_factory=TRPOConfig)
    """MAML-TRPO settings."""

    ppo: PPOConfig = dataclasses.field(default_factory=PPOConfig)
    """MAML-PPO settings."""

    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    """Defaults of ``maml-rl evaluate`` for this run (training ignores them)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sampler.ray_address is not None and self.sampler.backend != "ray":
            raise ValueError(
                f"sampler.ray_address is only used by sampler.backend=ray, got backend="
                f"{self.sampler.backend!r}; set sampler.backend=ray or drop the address"
            )
        if self.run_name is not None and (
            not self.run_name or "/" in self.run_name or self.run_name in (".", "..")
        ):
            raise ValueError(
                f"run_name must be a plain folder name (no '/'), got {self.run_name!r}"
            )

    # -- conversions -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A nested dict of plain Python values (tuples become lists); round-trips through
        :func:`config_from_dict`."""
        return _to_plain(self)

    def flat(self) -> dict[str, Any]:
        """The config as ``{"dotted.key": value}`` (e.g. for a hyperparameter table)."""
        out: dict[str, Any] = {}

        def walk(d: Mapping[str, Any], prefix: str) -> None:
            for k, v in d.items():
                if isinstance(v, Mapping) and v and k != "kwargs":
                    walk(v, f"{prefix}{k}.")
                else:
                    out[f"{prefix}{k}"] = v

        walk(self.to_dict(), "")
        return out

    def replace(self, overrides: Sequence[str] | Mapping[str, Any]) -> Config:
        """A new config with dotted-key overrides applied (``["maml.fast_lr=0.05"]`` or
        ``{"maml.fast_lr": 0.05}``), validated."""
        return config_from_dict(apply_overrides(self.to_dict(), overrides))

    @property
    def env_name(self) -> str:
        """The family id without its namespace (``"Navigation2D-v0"``)."""
        return self.env.id.rsplit("/", 1)[-1]


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def config_from_dict(data: Mapping[str, Any] | None) -> Config:
    """Build and validate a :class:`Config` from a (partial) nested dict.

    Missing keys keep their defaults. Raises one :class:`ValueError` naming the
    dotted key on an unknown key, a wrong type or an out-of-range value.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"a config must be a mapping of keys, got {got(data)}")
    return build(Config, data)


# -- YAML and overrides -----------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """A safe YAML loader that also reads ``1e-5`` as a float (YAML 1.2 rules).

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-5``) and ``1e-5`` is a
    string — a classic trap for learning rates and damping constants.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text (floats like ``1e-5`` included); a syntax error is one line."""
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{source}: invalid YAML{where}: {problem}") from None


def dump_yaml(data: Mapping[str, Any]) -> str:
    """YAML text for a nested dict of plain values, keys in their given order."""
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=None)


_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"maml.fast_lr=0.05"`` into ``("maml.fast_lr", 0.05)`` (the value is YAML)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not _KEY_RE.match(key):
        raise ValueError(
            f"overrides must look like KEY=VALUE with a dotted key (e.g. maml.fast_lr=0.05), "
            f"got {text!r}"
        )
    return key, parse_yaml(raw, source=f"override {text!r}")


def apply_overrides(
    data: Mapping[str, Any], overrides: Sequence[str] | Mapping[str, Any]
) -> dict[str, Any]:
    """A deep copy of the nested dict ``data`` with dotted-key overrides set.

    ``overrides`` is a list of ``"KEY=VALUE"`` strings or a ``{dotted_key: value}``
    mapping. Keys are not checked here (validation of the result names any unknown
    key and suggests the closest one).
    """
    import copy

    out = copy.deepcopy(dict(data))
    items = (
        list(overrides.items())
        if isinstance(overrides, Mapping)
        else [parse_override(o) for o in overrides]
    )
    for key, value in items:
        parts = key.split(".")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                section = ".".join(parts[: depth + 1])
                raise ValueError(
                    f"override {key!r}: '{section}' is a value, not a section "
                    f"(set it with {section}=VALUE)"
                )
            node = child
        node[parts[-1]] = value
    return out


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] | Mapping[str, Any] = ()
) -> Config:
    """Load a config: the embedded default, updated by a YAML file, then by overrides.

    Args:
        path: a YAML preset (any subset of the keys); ``None`` for the embedded default.
        overrides: ``["section.key=value", ...]`` or ``{"section.key": value}``.

    Raises:
        ValueError: one line — a missing, unreadable or empty file, invalid YAML, an
            unknown key, a wrong type or an out-of-range value (naming the dotted key).
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ValueError(
                f"config file {str(path)!r} not found (presets live in configs/, e.g. "
                "configs/navigation2d_trpo.yaml)"
            )
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read config file {str(path)!r}: {exc}") from None
        loaded = parse_yaml(text, source=str(path))
        if loaded is None:  # nothing but blank lines and comments
            raise ValueError(
                f"config file {str(path)!r} is empty; put config keys in it (see configs/) or "
                "drop --config for the embedded default"
            )
        if not isinstance(loaded, Mapping):
            raise ValueError(f"{path}: a config file must be a mapping of keys, got {got(loaded)}")
        data = dict(loaded)
        try:
            config_from_dict(data)  # report file errors with the file's name
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    if overrides:
        data = apply_overrides(data, overrides)
    return config_from_dict(data)
