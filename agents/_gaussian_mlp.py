"""Hand-derived first and second derivatives of a Gaussian MLP policy, for MAML-TRPO.

:class:`~maml_rl.agents.linearizers_gaussian_mlp.GaussianMLPLinearizer` computes the
gradient and the Hessian-vector products of :mod:`maml_rl.agents.linearizers` from
these functions instead of autograd. Autograd builds the products from the graphs of
the adaptation and the outer network with about as many large matrix products as a
hand-written pass, but also many more elementwise passes over the ``[N, M, hidden]``
activations (ReLU's ``threshold_backward`` and its derivative, gradient accumulation,
zero-filled gradients) and fresh allocations of ``[N, M, hidden]`` buffers. Here the
same quantities are computed directly, with Pearlmutter's method (forward tangents,
then the derivative of backpropagation along them), from activations and activation
derivatives cached once per TRPO step and reused by every conjugate-gradient
iteration.

Notation, per task (all tensors carry a leading task dimension ``N``; ``M`` samples
per task): hidden layers ``z_l = a_{l-1} W_lᵀ + b_l``, ``a_l = φ(z_l)`` with
``a_0`` the observations, mean ``μ = a_L W_oᵀ + b_o``, per-task log-std ``s``
(``σ = eˢ``). A loss ``ℓ = Σ_m c_m · (−log π(a_m|x_m))`` (REINFORCE, per-sample
coefficients ``c = advantage · weight``) has, with ``r = (a − μ)/σ``::

    ∂ℓ/∂μ = −c r/σ,    ∂ℓ/∂s = −c (r² − 1),
    ∂²ℓ/∂μ² = c/σ²,    ∂²ℓ/∂μ∂s = 2 c r/σ,    ∂²ℓ/∂s² = 2 c r²       (per dimension)

and the KL from a fixed Gaussian, at the point where both coincide, has Hessian
``1/σ²`` in ``μ``, ``2`` in ``s`` and no cross term. Everything else is the chain
rule through the MLP, where only ``φ'`` and ``φ''`` of the activation enter
(``φ'' = 0`` for ReLU). Backpropagation of a cotangent ``δμ`` (:func:`backprop`)::

    δa_L = δμ W_o,   δz_l = φ'(z_l) δa_l,   ∂W_l = Σ_m δz_lᵀ a_{l-1},   δa_{l-1} = δz_l W_l

the derivative of the forward pass along ``u = (dW_l, db_l, ds)`` (:func:`tangent`)::

    dz_l = a_{l-1} dW_lᵀ + da_{l-1} W_lᵀ + db_l,   da_l = φ'(z_l) dz_l,   dμ likewise

and the derivative of backpropagation along ``u``, the inner Hessian-vector product
(:class:`InnerCurvature`)::

    Rδμ    = ∂²ℓ/∂μ² dμ + ∂²ℓ/∂μ∂s ds,           Rδa_L = Rδμ W_o + δμ dW_o
    Rδz_l  = φ'(z_l) Rδa_l + φ''(z_l) δa_l dz_l,  Rδa_{l-1} = Rδz_l W_l + δz_l dW_l
    R∂W_l  = Σ_m (Rδz_lᵀ a_{l-1} + δz_lᵀ da_{l-1})

With 100-unit hidden layers only the products with the hidden-to-hidden weights are
large: 2 in a tangent, 2 in a backpropagation, 4 in its derivative.

Only :class:`~maml_rl.agents.policies.GaussianMLPPolicy` with ``relu`` or ``tanh``
is covered; :func:`supports` says whether a policy is.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch

from maml_rl.agents.policies import GaussianMLPPolicy, Params, Policy

__all__ = [
    "Backprop",
    "Forward",
    "InnerCurvature",
    "Layers",
    "LogStdAtFloor",
    "Tangent",
    "Vector",
    "Workspace",
    "axpy",
    "backprop",
    "cast",
    "forward",
    "supports",
    "tangent",
    "to_layers",
    "to_params",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

#: Per layer ``(weight, bias)``, stacked ``[N, ...]``, the output layer last.
Layers = list[tuple[torch.Tensor, torch.Tensor]]
#: A per-task parameter-space vector: its layers and its log-std ``[N, A]``.
Vector = tuple[Layers, torch.Tensor]


def cast(x: Vector, dtype: torch.dtype) -> Vector:
    """``x`` in another floating-point type."""
    return [(w.to(dtype), b.to(dtype)) for w, b in x[0]], x[1].to(dtype)


def axpy(x: Vector, alpha: float, y: Vector) -> Vector:
    """``x + alpha · y``."""
    layers = [
        (wx + alpha * wy, bx + alpha * by) for (wx, bx), (wy, by) in zip(x[0], y[0], strict=True)
    ]
    return layers, x[1] + alpha * y[1]


def supports(policy: Policy) -> bool:
    """Whether ``policy`` is a Gaussian MLP whose derivatives this module computes."""
    return type(policy) is GaussianMLPPolicy and policy.activation in ("relu", "tanh")


class LogStdAtFloor(Exception):
    """Some log-std sits at or below the policy's floor.

    The policy clamps the log-std there, which makes it constant; the derivatives of
    this module assume it is not.
    """


def _t(w: torch.Tensor) -> torch.Tensor:
    return w.transpose(1, 2)


@dataclasses.dataclass
class Forward:
    """The policy's forward pass at stacked parameters, with what derivatives reuse.

    Attributes:
        weights: ``[N, out, in]`` per layer, the output layer last.
        biases: ``[N, out]`` per layer.
        log_std: ``[N, A]``.
        inputs: ``[N, M, in]``, the input of each layer (``a_0 … a_L``).
        d1: ``[N, M, hidden]`` per hidden layer: ``φ'(z_l)``.
        d2: per hidden layer ``φ''(z_l)``, or ``None`` (ReLU).
        mean: ``[N, M, A]``.
        std: ``[N, 1, A]``.
    """

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    log_std: torch.Tensor
    inputs: list[torch.Tensor]
    d1: list[torch.Tensor]
    d2: list[torch.Tensor | None]
    mean: torch.Tensor
    std: torch.Tensor

    def head(self, k: int) -> Forward:
        """The same pass restricted to the first ``k`` tasks (views, no copy)."""
        return Forward(
            [w[:k] for w in self.weights],
            [b[:k] for b in self.biases],
            self.log_std[:k],
            [a[:k] for a in self.inputs],
            [d[:k] for d in self.d1],
            [None if d is None else d[:k] for d in self.d2],
            self.mean[:k],
            self.std[:k],
        )

    def to(self, dtype: torch.dtype) -> Forward:
        """The same pass in another floating-point type (copies; ``self`` if equal)."""
        if self.mean.dtype == dtype:
            return self
        return Forward(
            [w.to(dtype) for w in self.weights],
            [b.to(dtype) for b in self.biases],
            self.log_std.to(dtype),
            [a.to(dtype) for a in self.inputs],
            [d.to(dtype) for d in self.d1],
            [None if d is None else d.to(dtype) for d in self.d2],
            self.mean.to(dtype),
            self.std.to(dtype),
        )

    def log_prob(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log π(a|x) [N, M], r = (a − μ)/σ [N, M, A])``."""
        r = (actions - self.mean) / self.std
        logp = -(0.5 * r.square() + self.log_std.unsqueeze(1) + _LOG_SQRT_2PI).sum(-1)
        return logp, r


