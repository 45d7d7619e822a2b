"""The compiled decode path: a preallocated KV cache and one compiled single-token step.

:class:`KVCacheDecoder` (``agents/rollout.py``, the eager path) grows a ``DynamicCache`` and the
attention mask by one column per step, so every step has new shapes and runs as hundreds of small
kernels launched from Python; on a GPU that launch overhead, not the GPU, sets the speed.
:class:`StaticCacheDecoder` keeps every tensor of a step at a fixed shape and address:

- keys and values of every layer in buffers ``(N, H_kv, L, D)`` allocated once
  (:class:`PreallocatedKVCache`), ``L = P + G``; step ``t`` writes column ``P + t``;
- the attention mask as an additive ``(N, 1, 1, L)`` buffer (0 where a column may be attended,
  the dtype's minimum elsewhere; columns are opened as they are written) and the position ids as
  an ``(N, 1)`` buffer, both updated in place inside the step;

so the step (model forward + value head) can be compiled once with ``torch.compile``: on CUDA
with ``mode="reduce-overhead"`` (the whole step replays as one CUDA graph), elsewhere with the
default mode. The prompt's forward (the "prefill") runs eagerly, once per rollout. The decoder and
its compiled step are kept with the model and reused by every rollout of the same shape.

The Gym contract is unchanged: :func:`~tokengym.agents.rollout.collect_rollout` still samples
outside the step, copies the sampled tokens to the host once per step and gives the env one token
per row per ``step()``. Where compiling is unavailable (no ``torch.compile`` support, no C++
compiler for the CPU backend, a model with sliding-window attention) or fails, one warning says so
and the rollout runs uncompiled.
"""

from __future__ import annotations

import inspect
import shutil
import warnings
from typing import Any

import torch


def forward_kwarg_names(model: torch.nn.Module) -> tuple[str, str | None]:
    """Names of the KV-cache and keep-last-logits arguments of ``model.forward``.

    transformers 5.x calls the cache ``cache`` (``past_key_values`` is deprecated); 4.x calls it
    ``past_key_values``. The output field has the same name as the argument.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    cache = "cache" if "cache" in params else "past_key_values"
    keep = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
    return cache, keep


def use_compile(compile: bool | None, device: torch.device) -> bool:
    """The ``compile`` setting resolved for ``device``: None means on CUDA only.

    On CPU the compiled path was not faster than the eager one (``docs/ppo.md``, "Speed").
    """
    return device.type == "cuda" if compile is None else bool(compile)


def compile_unavailable(model: torch.nn.Module, device: torch.device) -> str | None:
    """Why the compiled decode path cannot run here, or None when it can."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        from torch import _dynamo

        if not _dynamo.is_dynamo_supported():
            return "torch.compile does not support this Python version"
    except Exception as exc:  # noqa: BLE001 - any import failure means "unavailable"
        return f"torch._dynamo failed to import ({exc})"
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "torch.compile's CPU backend needs a C++ compiler (g++ or clang++) on the PATH"
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    layer_types = getattr(config, "layer_types", None) or ()
    if any("sliding" in str(t) for t in layer_types) or (
            getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)):
        return "the preallocated KV cache does not implement sliding-window attention"
    return None


def mark_static(tensor: torch.Tensor) -> None:
    """Tell ``torch.compile`` that ``tensor`` keeps its address (CUDA graphs read it in place)."""
    from torch import _dynamo

    _dynamo.mark_static_address(tensor)


