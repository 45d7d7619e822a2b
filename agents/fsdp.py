"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for models whose training state does not fit on
one device: the policy's weights, gradients and Adam moments split between the ranks.

With ``fsdp=True`` (``tokengym train --nproc N --fsdp``) :func:`shard_policy` shards every
decoder layer of the policy LM, then the LM itself (embeddings, final norm, tied head), and the
frozen reference and separate value trunk the same way. Each rank then holds ``1/N`` of each
weight (a ``DTensor``), of its gradient and of Adam's moments, so the model's training state
takes ``1/N`` of the memory it takes in one process, at the price of gathering each layer's
weights for its forward and backward. The value head (``hidden`` + 1 numbers) stays whole on
every rank and its gradient is summed by :func:`~tokengym.agents.distributed.all_reduce_grads`,
as without FSDP.

What stays as it is:

- the losses: FSDP's reduce-scatter SUMS the ranks' gradients (divide factor 1), as
  ``all_reduce_grads`` does without FSDP, because each rank's loss is already divided by the
  global token count; :func:`clip_grad_norm` takes the norm over every rank's shards;
- the checkpoint files: :func:`full_weights` and :func:`full_optimizer_state` gather whole tensors
  (collectives: every rank calls them), rank 0 writes them as a run without FSDP would, and
  :func:`load_full_state` shards them again. A checkpoint does not depend on ``fsdp`` or the
  world size;
- rollouts and rank 0's evaluations: :func:`gathered` holds the whole weights on every rank for
  the block (the rollout's one-token forwards would otherwise gather every layer at every token;
  rank 0 alone can then forward without the others). Its peak memory is the model's weights once,
  not its training state.

Not supported with FSDP (clear errors): one process, LoRA, the compiled decode path.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from tokengym.agents.distributed import all_reduce_float, is_sharded, max_int, world_size


def _fsdp() -> Any:
    from torch.distributed import fsdp  # torch >= 2.6; imported only when asked for
    return fsdp


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks (transformers' ``_no_split_modules``: the decoder layers)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"fsdp: {type(model).__name__} names no decoder layer class "
                         "(_no_split_modules) to shard by; it is not a transformers model")
    return blocks


def shard_policy(policy: nn.Module) -> None:
    """Shard the policy LM, the reference and the separate value trunk in place (module
    docstring). Needs a process group of two or more ranks; ``ValueError`` otherwise, or with
    LoRA."""
    if world_size() < 2:
        raise ValueError("fsdp=True shards the model between processes: start several with "
                         "tokengym train --nproc N (or torchrun); in one process leave it off")
    if getattr(policy, "lora", False):
        raise ValueError("fsdp=True with lora=True is not supported: LoRA's training state is "
                         "already small; use one or the other")
    from torch.distributed.device_mesh import init_device_mesh
    device = next(policy.parameters()).device
    mesh = init_device_mesh(device.type, (world_size(),))
    fsdp = _fsdp()
    for model in (policy.lm, getattr(policy, "ref", None), getattr(policy, "value_trunk", None)):
        if model is None:
            continue
        # reshard_after_forward=True for the root too (FSDP keeps a root's weights whole after
        # its forward by default, and the reference's no-grad forwards have no backward after
        # which to free them).
        for block in _blocks(model):
            fsdp.fully_shard(block, mesh=mesh, reshard_after_forward=True)
        fsdp.fully_shard(model, mesh=mesh, reshard_after_forward=True)
        for module in model.modules():
            if isinstance(module, fsdp.FSDPModule):
                module.set_gradient_divide_factor(1.0)  # a sum, as all_reduce_grads
                # ... as a plain SUM (gloo has no pre-multiplied sum; NCCL is zero-copy with it)
                module.set_force_sum_reduction_for_comms(True)


def _roots(module: nn.Module) -> list[Any]:
    """Every FSDP-sharded module inside ``module`` (none without FSDP)."""
    if not any(is_sharded(p) for p in module.parameters()):
        return []
    fsdp = _fsdp()
    return [m for m in module.modules() if isinstance(m, fsdp.FSDPModule)]