def layer_names(policy: GaussianMLPPolicy) -> list[tuple[str, str]]:
    """``(weight, bias)`` parameter names of each layer, the output layer last."""
    names = [(f"layers.{i}.weight", f"layers.{i}.bias") for i in range(len(policy.layers))]
    return [*names, ("head.weight", "head.bias")]


def forward(
    policy: GaussianMLPPolicy,
    params: Mapping[str, torch.Tensor],
    obs: torch.Tensor,
    *,
    derivatives: bool = True,
    ws: Workspace | None = None,
) -> Forward:
    """The forward pass at stacked ``params`` on ``obs [N, M, obs_dim]``.

    Args:
        policy: the policy (its architecture; its own parameters are not used).
        params: stacked ``[N, ...]`` parameters.
        obs: observations.
        derivatives: also cache ``φ'`` and ``φ''`` (False: only the mean is needed).
        ws: where the activations go (default: fresh tensors).

    Raises:
        LogStdAtFloor: where the policy's clamp of the log-std is active.
    """
    log_std = params["log_std"]
    if bool((log_std <= policy.min_log_std).any()):
        raise LogStdAtFloor(f"a log-std is at the policy's floor {policy.min_log_std}")
    names = layer_names(policy)
    weights = [params[w] for w, _ in names]
    biases = [params[b] for _, b in names]
    inputs = [obs]
    d1: list[torch.Tensor] = []
    d2: list[torch.Tensor | None] = []
    x = obs
    for layer, (w, b) in enumerate(zip(weights[:-1], biases[:-1], strict=True)):
        width = w.shape[1]
        z = torch.baddbmm(b.unsqueeze(1), x, _t(w), out=_out(ws, f"a{layer}", x, width))
        if policy.activation == "relu":
            x = z.relu_()
            if derivatives:  # the 0/1 mask, as floats, in one cheap pass
                d1.append(torch.sign(x, out=_out(ws, f"d1_{layer}", x, width)))
                d2.append(None)
        else:
            x = z.tanh_()
            if derivatives:
                g = torch.mul(x, x, out=_out(ws, f"d1_{layer}", x, width)).neg_().add_(1.0)
                d1.append(g)  # 1 − tanh²
                d2.append(torch.mul(x, g, out=_out(ws, f"d2_{layer}", x, width)).mul_(-2.0))
        inputs.append(x)
    mean = torch.baddbmm(biases[-1].unsqueeze(1), x, _t(weights[-1]))
    return Forward(weights, biases, log_std, inputs, d1, d2, mean, log_std.exp().unsqueeze(1))


