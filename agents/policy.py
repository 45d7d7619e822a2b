"""The trainable policy: a causal LM, a scalar value head, and the frozen reference.

``ActorCritic`` owns three things:

- ``lm``: the policy LM (optionally wrapped with peft LoRA adapters);
- ``value_head``: ``Linear(hidden, 1)`` on the last hidden state of the policy trunk (default)
  or of a separate value trunk (``value_model="separate"``);
- the reference: a frozen copy of the LM at the start, or, with LoRA, the same LM with its
  adapters disabled (no second copy in memory).

Dropout stays off (eval mode) in rollout and update alike, so the update's log-probs are those of
the distribution that was sampled. Logits are divided by the sampling temperature everywhere.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from tokengym.agents.decode import forward_kwarg_names
from tokengym.agents.distributed import rank
from tokengym.agents.fsdp import full_weights, is_sharded, load_full_weights
from tokengym.agents.multiturn_decode import per_row_logits_to_keep


def completion_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    gen_len: int,
    *,
    hidden: bool = False,
    columns: torch.Tensor | None = None,
    hidden_layer: int = -1,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One teacher-forced forward over ``prompt + completion``; logits that predict the completion.

    Args:
        input_ids, attention_mask: ``(N, L)`` in the env's layout (left-padded prompt).
        gen_len: G, the number of completion (agent) tokens to predict.
        hidden: also return the hidden states at the same positions (of ``hidden_layer``,
            an index into the model's ``hidden_states``: -1, the last, is what the value head
            reads).
        columns: ``(N, G)`` int64, the column of each agent token (multi-turn sequences, where
            inserted tokens sit between them; :func:`~tokengym.agents.batch.agent_columns`); the
            output at ``column - 1`` predicts it. None: the agent's tokens are the last G columns.

    Returns:
        ``(logits (N, G, V), hidden (N, G, H) or None)``: position ``t`` holds the prediction
        of completion token ``t`` (made at column ``P - 1 + t``, or ``columns[:, t] - 1``).
    """
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    kwargs: dict[str, Any] = {}
    _, keep = forward_kwarg_names(model)
    reads = None if columns is None else (columns - 1).clamp(min=0)  # (N, G) output columns
    per_row = reads is not None and keep is not None and per_row_logits_to_keep(model)
    if keep and reads is None:
        # Only the last G + 1 positions' logits are needed: skips the (N, P, V) prompt logits.
        kwargs[keep] = gen_len + 1
    elif per_row:
        kwargs[keep] = reads  # (N, G, V) logits at exactly those columns
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        use_cache=False,
        output_hidden_states=hidden,
        **kwargs,
    )
    if reads is None:
        logits = out.logits[:, -(gen_len + 1):-1]
        states = out.hidden_states[hidden_layer][:, -(gen_len + 1):-1] if hidden else None
        return logits, states
    logits = out.logits if per_row else torch.take_along_dim(out.logits, reads[..., None], dim=1)
    states = torch.take_along_dim(out.hidden_states[hidden_layer], reads[..., None], dim=1) \
        if hidden else None
    return logits, states


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float,
                   num_actions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of ``tokens`` ``(N, G)`` under ``softmax(logits[..., :num_actions] / T)``.

    Returns ``(logprobs (N, G), logp (N, G, num_actions))``; the latter feeds the entropy.
    """
    logp = torch.log_softmax(logits[..., :num_actions].float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), logp


def entropy_from_logp(logp: torch.Tensor) -> torch.Tensor:
    """``(N, G)`` entropy of each position's distribution given its log-probs ``(N, G, V)``."""
    return -(logp.exp() * logp).sum(-1)


