"""The compiled static-cache decode path (``agents/decode.py``) and the recomputed old log-probs.

1. the preallocated-KV-cache step gives the eager path's logits and values, step by step;
2. compiled (``torch.compile``, CPU backend) it gives the eager path's tokens for the same seed,
   through a real agent's rollout (value head included) with early-stopping rows;
3. where compiling is unavailable or fails: one warning, then the eager path's rollout;
4. in bf16, the recomputed old log-probs make PPO's ratio exactly 1 on the first minibatch of the
   first epoch (and the KL to the untouched reference exactly 0); without the recomputation the
   sampling forward's rounding shows.

Speed is not asserted here: ``python -m tokengym.benchmarks.ppo_speed`` compares the decode
paths with ``model.generate`` on one batch (``docs/ppo.md``, "Speed").
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

from tokengym.agents import decode
from tokengym.agents.batch import Batch
from tokengym.agents.decode import StaticCacheDecoder, compile_unavailable, use_compile
from tokengym.agents.registry import make_agent
from tokengym.agents.rollout import KVCacheDecoder, collect_rollout
from tokengym.agents.toy_task import TOY_PROMPTS
from tokengym.envs import TextGenVectorEnv
from tokengym.models import load_causal_lm

pytestmark = pytest.mark.usefixtures("one_thread")
STOP_IDS = list(range(0, 49152, 5))  # ~20% per step: rows end at different steps


@pytest.fixture(scope="module")
def base_lm() -> torch.nn.Module:
    return load_causal_lm("tiny-llama", device="cpu")


def make_envs(tokenizer: Any, num_envs: int = 8, max_new: int = 6,
              stop_tokens: list[int] | None = None, prompt_tokens: int = 8) -> TextGenVectorEnv:
    return TextGenVectorEnv(num_envs, prompts=list(TOY_PROMPTS), reward_model=lambda p, c: [
        float(len(x)) for x in c], tokenizer=tokenizer, max_prompt_tokens=prompt_tokens,
        max_new_tokens=max_new, stop_tokens=stop_tokens)


def test_compile_defaults_to_cuda_only() -> None:
    assert use_compile(None, torch.device("cuda")) and not use_compile(None, torch.device("cpu"))
    assert use_compile(True, torch.device("cpu")) and not use_compile(False, torch.device("cuda"))


def test_static_cache_step_equals_the_eager_step(tokenizer, base_lm) -> None:
    """Same logits and values from the preallocated cache (uncompiled) as from DynamicCache."""
    head = torch.nn.Linear(base_lm.config.hidden_size, 1)

    def value_fn(hidden: torch.Tensor) -> torch.Tensor:
        return head(hidden).squeeze(-1)

    obs, _ = make_envs(tokenizer, 4).reset(seed=0)
    ids, mask = (torch.from_numpy(obs[k][:, :8]) for k in ("input_ids", "attention_mask"))
    assert (mask == 0).any()  # left padding is part of what is checked
    eager = KVCacheDecoder(base_lm, value_fn)
    static = StaticCacheDecoder(base_lm, value_fn, 4, 8 + 6, compile=False)
    (a, va), (b, vb) = eager.start(ids, mask), static.start(ids, mask)
    for _ in range(6):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(vb, va, atol=1e-5, rtol=1e-5)
        tokens = a.argmax(-1)
        (a, va), (b, vb) = eager.advance(tokens), static.advance(tokens)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    # A second rollout reuses the buffers: the prefill starts it afresh.
    torch.testing.assert_close(static.start(ids, mask)[0], eager.start(ids, mask)[0],
                               atol=1e-5, rtol=1e-5)


def test_compiled_rollout_gives_the_eager_tokens(tokenizer, base_lm) -> None:
    """PPO's rollout (value head in the compiled step), same seed, compile on and off."""
    reason = compile_unavailable(base_lm, torch.device("cpu"))
    if reason is not None:
        pytest.skip(f"torch.compile cannot run on this machine: {reason}")
    lm = copy.deepcopy(base_lm)
    envs = make_envs(tokenizer, stop_tokens=STOP_IDS)
    agent = make_agent("ppo", envs, lm, {"seed": 0, "compile": False})
    rollouts = {}
    for compiled in (False, True, True):  # the second compiled rollout reuses the graph
        agent.config.compile = compiled
        agent.sample_generator.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no fallback may happen here
            rollouts[compiled] = agent.collect(seed=3)
    eager, compiled = rollouts[False], rollouts[True]
    assert 0 < int(eager.lengths.min()) < 6  # some rows stopped early, some later
    torch.testing.assert_close(compiled.tokens, eager.tokens, rtol=0, atol=0)
    torch.testing.assert_close(compiled.mask, eager.mask, rtol=0, atol=0)
    torch.testing.assert_close(compiled.logprobs, eager.logprobs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(compiled.values, eager.values, atol=1e-5, rtol=1e-5)
    assert compiled.infos == eager.infos
    slot = decode.DecoderSlot.of(lm)
    assert [d.compiled for d in slot.decoders.values()] == [True]


def rollout_with_warnings(tokenizer: Any, lm: torch.nn.Module, times: int = 2
                          ) -> tuple[list[Any], list[warnings.WarningMessage]]:
    envs = make_envs(tokenizer, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = [collect_rollout(envs, lm, seed=1, generator=torch.Generator().manual_seed(0),
                               compile=True) for _ in range(times)]
    return out, [w for w in caught if "compiled decode path" in str(w.message)]


@pytest.mark.parametrize("failure", ["unavailable", "compile raises"])
def test_fallback_warns_once_and_gives_the_eager_rollout(tokenizer, base_lm, monkeypatch,
                                                         failure: str) -> None:
    lm = copy.deepcopy(base_lm)
    if failure == "unavailable":
        monkeypatch.setattr(decode, "compile_unavailable", lambda model, device: "no compiler")
    else:
        def broken(fn: Callable, **kwargs: Any) -> Callable:
            def run(*args: Any) -> Any:
                raise RuntimeError("inductor exploded\nsecond line")
            return run
        monkeypatch.setattr(decode, "compile_unavailable", lambda model, device: None)
        monkeypatch.setattr(torch, "compile", broken)
    rollouts, warned = rollout_with_warnings(tokenizer, lm)
    assert len(warned) == 1, [str(w.message) for w in warned]
    expected = "no compiler" if failure == "unavailable" else "inductor exploded"
    assert expected in str(warned[0].message) and "\n" not in str(warned[0].message)
    eager = collect_rollout(make_envs(tokenizer, 4), lm, seed=1,
                            generator=torch.Generator().manual_seed(0), compile=False)
    for rollout in rollouts:
        torch.testing.assert_close(rollout.tokens, eager.tokens, rtol=0, atol=0)
        torch.testing.assert_close(rollout.logprobs, eager.logprobs, atol=1e-5, rtol=1e-5)


def first_minibatch_ratio(tokenizer: Any, lm: torch.nn.Module, **overrides: Any
                          ) -> tuple[torch.Tensor, Batch]:
    """PPO's REAL loss on its first minibatch of the first epoch: ``(ratio of its tokens,
    the prepared batch)``."""
    envs = make_envs(tokenizer, 16, max_new=8, prompt_tokens=12)
    agent = make_agent("ppo", envs, lm, {"seed": 0, "dtype": "bfloat16", "epochs": 1,
                                         "num_minibatches": 2, "compile": False, **overrides})
    seen: dict[str, Any] = {}
    optimize = agent.optimize

    def spy(b: Batch, loss_fn: Callable, *args: Any, **kwargs: Any) -> dict[str, float]:
        def recorded(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            per_token, stats = loss_fn(idx)
            if "ratio" not in seen:
                seen["ratio"] = stats["ratio_mean"][b.mask[idx]].detach().clone()
            return per_token, stats
        seen["batch"] = b
        return optimize(b, recorded, *args, **kwargs)

    agent.optimize = spy  # type: ignore[method-assign]
    agent.train_iteration()
    return seen["ratio"], seen["batch"]


def test_bf16_recomputed_old_logprobs_make_the_first_ratio_exactly_one(tokenizer) -> None:
    lm = load_causal_lm("tiny-llama", device="cpu", dtype="bfloat16")
    ratio, batch = first_minibatch_ratio(tokenizer, copy.deepcopy(lm))  # default: recompute
    assert ratio.numel() > 0 and bool((ratio == 1).all()), float((ratio - 1).abs().max())
    assert bool((batch.kl == 0).all())  # policy == reference, both teacher-forced in bf16
    stale, stale_batch = first_minibatch_ratio(tokenizer, copy.deepcopy(lm),
                                               recompute_logprobs=False)
    # The sampling forward's log-probs carry the bf16 rounding of another path (~1e-3 here).
    torch.testing.assert_close(stale_batch.tokens, batch.tokens, rtol=0, atol=0)
    assert float((stale_batch.logprobs - batch.logprobs).abs().max()) > 1e-4
    assert float(stale_batch.kl.abs().max()) > 1e-4
    assert bool((stale != 1).any())