class Workspace:
    """Reusable ``[N, M, width]`` buffers, by name, for computations that repeat.

    A fresh buffer of that size costs a page fault per 4 KB the first time it is
    written, because glibc returns such large blocks to the OS when they are freed. A
    TRPO step runs the same sequence of operations on same-shaped batches every time,
    so each operation keeps its output buffer by name, across conjugate-gradient
    iterations, line-search candidates and steps. Whoever holds a workspace must not
    use it for two computations whose results are alive at once: :meth:`scope` gives
    disjoint names.
    """

    def __init__(self, buffers: dict[str, torch.Tensor] | None = None, prefix: str = "") -> None:
        self._buffers = {} if buffers is None else buffers
        self._prefix = prefix

    def scope(self, name: str) -> Workspace:
        """A view of this workspace whose buffer names are prefixed by ``name``."""
        return Workspace(self._buffers, f"{self._prefix}{name}/")

    def get(self, name: str, like: torch.Tensor, last: int) -> torch.Tensor:
        """A buffer ``[*like.shape[:-1], last]`` of ``like``'s dtype and device."""
        key = self._prefix + name
        shape = (*like.shape[:-1], last)
        buf = self._buffers.get(key)
        if (
            buf is None
            or buf.shape != shape
            or buf.dtype != like.dtype
            or buf.device != like.device
        ):
            buf = like.new_empty(shape)
            self._buffers[key] = buf
        return buf

    def nbytes(self) -> int:
        """Memory held by all the buffers of the underlying workspace."""
        return sum(b.numel() * b.element_size() for b in self._buffers.values())


def _out(ws: Workspace | None, name: str, like: torch.Tensor, last: int) -> torch.Tensor | None:
    return None if ws is None else ws.get(name, like, last)