class ActorCritic(nn.Module):
    """Policy LM + value head (+ optional separate value trunk) + reference access.

    Args:
        lm: the causal LM (a transformers ``PreTrainedModel``).
        value_model: ``"shared"`` or ``"separate"``.
        lora: wrap ``lm`` with LoRA adapters (needs ``peft``); ``lora_kwargs`` go to
            ``peft.LoraConfig``.
        value_head: ``"linear"`` (``Linear(hidden, 1)``) or ``"mlp"`` (``Linear(hidden,
            hidden)``, GELU, ``Linear(hidden, 1)``); the last layer starts at zero either way.
        seed: seeds the LoRA adapters' and the MLP head's random initialisation, so two
            policies built with the same seed start identical whatever the global RNG.
    """

    def __init__(
        self,
        lm: nn.Module,
        *,
        value_model: str = "shared",
        lora: bool = False,
        lora_kwargs: dict[str, Any] | None = None,
        value_head: str = "linear",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if value_model not in ("shared", "separate"):
            raise ValueError(f"value_model={value_model!r}; accepted: 'shared', 'separate'")
        if lora and value_model == "separate":
            raise ValueError("LoRA with a separate value model is not supported; use 'shared'")
        lm.eval()
        self.lora = lora
        self.value_model_kind = value_model
        # The reference is frozen before adapters are added, so it is the starting policy.
        self.ref: nn.Module | None = None
        if lora:
            # peft draws the adapters' init from torch's global generator: fork it, so the
            # config's seed (not whatever ran before) decides it, and the caller's stream is kept.
            device = next(lm.parameters()).device
            cuda = [device.index or 0] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(seed)
                self.lm = self._add_lora(lm, dict(lora_kwargs or {}))
        else:
            self.ref = copy.deepcopy(lm).requires_grad_(False).eval()
            self.lm = lm
        self.value_trunk: nn.Module | None = None
        if value_model == "separate":
            self.value_trunk = copy.deepcopy(lm).eval()
        self.value_head = self._value_head(lm, value_head, seed)

    @staticmethod
    def _value_head(lm: nn.Module, kind: str, seed: int) -> nn.Module:
        if kind not in ("linear", "mlp"):
            raise ValueError(f"value_head={kind!r}; accepted: 'linear', 'mlp'")
        hidden = lm.config.hidden_size
        param = next(lm.parameters())
        # skip_init: no draw from the global generator for weights that are zeroed next.
        last = nn.utils.skip_init(nn.Linear, hidden, 1, device=param.device, dtype=param.dtype)
        with torch.no_grad():
            # Zero weights and bias: every value starts at exactly 0, so the first advantages are
            # the rewards themselves rather than the noise of a random head (whose outputs on
            # SmolLM2's hidden states were 0.05-0.26, the size of the reward differences).
            last.weight.zero_()
            last.bias.zero_()
        if kind == "linear":
            return last
        cuda = [param.device.index or 0] if param.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # the config's seed, not the global stream
            torch.manual_seed(seed)
            first = nn.Linear(hidden, hidden, device=param.device, dtype=param.dtype)
        return nn.Sequential(first, nn.GELU(), last)

    @staticmethod
    def _add_lora(lm: nn.Module, kwargs: dict[str, Any]) -> nn.Module:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("lora=True needs peft: pip install peft") from exc
        targets = kwargs.pop("target_modules", "all-linear")
        if isinstance(targets, str) and targets != "all-linear":
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        config = LoraConfig(task_type="CAUSAL_LM", target_modules=targets, **kwargs)
        return get_peft_model(lm, config).eval()

    # -- the three forwards ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def values_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., H)`` hidden states -> ``(...)`` values (float32)."""
        return self.value_head(hidden).squeeze(-1).float()

    def rollout_value_fn(self) -> Any:
        """The ``value_fn`` for :func:`collect_rollout` (None when the value trunk is separate)."""
        return self.values_from_hidden if self.value_trunk is None else None

    def forward_policy(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, gen_len: int,
        columns: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced policy logits ``(N, G, V)`` and values ``(N, G)``, with gradients.

        One forward of the policy trunk (plus one of the value trunk when separate);
        ``columns`` as in :func:`completion_logits` (multi-turn: agent tokens only).
        """
        shared = self.value_trunk is None
        logits, hidden = completion_logits(self.lm, input_ids, attention_mask, gen_len,
                                           hidden=shared, columns=columns)
        if not shared:
            _, hidden = completion_logits(self.value_trunk, input_ids, attention_mask, gen_len,
                                          hidden=True, columns=columns)
        return logits, self.values_from_hidden(hidden)

    @torch.no_grad()
    def value_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       gen_len: int, columns: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, G, H)`` hidden states the value head reads (the policy trunk's, shared value
        model only), without gradients: for critic steps while the trunk does not move."""
        if self.value_trunk is not None:
            raise ValueError("value_features reads the shared trunk; value_model='separate' "
                             "trains its trunk in every critic step")
        _, hidden = completion_logits(self.lm, input_ids, attention_mask, gen_len, hidden=True,
                                      columns=columns)
        return hidden

    def trunk_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     gen_len: int, columns: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, G)`` values from the separate value trunk, with gradients: the critic's own
        steps, which need no forward of the policy (separate value model only)."""
        if self.value_trunk is None:
            raise ValueError("trunk_values needs value_model='separate'")
        _, hidden = completion_logits(self.value_trunk, input_ids, attention_mask, gen_len,
                                      hidden=True, columns=columns)
        return self.values_from_hidden(hidden)

    @torch.no_grad()
    def separate_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        gen_len: int, columns: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, G)`` values from the separate value trunk (one batched forward, no
        gradients)."""
        return self.trunk_values(input_ids, attention_mask, gen_len, columns)

    @contextlib.contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """The frozen reference LM (with LoRA: the policy with adapters disabled)."""
        if self.ref is not None:
            yield self.ref
        else:
            with self.lm.disable_adapter():
                yield self.lm

    @torch.no_grad()
    def reference_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           tokens: torch.Tensor, temperature: float, num_actions: int,
                           columns: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, G)`` reference log-probs of ``tokens`` ``(N, G)``: ONE batched forward
        (``columns``: multi-turn, see :func:`completion_logits`)."""
        with self.reference() as ref:
            logits, _ = completion_logits(ref, input_ids, attention_mask, tokens.shape[1],
                                          columns=columns)
        return token_logprobs(logits, tokens, temperature, num_actions)[0]

    @torch.no_grad()
    def policy_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        tokens: torch.Tensor, temperature: float, num_actions: int,
                        columns: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, G)`` policy log-probs of ``tokens`` ``(N, G)``: ONE batched teacher-forced
        forward, the path (and precision) of the update's forward; the old log-probs when the
        agent's ``recompute_logprobs`` asks for them."""
        logits, _ = completion_logits(self.lm, input_ids, attention_mask, tokens.shape[1],
                                      columns=columns)
        return token_logprobs(logits, tokens, temperature, num_actions)[0]

    # -- parameters and saving ---------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Name -> tensor of every trainable parameter (tied weights appear once). With FSDP
        the whole tensors on the CPU, gathered by a collective every rank must call."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        if any(is_sharded(p) for _, p in named):
            return full_weights(named)
        return {n: p.detach() for n, p in named}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = {n: p for n, p in self.named_parameters() if p.requires_grad}
        if set(params) != set(state):
            missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
            raise ValueError(
                f"checkpoint does not match the policy: missing {missing[:5]}, unexpected "
                f"{extra[:5]}; was it written with the same model and lora/value_model settings?"
            )
        load_full_weights(params.items(), state)  # FSDP: each rank keeps its shards

    def save_pretrained_policy(self, path: str, tokenizer: Any = None) -> None:
        """Save the policy as a plain transformers model (LoRA merged into a copy) + tokenizer.
        With FSDP every rank must call it (the weights are gathered) and rank 0 writes."""
        model = self.lm
        if any(is_sharded(p) for p in model.parameters()):
            seen: set[int] = set()  # tied weights (the embedding as output head) once
            named = [(n, t) for n, t in model.state_dict(keep_vars=True).items()
                     if not (id(t) in seen or seen.add(id(t)))]
            weights = full_weights(named)
            if rank() == 0:
                model.save_pretrained(path, state_dict=weights, safe_serialization=True)
        elif rank() == 0:
            if self.lora:
                model = copy.deepcopy(self.lm).merge_and_unload()
            model.save_pretrained(path, safe_serialization=True)
        if tokenizer is not None and rank() == 0:
            tokenizer.save_pretrained(path)
