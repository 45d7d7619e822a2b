"""Rollout speed on a multi-turn env, next to ``model.generate`` on the same batch.

SmolLM2-135M by default, 16 Sentiment-v0 prompts x 24 agent tokens (stop tokens off). In the
multi-turn env every ``.`` ends the agent's turn and a responder inserts a reply of 3 to 15 tokens
(chosen by the turn's length), so rows insert different amounts at different steps; episodes run
all 24 agent tokens (``max_turns`` is never reached). Measured side by side in one process,
medians of ``--repeats`` rounds after a warm-up round (round-robin, so a slow spell of a shared
machine hits every row):

- multi-turn rollout through ``env.step`` (``collect_rollout``: the KV cache prefills every
  row's inserted tokens before it samples again, ``agents/multiturn_decode.py``);
- single-turn rollout of the same prompts (no responder): the path the multi-turn one extends;
- ``model.generate`` of 24 tokens on the same prompts (dynamic cache, sampling);
- ``model.generate`` of as many tokens as the longest multi-turn row used (agent + inserted):
  the cost of running the model over the same number of columns, in single-token steps.

Reported: seconds, agent tokens/s, and the ratio ``generate seconds / rollout seconds``
(1.0 = as fast as ``generate`` of the agent's tokens); and the multi-turn rollout against its
floor: the single-turn rollout's seconds per token times the tokens the model must see (agent
plus inserted), since every inserted token goes through the model once. Run: ``python -m
tokengym.benchmarks.multiturn_speed [--model NAME] [--num-envs N] [--max-new-tokens G]
[--repeats R] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import statistics

import gymnasium as gym
import torch

import tokengym  # noqa: F401  (registers the env ids)
from tokengym.agents.rollout import collect_rollout
from tokengym.benchmarks.flops import device_text, time_phases
from tokengym.envs import Reply, Transcript
from tokengym.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer

REPLIES = ("Go on.", "And then?", "Tell me more about that, please.",
           "Interesting. What happened next, in as much detail as you can?")


def reply(transcript: Transcript) -> Reply:
    """A reply of 3-15 tokens picked by the length of the agent's turn (deterministic)."""
    return Reply(text=REPLIES[len(transcript.last.token_ids) % len(REPLIES)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when available)")
    args = parser.parse_args(argv)

    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, device=args.device)
    device = next(model.parameters()).device
    n, g = args.num_envs, args.max_new_tokens
    common = dict(num_envs=n, vectorization_mode="vector_entry_point", tokenizer=tokenizer,
                  max_new_tokens=g, stop_tokens=[])
    multi = gym.make_vec("tokengym/Sentiment-v0", responder=reply, stop_strings=["."],
                         max_turns=g, max_insert_tokens=32, **common)
    single = gym.make_vec("tokengym/Sentiment-v0", **common)
    gen = torch.Generator(device=device).manual_seed(0)
    probe = collect_rollout(multi, model, seed=0, generator=gen, compile=False)
    inserted = probe.episode_mask.sum(1) - probe.lengths
    columns = int(probe.episode_mask.sum(1).max())
    prompt_ids, prompt_mask = probe.prompt_ids.to(device), probe.prompt_mask.to(device)

    @torch.no_grad()
    def generate(tokens: int) -> None:
        model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True,
                       max_new_tokens=tokens, min_new_tokens=tokens, top_k=0, top_p=1.0,
                       pad_token_id=tokenizer.pad_token_id)

    phases = {
        "multi-turn rollout": lambda: collect_rollout(multi, model, seed=0, generator=gen,
                                                      compile=False),
        "single-turn rollout": lambda: collect_rollout(single, model, seed=0, generator=gen,
                                                       compile=False),
        f"generate {g} tokens": lambda: generate(g),
        f"generate {columns} tokens": lambda: generate(columns),
    }
    times = time_phases(phases, args.repeats, device)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nmultiturn_speed: {args.model} on {device_text(device)}, {n} prompts x {g} agent "
          f"tokens; inserted per row: min {int(inserted.min())}, mean "
          f"{float(inserted.float().mean()):.1f}, max {int(inserted.max())} tokens over "
          f"{statistics.mean(info.get('turns', 1) for info in probe.infos):.1f} agent turns on "
          f"average; median of {args.repeats} (min-max)\n")
    print(f"| {'measurement':<28} | {'seconds':>8} | {'min-max':>13} | {'agent tok/s':>11} | "
          f"{'generate / it':>13} |")
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 15}|{'-' * 13}|{'-' * 15}|")
    base = med[f"generate {g} tokens"]
    for name, t in med.items():
        lo, hi = min(times[name]), max(times[name])
        print(f"| {name:<28} | {t:8.3f} | {lo:6.3f}-{hi:6.3f} | {n * g / t:11.0f} | "
              f"{base / t:12.2f}x |")
    print(f"\nmulti-turn rollout / generate of the same agent tokens: "
          f"{base / med['multi-turn rollout']:.2f}x speed (single-turn rollout: "
          f"{base / med['single-turn rollout']:.2f}x); against generate of {columns} tokens "
          f"(the longest row's agent + inserted columns): "
          f"{med[f'generate {columns} tokens'] / med['multi-turn rollout']:.2f}x")
    # The multi-turn rollout runs the model over every agent AND inserted token: at the
    # single-turn rollout's cost per token, that many tokens take `floor` seconds.
    fed = n * g + int(inserted.sum())
    floor = med["single-turn rollout"] / (n * g) * fed
    print(f"tokens through the model: {fed} ({n * g} agent + {int(inserted.sum())} inserted); at "
          f"the single-turn rollout's {1000 * med['single-turn rollout'] / (n * g):.1f} ms per "
          f"token that is {floor:.3f} s: the multi-turn rollout runs at "
          f"{floor / med['multi-turn rollout']:.2f}x of that floor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
