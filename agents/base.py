"""What every trainable agent (PPO, REINFORCE, RLOO, GRPO, A2C) shares, written once.

:class:`TrainableAgent` owns the plumbing of one training iteration:

1. :meth:`~TrainableAgent.collect`: one episode per env row through the env's ``reset``/``step``
   (:func:`~tokengym.agents.rollout.collect_rollout`, KV cache), grouped by
   :class:`~tokengym.agents.groups.PromptGroups` when ``samples_per_prompt > 1``; values come
   out of the sampling forward for agents with a critic;
2. :meth:`~TrainableAgent.prepare`: the reference log-probs of the sampled tokens (ONE batched
   teacher-forced forward), the per-token KL, the scores (no-stop penalty, scaling), then the
   agent's own :meth:`~TrainableAgent.advantages`;
3. the agent's own :meth:`~TrainableAgent.update`, built from :meth:`~TrainableAgent.optimize`
   (epochs x minibatches x micro-batches of clipped-gradient steps on a per-token loss);
4. the KL controller moves beta from the rollout's KL.

It also owns construction from a config (policy + reference as an
:class:`~tokengym.agents.policy.ActorCritic`, AdamW, KL controller, seeded generators),
:meth:`~TrainableAgent.evaluate`, the checkpoint state, and applying changed settings on resume.
A subclass writes only what makes it a different algorithm: how it credits samples
(``advantages``) and its loss (``update``). Metric names: ``docs/metrics.md``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from tokengym.agents.advantages import whiten
from tokengym.agents.batch import Batch, LossFn, rollout_seed, trim_columns
from tokengym.agents.groups import PromptGroups
from tokengym.agents.kl import kl_per_token, make_kl_controller
from tokengym.agents.policy import (
    ActorCritic,
    completion_logits,
    entropy_from_logp,
    token_logprobs,
)
from tokengym.agents.rollout import Rollout, collect_rollout
from tokengym.checks import NonFiniteError


class TrainableAgent:
    """Base of the trainable agents; see the module docstring.

    Args:
        envs: a tokengym vector env (native ``TextGenVectorEnv`` or a ``SyncVectorEnv`` of
            ``TextGenEnv``), NEXT_STEP autoreset, ``num_envs == config.num_envs``; None builds
            an agent that only evaluates on envs given later.
        policy: an :class:`ActorCritic`, or a causal LM to wrap in one as ``config`` says.
        config: the agent's config dataclass (validated here).

    Subclasses set ``uses_value_head``, implement :meth:`advantages` and, unless the vanilla
    policy-gradient step fits, :meth:`update`.
    """

    uses_value_head = False

    def __init__(self, envs: Any, policy: ActorCritic | torch.nn.Module, config: Any) -> None:
        self.config = config.validate()
        if envs is not None and envs.num_envs != config.num_envs:
            raise ValueError(f"the env has num_envs={envs.num_envs} but config.num_envs="
                             f"{config.num_envs}; build the env with num_envs=config.num_envs")
        if not isinstance(policy, ActorCritic):
            policy = ActorCritic(
                policy, value_model=getattr(config, "value_model", "shared"), lora=config.lora,
                seed=config.seed,
                lora_kwargs=dict(r=config.lora_r, lora_alpha=config.lora_alpha,
                                 lora_dropout=config.lora_dropout,
                                 target_modules=config.lora_target_modules),
            )
        self.policy = policy
        self.group_size = int(getattr(config, "samples_per_prompt", 1))
        self.envs = self.grouped(envs) if envs is not None else None
        self.num_actions = int(envs.single_action_space.n) if envs is not None else None
        # An unused value head gets no gradient; leaving it out keeps Adam's state small. The
        # critic (value head, separate value trunk) has its own learning rate (value_lr): its
        # regression target moves each rollout and a head trained at the policy's small lr never
        # catches up.
        def is_critic(name: str) -> bool:
            return name.startswith(("value_head", "value_trunk"))

        trainable = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in trainable if not is_critic(n)], "lr": config.lr}]
        if self.uses_value_head:
            groups.append({"params": [p for n, p in trainable if is_critic(n)],
                           "lr": self.value_lr(config)})
        self.params = [p for group in groups for p in group["params"]]
        # The fused kernel updates all parameters in one pass (CPU and CUDA); it matters for
        # full fine-tuning, where the optimizer step touches every weight.
        self.optimizer = torch.optim.AdamW(
            groups, lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay,
            fused=policy.device.type in ("cpu", "cuda"),
        )
        self.kl_controller = make_kl_controller(config)
        self.sample_generator = torch.Generator(device=policy.device).manual_seed(config.seed)
        self.shuffle_generator = torch.Generator().manual_seed(config.seed + 1)
        self.iteration = 0  # completed iterations

    @staticmethod
    def value_lr(config: Any) -> float:
        """The critic's learning rate: ``config.value_lr``, or ``lr`` where it is None/absent."""
        value_lr = getattr(config, "value_lr", None)
        return config.lr if value_lr is None else value_lr

    def set_learning_rates(self) -> float:
        """Write this iteration's learning rates into the optimizer: ``lr`` and ``value_lr``
        scaled by the linear warm-up over ``config.warmup_iterations``; returns the scale."""
        cfg = self.config
        scale = min(1.0, (self.iteration + 1) / cfg.warmup_iterations) \
            if cfg.warmup_iterations else 1.0
        for group, base in zip(self.optimizer.param_groups, (cfg.lr, self.value_lr(cfg))):
            group.update(lr=base * scale, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
        return scale

    def grouped(self, envs: Any) -> Any:
        """``envs`` with consecutive rows sharing a prompt when ``samples_per_prompt > 1``."""
        if self.group_size == 1 or isinstance(envs, PromptGroups):
            return envs
        return PromptGroups(envs, self.group_size)

    # -- experience --------------------------------------------------------------------------
    def collect(self, seed: int | None = None, envs: Any = None) -> Rollout:
        """One episode per env row at ``config.temperature``. Training rollouts (``envs=None``)
        come in groups of ``samples_per_prompt`` rows sharing a prompt; other envs are used as
        they are. Agents with a critic get ``rollout.values`` filled in."""
        envs = self.envs if envs is None else envs
        seed = rollout_seed(self.config.seed, self.iteration) if seed is None else seed
        value_fn = self.policy.rollout_value_fn() if self.uses_value_head else None
        rollout = collect_rollout(envs, self.policy.lm, seed=seed,
                                  temperature=self.config.temperature,
                                  generator=self.sample_generator, value_fn=value_fn)
        if self.uses_value_head and rollout.values is None:  # separate value trunk
            ids, am = rollout.sequences()
            device = self.policy.device
            values = self.policy.separate_values(ids.to(device), am.to(device),
                                                 rollout.tokens.shape[1])
            rollout.values = values.cpu() * rollout.mask
        return rollout

    def prepare(self, rollout: Rollout) -> tuple[Batch, dict[str, float]]:
        """:meth:`prepare_common`, then the agent's :meth:`advantages`."""
        batch, metrics = self.prepare_common(rollout)
        metrics.update(self.advantages(batch))
        return batch, metrics

    def prepare_common(self, rollout: Rollout) -> tuple[Batch, dict[str, float]]:
        """Reference log-probs (ONE batched forward), per-token KL, scores; reward/KL metrics."""
        cfg, device = self.config, self.policy.device
        num_actions = self.num_actions or int(rollout.tokens.max()) + 1
        g = max(int(rollout.lengths.max()), 1)  # columns past every episode's end carry nothing
        mask = rollout.mask[:, :g].to(device)
        tokens = rollout.tokens[:, :g].to(device)
        logprobs = rollout.logprobs[:, :g].to(device)
        ids, am = trim_columns(
            torch.cat([rollout.prompt_ids, rollout.tokens[:, :g]], 1).to(device),
            torch.cat([rollout.prompt_mask, rollout.mask[:, :g].long()], 1).to(device), g)
        ref = self.policy.reference_logprobs(ids, am, tokens, cfg.temperature, num_actions)
        ref = torch.where(mask, ref, 0.0)
        kl = torch.where(mask, kl_per_token(logprobs, ref, cfg.kl_estimator), 0.0)
        scores = rollout.rewards.to(device, torch.float32)
        if cfg.no_stop_penalty is not None:
            scores = torch.where(~rollout.terminated.to(device), scores + cfg.no_stop_penalty,
                                 scores)
        if cfg.scale_scores:
            scores = whiten(scores, shift_mean=False)
        values = rollout.values[:, :g].to(device) if rollout.values is not None else None
        batch = Batch(ids, am, tokens, mask, logprobs, ref, kl, scores, values=values)
        beta = self.kl_controller.beta
        kl_seq = kl.sum(-1)
        metrics = {
            "reward_mean": float(rollout.rewards.mean()),
            "reward_std": float(rollout.rewards.std()) if len(rollout.rewards) > 1 else 0.0,
            "kl_mean": float(kl_seq.mean()),
            "kl_token_mean": float(kl.sum() / mask.sum().clamp(min=1)),
            "beta": beta,
            "kl_penalty_mean": float((-beta * kl_seq).mean()),
            "episode_length_mean": float(rollout.lengths.float().mean()),
            "stop_fraction": float(rollout.terminated.float().mean()),
        }
        return batch, metrics

    def advantages(self, batch: Batch) -> dict[str, float]:
        """Fill ``batch.advantages`` (and ``returns``); return extra metrics."""
        raise NotImplementedError

    # -- the update --------------------------------------------------------------------------
    def update(self, b: Batch) -> dict[str, float]:
        """The agent's optimisation of one prepared rollout. Default (REINFORCE, RLOO): ONE
        vanilla policy-gradient step on the whole rollout, loss
        ``-A_t * log pi(a_t|s_t) - ent_coef * H_t`` token-averaged."""
        ent_coef = self.config.ent_coef

        def loss_fn(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            logprobs, logp, _ = self.policy_forward(b, idx)
            entropy = entropy_from_logp(logp)
            pg = -b.advantages[idx] * logprobs
            return pg - ent_coef * entropy, {"policy_loss": pg.detach(),
                                             "entropy": entropy.detach()}

        return self.optimize(b, loss_fn)

    def policy_forward(self, b: Batch, idx: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Rows ``idx``, teacher-forced: ``(logprobs (n, g) of the sampled tokens, logp
        (n, g, V) over the vocabulary, values (n, g) or None)``."""
        g = b.mask.shape[1]
        ids, am = trim_columns(b.input_ids[idx], b.attention_mask[idx], g)
        if self.uses_value_head:
            logits, values = self.policy.forward_policy(ids, am, g)
        else:
            logits, values = completion_logits(self.policy.lm, ids, am, g)[0], None
        logprobs, logp = token_logprobs(logits, b.tokens[idx], self.config.temperature,
                                        self.num_actions or logits.shape[-1])
        return logprobs, logp, values

    def optimize(self, b: Batch, loss_fn: LossFn, epochs: int = 1, num_minibatches: int = 1,
                 target_kl: float | None = None) -> dict[str, float]:
        """``epochs`` passes over the rollout, each in ``num_minibatches`` shuffled minibatches
        (one clipped-gradient optimizer step each, split in ``config.grad_accum_steps``
        micro-batches whose gradients add up). A single full-batch step is not shuffled.

        ``target_kl`` (for losses whose stats include ``approx_kl``): when a minibatch's token
        mean of ``approx_kl`` (how far the policy already moved from the rollout's) exceeds it,
        the policy's update ends there, as in SB3 and CleanRL; a critic with its own param group
        takes the remaining steps alone (``critic_only_updates``). ``updates`` counts the policy's
        steps, ``early_stop`` is 1.0 when it stopped.

        ``loss_fn(rows)`` returns the per-token loss ``(n, g)`` and per-token stats of ``rows``;
        a step's loss is summed over its tokens and divided by the minibatch's token count.
        Returns each stat's token mean over every step (``entropy``: over the first epoch,
        i.e. of the policy that sampled), and ``grad_norm``: the mean pre-clip gradient norm.
        """
        cfg = self.config
        n = b.mask.shape[0]
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
        # After the policy's early stop, a critic with its own param group keeps learning on the
        # remaining minibatches (the KL limit is the policy's trust region; the critic has its
        # own clip), with the policy's gradients dropped.
        critic_groups = self.optimizer.param_groups[1:]
        sums: dict[str, float] = {}
        tokens, first_entropy, first_tokens, grad_norms = 0.0, 0.0, 0.0, []
        stopped, critic_steps = False, 0
        for epoch in range(epochs):
            if stopped and not critic_groups:
                break
            if epochs == 1 and num_minibatches == 1:
                order = torch.arange(n, device=b.mask.device)
            else:
                order = torch.randperm(n, generator=self.shuffle_generator).to(b.mask.device)
            for rows in order.split(n // num_minibatches):
                self.optimizer.zero_grad(set_to_none=True)
                n_tokens = b.mask[rows].sum().clamp(min=1)
                step_kl = 0.0
                for micro in rows.split(max(len(rows) // cfg.grad_accum_steps, 1)):
                    per_token, stats = loss_fn(micro)
                    mask = b.mask[micro]
                    (torch.where(mask, per_token, 0.0).sum() / n_tokens).backward()
                    with torch.no_grad():
                        step_kl += float((stats["approx_kl"] * mask).sum()) \
                            if target_kl is not None else 0.0
                        if stopped:
                            continue  # stats describe the policy's updates
                        for key, value in stats.items():
                            sums[key] = sums.get(key, 0.0) + float((value * mask).sum())
                        if epoch == 0 and "entropy" in stats:
                            first_entropy += float((stats["entropy"] * mask).sum())
                if not stopped:
                    tokens += float(n_tokens)
                    first_tokens += float(n_tokens) if epoch == 0 else 0.0
                    if target_kl is not None and step_kl / float(n_tokens) > target_kl:
                        stopped = True  # this minibatch's stats still count: where it got to
                        if not critic_groups:
                            break
                if stopped:
                    for param in self.optimizer.param_groups[0]["params"]:
                        param.grad = None  # AdamW skips parameters without a gradient
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
                if not math.isfinite(grad_norm):
                    self.optimizer.zero_grad(set_to_none=True)
                    raise NonFiniteError(
                        f"non-finite gradient norm ({grad_norm}) in iteration "
                        f"{self.iteration + 1}, epoch {epoch + 1}: that step was not taken and no "
                        "checkpoint holds it (lower the lr, check the rewards)")
                if stopped:
                    critic_steps += 1
                else:
                    grad_norms.append(grad_norm)
                self.optimizer.step()
        if not all(bool(torch.isfinite(p).all()) for p in self.params):
            raise NonFiniteError(
                f"a weight became non-finite in iteration {self.iteration + 1} (the learning rate "
                "is too large for this model); the run's last checkpoint is intact")
        out = {key: value / tokens for key, value in sums.items()}
        if "entropy" in sums:
            out["entropy"] = first_entropy / max(first_tokens, 1.0)
        out["grad_norm"] = float(np.mean(grad_norms)) if grad_norms else 0.0
        out["updates"] = float(len(grad_norms))
        if target_kl is not None:
            out["early_stop"] = float(stopped)
            out["critic_only_updates"] = float(critic_steps)
        return out

    # -- one iteration -----------------------------------------------------------------------
    def train_iteration(self) -> dict[str, Any]:
        """Rollout -> prepare -> update -> KL controller, timed phase by phase; returns the
        iteration's metrics (``docs/metrics.md``)."""
        t0 = time.perf_counter()
        rollout = self.collect()
        t1 = time.perf_counter()
        batch, metrics = self.prepare(rollout)
        t2 = time.perf_counter()
        metrics["lr"] = self.config.lr * self.set_learning_rates()
        metrics.update(self.update(batch))
        t3 = time.perf_counter()
        self.kl_controller.update(metrics["kl_mean"], batch.mask.shape[0])
        self.iteration += 1
        tokens = int(rollout.lengths.sum())
        return {
            "iteration": self.iteration,
            **metrics,
            "tokens": tokens,
            "rollout_tokens_per_s": tokens / max(t1 - t0, 1e-9),
            "time_rollout_s": t1 - t0,
            "time_reference_s": t2 - t1,
            "time_update_s": t3 - t2,
            "time_iteration_s": t3 - t0,
        }

    @torch.no_grad()
    def evaluate(self, envs: Any = None, seed: int = 12345) -> tuple[Rollout, dict[str, float]]:
        """One rollout with the current policy, no update: ``(rollout, reward/KL metrics)``.

        Samples at the training temperature with the agent's generator reseeded to ``seed`` and
        restored afterwards, so evaluating does not disturb training.
        """
        saved = self.sample_generator.get_state()
        self.sample_generator.manual_seed(seed)
        try:
            rollout = self.collect(seed=seed, envs=envs)
            _, metrics = self.prepare_common(rollout)
        finally:
            self.sample_generator.set_state(saved)
        return rollout, {k: metrics[k] for k in ("reward_mean", "kl_mean", "kl_token_mean")}

    # -- state for checkpoints and resume ----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything but the weights and the optimizer (see :mod:`tokengym.agents.checkpoint`)."""
        return {"iteration": self.iteration, "kl_controller": self.kl_controller.state_dict(),
                "sample_generator": self.sample_generator.get_state(),
                "shuffle_generator": self.shuffle_generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.sample_generator.set_state(state["sample_generator"])
        self.shuffle_generator.set_state(state["shuffle_generator"])

    def reconfigure(self, config: Any) -> list[str]:
        """Switch to ``config`` after a checkpoint was restored (``--resume`` with new flags).

        The restored optimizer and KL controller would otherwise keep the old learning rate and
        beta: ``lr``/``value_lr``/``adam_eps``/``weight_decay`` are written into the optimizer's
        param groups,
        and a changed ``beta`` or adaptive-KL setting rebuilds the controller (from the new
        ``beta`` if it was given, else from the restored one). Every other field is read from
        ``self.config`` where it is used. Fields of ``config.FIXED_ON_RESUME`` cannot change:
        ``ValueError`` naming them. Returns ``["name: old -> new", ...]``, the changes made.
        """
        config = config.validate()
        old = self.config.to_dict()
        changed = {k: v for k, v in config.to_dict().items() if old.get(k) != v}
        fixed = sorted(set(changed) & set(type(config).FIXED_ON_RESUME))
        if fixed:
            raise ValueError(
                f"cannot change {fixed} when resuming (they shape the model, optimizer state or "
                f"rollout stream of the run; checkpoint has "
                f"{ {k: old.get(k) for k in fixed} }); start a new run with --out instead")
        if {"beta", "adaptive_kl", "adaptive_kl_target", "adaptive_kl_horizon"} & set(changed):
            beta = config.beta if "beta" in changed else self.kl_controller.beta
            self.kl_controller = make_kl_controller(config)
            self.kl_controller.beta = float(beta)
        self.config = config
        self.set_learning_rates()
        return [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in changed.items()]
