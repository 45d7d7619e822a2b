"""k samples of each prompt, through the env: a vector-env wrapper and group statistics.

Agents that compare samples of the same prompt (RLOO, GRPO, best-of-N) see the env's rows in
consecutive groups of ``k``: rows ``g*k .. g*k+k-1`` share one prompt. :class:`PromptGroups` gets
that from the env itself: a seeded ``reset`` draws a prompt per row as usual, then every group's
other rows are reset with ``options={"prompt": <the group leader's prompt>, "reset_mask": ...}``
(the env's own way of forcing a prompt). No sample is produced outside ``reset``/``step``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorWrapper

from tokengym.envs.protocol import text_env_view


def row_prompts(envs: Any, infos: dict[str, Any]) -> list[Any]:
    """The prompt of every row after a reset, as ``reset(options={"prompt": ...})`` takes it.

    For a tokengym env (anything :func:`~tokengym.envs.text_env_view` accepts):
    ``{"prompt": text, **fields}`` from its ``prompt_records()``, since fields such as ``answer``
    matter to the reward model. For another vector env: the reset info's ``prompt`` texts.

    Returns:
        ``num_envs`` prompts, in row order.
    """
    try:
        view = text_env_view(envs)
    except TypeError:
        return [str(p) for p in infos["prompt"]]
    records = view.prompt_records()
    # reset(options={"prompt": ...}) takes a string or a {"prompt": text, **fields} mapping.
    return [{"prompt": r.text, **dict(r.fields)} for r in records]


class PromptGroups(VectorWrapper):
    """Make consecutive groups of ``group_size`` rows share one prompt at every ``reset``.

    Needs a vector env whose ``reset`` accepts ``options={"reset_mask": ..., "prompt": ...}``:
    the grouped reset of :class:`~tokengym.envs.TextVectorEnvLike` (tokengym's native vector env,
    gymnasium's ``SyncVectorEnv``/``AsyncVectorEnv`` of ``TextGenEnv``).
    """

    def __init__(self, env: Any, group_size: int) -> None:
        super().__init__(env)
        if group_size < 1 or env.num_envs % group_size:
            raise ValueError(
                f"num_envs={env.num_envs} is not a multiple of the group size {group_size}; "
                "use num_envs = prompts per iteration x samples per prompt"
            )
        self.group_size = group_size

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, infos = self.env.reset(seed=seed, options=options)
        k = self.group_size
        if k == 1 or (options and "prompt" in options):  # every row already shares one prompt
            return obs, infos
        prompts = row_prompts(self.env, infos)
        for start in range(0, self.num_envs, k):
            mask = np.zeros(self.num_envs, dtype=bool)
            mask[start + 1: start + k] = True
            obs, _ = self.env.reset(options={"reset_mask": mask, "prompt": prompts[start]})
        # Reset infos are those of the draw (only the leaders' are exact); rollouts ignore them.
        return obs, infos


def group_view(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(N,)`` -> ``(N / k, k)``: one row per prompt group (rows are grouped consecutively)."""
    if x.shape[0] % group_size:
        raise ValueError(f"{x.shape[0]} samples are not a multiple of the group size {group_size}")
    return x.view(-1, group_size)


def leave_one_out_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO: ``A_i = R_i - mean_{j != i} R_j`` within each group (Ahmadian et al. 2024).

    Args:
        rewards: ``(N,)`` per-sample rewards, groups of ``group_size`` consecutive rows.

    Returns:
        ``(N,)`` advantages; equal to ``k / (k - 1) * (R_i - group mean)``.
    """
    if group_size < 2:
        raise ValueError("leave-one-out needs at least 2 samples per prompt")
    r = group_view(rewards, group_size)
    others = (r.sum(-1, keepdim=True) - r) / (group_size - 1)
    return (r - others).reshape(-1)


def group_normalized_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True,
                                eps: float = 1e-4) -> torch.Tensor:
    """GRPO: ``A_i = (R_i - mean_group) / (std_group + eps)`` (Shao et al. 2024).

    ``std`` is the unbiased standard deviation of the group; ``scale=False`` only centres (the
    "Dr. GRPO" variant, which avoids up-weighting near-constant groups). Returns ``(N,)``.
    """
    if group_size < 2:
        raise ValueError("group-normalised advantages need at least 2 samples per prompt")
    r = group_view(rewards, group_size)
    centred = r - r.mean(-1, keepdim=True)
    if scale:
        centred = centred / (r.std(-1, keepdim=True) + eps)
    return centred.reshape(-1)


def select_rows(rollout: Any, rows: torch.Tensor) -> Any:
    """A :class:`~tokengym.agents.rollout.Rollout` holding only ``rows`` (a ``(M,)`` index):
    every per-row tensor (multi-turn ones included) and info."""
    from dataclasses import fields, replace

    idx = rows.tolist()
    picked = {f.name: getattr(rollout, f.name)[rows] for f in fields(rollout)
              if isinstance(getattr(rollout, f.name), torch.Tensor)}
    return replace(rollout, **picked,
                   infos=[rollout.infos[i] for i in idx] if rollout.infos else [])