def _weight_grad(
    delta: torch.Tensor,
    inputs: torch.Tensor,
    extra: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``Σ_m δ_mᵀ a_m [N, out, in]`` (``+ Σ_m δ'_mᵀ a'_m`` for ``extra = (δ', a')``).

    Computed as ``(aᵀ δ)ᵀ`` when the layer has fewer inputs than outputs: BLAS is far
    slower at a ``[out, in]`` result with a tiny ``in`` (the observation layer) than at
    its transpose.
    """
    if inputs.shape[-1] < delta.shape[-1]:
        g = torch.bmm(_t(inputs), delta)
        if extra is not None:
            g.baddbmm_(_t(extra[1]), extra[0])
        return _t(g)
    g = torch.bmm(_t(delta), inputs)
    if extra is not None:
        g.baddbmm_(_t(extra[0]), extra[1])
    return g


@dataclasses.dataclass
class Backprop:
    """Gradients of a loss from its cotangent at the mean, and the cotangents inside.

    Attributes:
        grads: per layer ``(∂/∂W [N, out, in], ∂/∂b [N, out])``, the output layer last.
        delta_a: ``[N, M, hidden]`` per hidden layer: the cotangent of ``a_l`` (empty
            unless kept).
        delta_z: ``[N, M, hidden]`` per hidden layer: the cotangent of ``z_l`` (same).
    """

    grads: Layers
    delta_a: list[torch.Tensor]
    delta_z: list[torch.Tensor]

    def to(self, dtype: torch.dtype) -> Backprop:
        """The same cotangents in another floating-point type (copies)."""
        return Backprop(
            [(w.to(dtype), b.to(dtype)) for w, b in self.grads],
            [d.to(dtype) for d in self.delta_a],
            [d.to(dtype) for d in self.delta_z],
        )

    def head(self, k: int) -> Backprop:
        """Restricted to the first ``k`` tasks (views)."""
        return Backprop(
            [(w[:k], b[:k]) for w, b in self.grads],
            [d[:k] for d in self.delta_a],
            [d[:k] for d in self.delta_z],
        )


def backprop(
    fw: Forward, delta_mean: torch.Tensor, ws: Workspace | None = None, *, keep: bool = True
) -> Backprop:
    """Backpropagate the cotangent ``delta_mean [N, M, A]`` of the mean.

    Args:
        fw: the forward pass.
        delta_mean: the loss's cotangent of the mean.
        ws: where the inner cotangents go (default: fresh tensors).
        keep: return the inner cotangents (False: gradients only; fewer buffers).
    """
    num_hidden = len(fw.d1)
    grads = [(_weight_grad(delta_mean, fw.inputs[-1]), delta_mean.sum(1))]
    delta_a: list[torch.Tensor] = []
    delta_z: list[torch.Tensor] = []
    if num_hidden:
        width = fw.d1[-1].shape[-1]
        da = torch.bmm(
            delta_mean, fw.weights[-1], out=_out(ws, f"da{num_hidden - 1}", fw.inputs[-1], width)
        )
    for layer in reversed(range(num_hidden)):
        if keep:
            delta_a.append(da)
            dz = torch.mul(da, fw.d1[layer], out=_out(ws, f"dz{layer}", da, da.shape[-1]))
            delta_z.append(dz)
        else:
            dz = da.mul_(fw.d1[layer])
        grads.append((_weight_grad(dz, fw.inputs[layer]), dz.sum(1)))
        if layer > 0:
            width = fw.d1[layer - 1].shape[-1]
            da = torch.bmm(dz, fw.weights[layer], out=_out(ws, f"da{layer - 1}", dz, width))
    delta_a.reverse()
    delta_z.reverse()
    return Backprop(_reorder(grads), delta_a, delta_z)


@dataclasses.dataclass
class Tangent:
    """Forward-mode derivatives along a parameter direction.

    Attributes:
        mean: ``[N, M, A]``, the derivative of the mean.
        a: ``[N, M, hidden]`` per hidden layer: the derivative of ``a_l``.
        z: per hidden layer, the derivative of ``z_l`` (kept for ``φ''``; else ``None``).
    """

    mean: torch.Tensor
    a: list[torch.Tensor]
    z: list[torch.Tensor | None]


def tangent(fw: Forward, u: Layers, ws: Workspace | None = None) -> Tangent:
    """The derivative of the forward pass along ``u`` (per layer ``(dW, db)``)."""
    da_list: list[torch.Tensor] = []
    dz_list: list[torch.Tensor | None] = []
    da: torch.Tensor | None = None
    for layer, (dw, db) in enumerate(u[:-1]):
        width = fw.d1[layer].shape[-1]
        out = None if ws is None else ws.get(f"tz{layer}", fw.inputs[layer], width)
        dz = torch.baddbmm(db.unsqueeze(1), fw.inputs[layer], _t(dw), out=out)
        if da is not None:
            dz.baddbmm_(da, _t(fw.weights[layer]))
        if fw.d2[layer] is None:  # ReLU: dz is not needed again
            da = dz.mul_(fw.d1[layer])
            dz_list.append(None)
        else:
            out = None if ws is None else ws.get(f"ta{layer}", dz, width)
            da = torch.mul(dz, fw.d1[layer], out=out)
            dz_list.append(dz)
        da_list.append(da)
    dw, db = u[-1]
    dmean = torch.baddbmm(db.unsqueeze(1), fw.inputs[-1], _t(dw))
    if da is not None:
        dmean.baddbmm_(da, _t(fw.weights[-1]))
    return Tangent(dmean, da_list, dz_list)


class InnerCurvature:
    """``u ↦ ∇²L u`` per task, for the REINFORCE inner loss at one inner step.

    Built from the step's forward pass and gradient backpropagation (both reused).
    Each call returns fresh parameter-sized tensors; its ``[N, M, hidden]`` temporaries
    live in ``scratch``, which other computations may share between calls.

    Args:
        fw: the forward pass at the step's parameters on its observations.
        bp: the backpropagation of the loss's gradient (``delta_mean = −c r/σ``).
        coef: ``[N, M]`` per-sample coefficients ``c`` (advantage times weight).
        r: ``[N, M, A]`` standardised actions ``(a − μ)/σ``.
        ws: where the step-constant ``[N, M, hidden]`` terms go (default: fresh).
        scratch: where each call's temporaries go (default: a private workspace).
    """

    def __init__(
        self,
        fw: Forward,
        bp: Backprop,
        coef: torch.Tensor,
        r: torch.Tensor,
        ws: Workspace | None = None,
        scratch: Workspace | None = None,
    ) -> None:
        self.fw, self.bp, self.coef, self.r = fw, bp, coef, r
        c = coef.unsqueeze(-1)
        self.delta_mean = -c * r / fw.std
        self.c_var = c / fw.std.square()  # ∂²ℓ/∂μ²
        self.c_cross = 2.0 * c * r / fw.std  # ∂²ℓ/∂μ∂s
        self.c_ss = (2.0 * c * r.square()).sum(1)  # Σ_m ∂²ℓ/∂s²  [N, A]
        # φ''(z) δa: the activation's curvature term, fixed for the step (tanh only).
        self.d2_delta = [
            None if d2 is None else torch.mul(d2, da, out=_out(ws, f"d2da{i}", da, da.shape[-1]))
            for i, (d2, da) in enumerate(zip(fw.d2, bp.delta_a, strict=True))
        ]
        self.scratch = Workspace() if scratch is None else scratch

    def head(
        self, k: int, ws: Workspace | None = None, scratch: Workspace | None = None
    ) -> InnerCurvature:
        """Restricted to the first ``k`` tasks."""
        return InnerCurvature(
            self.fw.head(k), self.bp.head(k), self.coef[:k], self.r[:k], ws, scratch
        )

    def to(
        self, dtype: torch.dtype, ws: Workspace | None = None, scratch: Workspace | None = None
    ) -> InnerCurvature:
        """The same operator computed in another floating-point type (``self`` if equal).

        Its products take and return vectors of that type.
        """
        if self.fw.mean.dtype == dtype:
            return self
        return InnerCurvature(
            self.fw.to(dtype), self.bp.to(dtype), self.coef.to(dtype), self.r.to(dtype), ws, scratch
        )

    def __call__(self, vec: Vector) -> Vector:
        """``∇²L u`` per task, for ``vec = u`` (per-task layers and log-std)."""
        fw, bp, ws = self.fw, self.bp, self.scratch
        u, u_log_std = vec
        tg = tangent(fw, u, ws)
        ds = u_log_std.unsqueeze(1)
        r_mean = torch.addcmul(self.c_var * tg.mean, self.c_cross, ds)  # R(∂ℓ/∂μ)
        r_log_std = (self.c_cross * tg.mean).sum(1) + self.c_ss * u_log_std
        num_hidden = len(fw.d1)
        last = (self.delta_mean, tg.a[-1]) if num_hidden else None
        hu = [(_weight_grad(r_mean, fw.inputs[-1], last), r_mean.sum(1))]
        if num_hidden:
            out = ws.get(f"ra{num_hidden - 1}", fw.inputs[-1], fw.d1[-1].shape[-1])
            r_a = torch.bmm(r_mean, fw.weights[-1], out=out).baddbmm_(self.delta_mean, u[-1][0])
        for layer in reversed(range(num_hidden)):
            r_z = r_a.mul_(fw.d1[layer])
            d2_delta, dz = self.d2_delta[layer], tg.z[layer]
            if d2_delta is not None and dz is not None:
                r_z.addcmul_(d2_delta, dz)
            prev = (bp.delta_z[layer], tg.a[layer - 1]) if layer > 0 else None
            hu.append((_weight_grad(r_z, fw.inputs[layer], prev), r_z.sum(1)))
            if layer > 0:
                out = ws.get(f"ra{layer - 1}", r_z, fw.d1[layer - 1].shape[-1])
                r_a = torch.bmm(r_z, fw.weights[layer], out=out)
                r_a.baddbmm_(bp.delta_z[layer], u[layer][0])
        return _reorder(hu), r_log_std


def _reorder(
    grads_output_first: list[tuple[torch.Tensor, torch.Tensor]],
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[out, L, …, 1]`` → ``[1, …, L, out]``."""
    return [*reversed(grads_output_first[1:]), grads_output_first[0]]


def to_layers(
    policy: GaussianMLPPolicy, params: Mapping[str, torch.Tensor]
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """A parameter dict as per-layer ``(W, b)`` pairs and the log-std."""
    return [(params[w], params[b]) for w, b in layer_names(policy)], params["log_std"]


def to_params(
    policy: GaussianMLPPolicy,
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    log_std: torch.Tensor,
) -> Params:
    """The inverse of :func:`to_layers`, keyed like ``policy.named_parameters()``."""
    by_name: Params = {"log_std": log_std}
    for (wn, bn), (w, b) in zip(layer_names(policy), layers, strict=True):
        by_name[wn], by_name[bn] = w, b
    return {name: by_name[name] for name, _ in policy.named_parameters()}