class PreallocatedKVCache:
    """Keys and values of every layer in fixed buffers ``(N, H_kv, L, D)``, for a fixed-shape step.

    Quacks like a transformers ``Cache`` for the one call the attention layers make,
    ``update(key_states, value_states, layer_idx, ...)``: the prefill (``prefilling`` set, ``q``
    prompt columns) writes columns ``0 .. q-1``; a single-token step writes column ``write_at``.
    The buffers are allocated at the first prefill, from the model's own key/value shapes.
    """

    is_compileable = True

    def __init__(self, length: int, device: torch.device) -> None:
        self.length = length
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        # (1,) int64: the column the next single-token forward writes (static address).
        self.write_at = torch.zeros(1, dtype=torch.long, device=device)
        self.prefilling = False  # set by StaticCacheDecoder.start around the (eager) prefill
        self.prefill_updates = 0  # layers written by the prefill: a sanity check

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``(N, H_kv, q, D)`` keys/values of layer ``layer_idx``; return all ``L`` columns."""
        q = key_states.shape[-2]
        if self.prefilling:  # eager; allocates on first use
            if layer_idx == len(self.keys):
                n, heads = key_states.shape[:2]
                for store, states in ((self.keys, key_states), (self.values, value_states)):
                    buf = states.new_zeros(n, heads, self.length, states.shape[-1])
                    mark_static(buf)
                    store.append(buf)
            self.prefill_updates += 1
            columns = torch.arange(q, device=key_states.device)
        else:
            columns = self.write_at
        self.keys[layer_idx].index_copy_(2, columns, key_states)
        self.values[layer_idx].index_copy_(2, columns, value_states)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length


class StaticCacheDecoder:
    """Same interface as :class:`~tokengym.agents.rollout.KVCacheDecoder` (``start``/``advance``)
    for a fixed batch of ``batch`` rows and ``length = P + G`` columns; see the module docstring.

    Args:
        model: the causal LM (full attention; see :func:`compile_unavailable`).
        value_fn: optional value head ``(N, T, H) -> (N, T)``, run inside the step.
        batch, length: N and L, fixed for the decoder's life.
        compile: compile the step (``torch.compile``); False runs the same step eagerly.
        slot: the model's :class:`DecoderSlot`, disabled when compiling fails (one warning).
    """

    WARMUP_CALLS = 3  # calls that compile and record; a failure in them falls back to eager

    def __init__(self, model: torch.nn.Module, value_fn: Any, batch: int, length: int, *,
                 compile: bool, slot: DecoderSlot | None = None) -> None:
        self.model = model
        self.value_fn = value_fn
        self.batch, self.length = batch, length
        self.slot = slot
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._cache_kwarg, self._keep_kwarg = forward_kwarg_names(model)
        self.cache = PreallocatedKVCache(length, self.device)
        # (N, 1, 1, L) additive mask and (N, 1) position ids of the next token (static addresses).
        self.mask = torch.zeros(batch, 1, 1, length, dtype=self.dtype, device=self.device)
        self.positions = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        for buf in (self.mask, self.positions, self.cache.write_at):
            mark_static(buf)
        self.compiled = compile
        self._calls = 0  # successful calls of the compiled step
        self._step_fn = self._step
        if compile:
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._step_fn = torch.compile(self._step, mode=mode, dynamic=False)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        kwargs: dict[str, Any] = {self._cache_kwarg: self.cache}
        if self._keep_kwarg:
            kwargs[self._keep_kwarg] = 1
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=True, output_hidden_states=self.value_fn is not None, **kwargs)
        logits = out.logits[:, -1].float()
        values = None
        if self.value_fn is not None:
            values = self.value_fn(out.hidden_states[-1][:, -1:]).squeeze(-1).float()
        return logits, values

    def _step(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One token per row at column ``write_at``: the function that gets compiled."""
        self.positions.add_(1)
        self.mask.index_fill_(-1, self.cache.write_at, 0.0)
        out = self._forward(tokens.view(-1, 1), self.mask, self.positions)
        self.cache.write_at.add_(1)
        return out

    @torch.no_grad()
    def start(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Prefill left-padded prompts ``(N, P)`` (eager); returns next logits ``(N, V)``
        (and values ``(N,)``)."""
        ids, pmask = prompt_ids.to(self.device), prompt_mask.to(self.device).bool()
        n, p = ids.shape
        if n != self.batch or p >= self.length:
            raise ValueError(f"this decoder holds {self.batch} rows x {self.length} columns, got "
                             f"prompts of shape {tuple(ids.shape)}")
        positions = (pmask.long().cumsum(-1) - 1).clamp(min=0)
        # (N, 1, P, L): causal over the prompt, padding hidden; each query sees itself, so a
        # padding row has no all-hidden row (NaN) whose keys/values would poison the cache.
        cols = torch.arange(self.length, device=self.device)
        rows = torch.arange(p, device=self.device)[:, None]
        allowed = (cols[None, :] <= rows) & torch.cat(
            [pmask, pmask.new_zeros(n, self.length - p)], 1)[:, None, :]
        allowed |= cols[None, :] == rows
        low = torch.finfo(self.dtype).min
        prefill_mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        prefill_mask.masked_fill_(~allowed, low)
        self.cache.prefill_updates, self.cache.prefilling = 0, True
        try:
            logits, values = self._forward(ids, prefill_mask[:, None], positions)
        finally:
            self.cache.prefilling = False
        if self.cache.prefill_updates == 0:
            raise RuntimeError("the model did not write into the preallocated KV cache")
        self.mask.fill_(low)
        self.mask[:, 0, 0, :p].masked_fill_(pmask, 0.0)
        self.positions.copy_(positions[:, -1:])
        self.cache.write_at.fill_(p)
        return logits, values

    @torch.no_grad()
    def advance(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Feed ``(N,)`` new tokens; returns the next logits ``(N, V)`` (and values ``(N,)``)."""
        tokens = tokens.to(self.device)
        if not self.compiled:
            return self._step(tokens)
        buffers = (self.mask, self.positions, self.cache.write_at)
        # Compiling happens at the first call, recording the CUDA graphs at the next ones; a
        # failure then falls back to eager, with the buffers restored to the copies taken before.
        saved = [b.clone() for b in buffers] if self._calls < self.WARMUP_CALLS else None
        try:
            if self.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            out = self._step_fn(tokens)
            self._calls += 1
            return out
        except Exception as exc:  # noqa: BLE001 - any compile failure falls back to eager
            if saved is None:
                raise
            for buf, value in zip(buffers, saved):
                buf.copy_(value)
            self.compiled = False
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if self.slot is not None:
                self.slot.disable(f"torch.compile failed ({reason[:300]})")
            return self._step(tokens)


class DecoderSlot:
    """A model's static decoders, kept between rollouts (keyed by batch, length, value head).

    Stored on the model object; a deep copy of the model (the frozen reference) or a pickled one
    starts with an empty slot. At most :attr:`MAX_DECODERS` are kept (each holds a KV cache).
    """

    MAX_DECODERS = 4
    ATTRIBUTE = "_tokengym_decoder_slot"

    def __init__(self) -> None:
        self.decoders: dict[tuple[Any, ...], StaticCacheDecoder] = {}
        self.disabled = False  # True once the compiled path failed or was found unavailable
        self.multi_turn_noted = False  # the multi-turn env's eager decoding was said once

    def __deepcopy__(self, memo: dict[int, Any]) -> DecoderSlot:
        return DecoderSlot()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def disable(self, reason: str) -> None:
        """Turn the compiled path off for this model, with one warning saying why."""
        if not self.disabled:
            self.disabled = True
            self.decoders.clear()
            warnings.warn(f"compiled decode path unavailable: {reason}; rollouts run uncompiled "
                          "(pass compile=False / --no-compile to silence this)", RuntimeWarning,
                          stacklevel=3)

    def note_multi_turn(self) -> None:
        """Say once per model that a multi-turn env decodes eagerly although compiling was on
        (its steps feed blocks of inserted tokens of varying width; ``agents/multiturn_decode.py``)."""
        if not self.multi_turn_noted:
            self.multi_turn_noted = True
            warnings.warn("compiled decode path: a multi-turn env (inserted tokens) decodes "
                          "eagerly with the multi-turn decoder; single-turn rollouts stay "
                          "compiled (pass compile=False / --no-compile to silence this)",
                          RuntimeWarning, stacklevel=4)

    @classmethod
    def of(cls, model: torch.nn.Module) -> DecoderSlot:
        slot = model.__dict__.get(cls.ATTRIBUTE)
        if slot is None:
            slot = cls()
            model.__dict__[cls.ATTRIBUTE] = slot
        return slot


def static_decoder(model: torch.nn.Module, value_fn: Any, batch: int, length: int
                   ) -> StaticCacheDecoder | None:
    """The model's compiled decoder for ``batch`` rows x ``length`` columns (made on first use,
    then reused); None, after one warning per model, where compiling is unavailable."""
    slot = DecoderSlot.of(model)
    if slot.disabled:
        return None
    reason = compile_unavailable(model, next(model.parameters()).device)
    if reason is not None:
        slot.disable(reason)
        return None
    key = (batch, length, value_fn)
    decoder = slot.decoders.get(key)
    if decoder is None:
        if len(slot.decoders) >= DecoderSlot.MAX_DECODERS:
            slot.decoders.pop(next(iter(slot.decoders)))
        decoder = StaticCacheDecoder(model, value_fn, batch, length, compile=True, slot=slot)
        slot.decoders[key] = decoder
    return decoder