_held: dict[int, int] = {}  # id(FSDP module) -> open gathered() blocks holding its whole weights


@contextlib.contextmanager
def gathered(module: nn.Module) -> Iterator[None]:
    """Whole weights of ``module``'s sharded parts on every rank for the block. Entering gathers
    them (a collective: every rank must enter), so one rank may forward alone inside; blocks nest
    (the outermost gathers and frees). No-op without FSDP."""
    sharded = _roots(module)
    fresh = [m for m in sharded if _held.get(id(m), 0) == 0]
    for m in sharded:
        _held[id(m)] = _held.get(id(m), 0) + 1
    try:
        for m in fresh:
            m.set_reshard_after_forward(False, recurse=False)
            m.unshard()
        yield
    finally:
        for m in sharded:
            _held[id(m)] -= 1
        for m in fresh:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)
            del _held[id(m)]


def clip_grad_norm(params: Iterable[nn.Parameter], max_norm: float) -> float:
    """``torch.nn.utils.clip_grad_norm_`` over parameters of which some are sharded: the norm of
    the whole gradient (every rank's shards, plus the whole tensors once); returns it."""
    params = list(params)
    grads = [p.grad for p in params if p.grad is not None]
    if not any(is_sharded(g) for g in grads):
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    local = sum(float(g.to_local().double().pow(2).sum()) for g in grads if is_sharded(g))
    whole = sum(float(g.double().pow(2).sum()) for g in grads if not is_sharded(g))
    norm = math.sqrt(all_reduce_float(local) + whole)
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)
    return norm


def all_finite(params: Iterable[nn.Parameter]) -> bool:
    """Whether every weight is finite, on every rank's shards (the same answer on every rank)."""
    bad = 0
    for p in params:
        local = p.to_local() if is_sharded(p) else p
        bad += int(not bool(torch.isfinite(local).all()))
    return max_int(bad) == 0


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def full_weights(named: Iterable[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Name -> whole tensor on the CPU; a collective when some are sharded (every rank calls it
    with the same names, in the same order)."""
    return {name: _full(t.detach()).contiguous().cpu() for name, t in named}


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with whole tensors (a collective under FSDP, as above)."""
    state = optimizer.state_dict()
    out: dict[int, dict[str, Any]] = {}
    for index in sorted(state["state"]):
        out[index] = {key: _full(value) if isinstance(value, torch.Tensor) else value
                      for key, value in sorted(state["state"][index].items())}
    return {"state": out, "param_groups": state["param_groups"]}


def _shard_like(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import distribute_tensor
    return distribute_tensor(full.to(param.device, param.dtype), param.device_mesh,
                             param.placements)


def load_full_weights(named: Iterable[tuple[str, nn.Parameter]],
                      weights: dict[str, torch.Tensor]) -> None:
    """Copy whole tensors ``weights`` into parameters, sharding them where the parameter is."""
    with torch.no_grad():
        for name, p in named:
            p.copy_(_shard_like(weights[name], p) if is_sharded(p) else weights[name])


def shard_optimizer_state(state: dict[str, Any], optimizer: torch.optim.Optimizer
                          ) -> dict[str, Any]:
    """``state`` (whole tensors, as :func:`full_optimizer_state` gives) with each parameter's
    moments sharded as that parameter is, ready for ``optimizer.load_state_dict``."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    ids = [i for group in state["param_groups"] for i in group["params"]]
    out: dict[Any, dict[str, Any]] = {}
    for index, param in zip(ids, params):
        entry = state["state"].get(index)
        if entry is None:
            continue
        out[index] = {key: _shard_like(value, param)
                      if is_sharded(param) and isinstance(value, torch.Tensor)
                      and value.shape == param.shape else value
                      for key, value in entry.items()}
    return {"state": out, "param_groups": state["param_groups"]}
