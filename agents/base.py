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

In a run of several processes (:mod:`tokengym.agents.distributed`) each rank plays its own
rows, and every statistic over the batch (scaling, whitening, token counts, metrics, the KL
controller's input, the early stop) is taken over all ranks' rows; gradients are summed over the
ranks before each step. It also owns construction from a config (policy + reference as an
:class:`~tokengym.agents.policy.ActorCritic`, AdamW, KL controller, seeded generators),
:meth:`~TrainableAgent.evaluate`, the checkpoint state, and applying changed settings on resume.
A subclass writes only what makes it a different algorithm: how it credits samples
(``advantages``) and its loss (``update``). Metric names: ``docs/metrics.md``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from tokengym.agents.advantages import place_step_rewards, score_scale, whiten
from tokengym.agents.batch import (
    Batch,
    LossFn,
    agent_columns,
    forward_inputs,
    forward_span,
    rollout_seed,
    token_mean,
    trim_columns,
)
from tokengym.agents.distributed import (
    all_reduce_sum,
    broadcast_module,
    global_mean,
    global_std,
    local_only,
    rank,
    world_size,
)
from tokengym.agents.fsdp import gathered, shard_policy
from tokengym.agents.groups import PromptGroups
from tokengym.agents.kl import kl_per_token, make_kl_controller
from tokengym.agents.optimize import optimize
from tokengym.agents.policy import (
    ActorCritic,
    completion_logits,
    entropy_from_logp,
    token_logprobs,
)
from tokengym.agents.rollout import Rollout, collect_rollout


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
            # Agents without a critic (no critic_trunk) build the shared trunk's unused head.
            trunk = config.critic_trunk() if hasattr(config, "critic_trunk") else "shared"
            policy = ActorCritic(
                policy, value_model=trunk, lora=config.lora, seed=config.seed,
                lora_kwargs=dict(r=config.lora_r, lora_alpha=config.lora_alpha,
                                 lora_dropout=config.lora_dropout,
                                 target_modules=config.lora_target_modules),
                value_head=getattr(config, "value_head", "linear"),
            )
        self.policy = policy
        broadcast_module(policy)  # every rank starts from rank 0's weights (LoRA init is random)
        if getattr(config, "fsdp", False):
            shard_policy(policy)  # before the optimizer: it must hold the sharded parameters
        self.group_size = int(getattr(config, "samples_per_prompt", 1))
        self.envs = self.grouped(envs) if envs is not None else None
        self.num_actions = int(envs.single_action_space.n) if envs is not None else None
        # An unused value head gets no gradient; leaving it out keeps Adam's state small. The
        # critic (value head, separate value trunk) has its own learning rate (value_lr): its
        # regression target moves each rollout and a head trained at the policy's small lr never
        # catches up.
        # A separate value trunk is a group of its own, beside the head's: with FSDP its
        # parameters are sharded and the head's are not, and one fused Adam step cannot mix them.
        trainable = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
        critic = ("value_trunk", "value_head")  # ActorCritic's critic modules, in their order
        groups = [{"params": [p for n, p in trainable if not n.startswith(critic)],
                   "lr": config.lr}]
        if self.uses_value_head:
            for prefix in critic:
                params = [p for n, p in trainable if n.startswith(prefix)]
                if params:
                    groups.append({"params": params, "lr": self.value_lr(config)})
        self.params = [p for group in groups for p in group["params"]]
        # The fused kernel updates all parameters in one pass (CPU and CUDA); it matters for
        # full fine-tuning, where the optimizer step touches every weight.
        self.optimizer = torch.optim.AdamW(
            groups, lr=config.lr, eps=config.adam_eps, weight_decay=config.weight_decay,
            fused=policy.device.type in ("cpu", "cuda"),
        )
        self.kl_controller = make_kl_controller(config)
        # Each rank samples its own stream; rank 0's (the only one in one process) from `seed`.
        seed = config.seed if rank() == 0 else int(
            np.random.SeedSequence([config.seed, rank(), 0]).generate_state(1)[0])
        self.sample_generator = torch.Generator(device=policy.device).manual_seed(seed)
        self.shuffle_generator = torch.Generator().manual_seed(seed + 1)
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
        for i, group in enumerate(self.optimizer.param_groups):  # the policy's, the critic's
            base = cfg.lr if i == 0 else self.value_lr(cfg)
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
        if seed is None:  # rank r plays rows r*E.. r*E+E-1 of one process with world_size*E rows
            seed = rollout_seed(self.config.seed, self.iteration) + rank() * envs.num_envs
        value_fn = self.policy.rollout_value_fn() if self.uses_value_head else None
        with gathered(self.policy.lm):  # FSDP: whole weights for the one-token forwards
            rollout = collect_rollout(envs, self.policy.lm, seed=seed,
                                      temperature=self.config.temperature,
                                      generator=self.sample_generator, value_fn=value_fn,
                                      compile=self.config.compile)
        if self.uses_value_head and rollout.values is None:  # separate value trunk
            ids, am = rollout.sequences()
            device = self.policy.device
            agent = rollout.sequence_agent_mask()
            ids, am, columns = forward_inputs(ids.to(device), am.to(device), None if agent is None
                                              else agent.to(device), rollout.tokens.shape[1])
            values = self.policy.separate_values(ids, am, rollout.tokens.shape[1], columns)
            rollout.values = values.cpu() * rollout.mask
        return rollout

    def prepare(self, rollout: Rollout) -> tuple[Batch, dict[str, float]]:
        """:meth:`prepare_common`, then the agent's :meth:`advantages`."""
        batch, metrics = self.prepare_common(rollout)
        metrics.update(self.advantages(batch))
        return batch, metrics

    def prepare_common(self, rollout: Rollout) -> tuple[Batch, dict[str, float]]:
        """Reference log-probs (ONE batched forward), per-token KL, scores; reward/KL metrics.

        Every per-token tensor is over the agent's tokens (steps); a multi-turn batch keeps the
        whole sequence with its agent mask, and the forwards read the agent's tokens only."""
        cfg, device = self.config, self.policy.device
        num_actions = self.num_actions or int(rollout.tokens.max()) + 1
        g = max(int(rollout.lengths.max()), 1)  # columns past every episode's end carry nothing
        mask = rollout.mask[:, :g].to(device)
        tokens = rollout.tokens[:, :g].to(device)
        logprobs = rollout.logprobs[:, :g].to(device)
        agent = rollout.sequence_agent_mask()
        if agent is None:
            ids, am = trim_columns(
                torch.cat([rollout.prompt_ids, rollout.tokens[:, :g]], 1).to(device),
                torch.cat([rollout.prompt_mask, rollout.mask[:, :g].long()], 1).to(device), g)
            columns = None
        else:  # the whole sequence, agent and inserted tokens, read at the agent's tokens
            ids, am = rollout.sequences()
            start, end = forward_span(am, agent)
            ids, am, agent = (x[:, start:end].to(device) for x in (ids, am, agent))
            columns = agent_columns(agent, g)
        ref = self.policy.reference_logprobs(ids, am, tokens, cfg.temperature, num_actions,
                                             columns)
        ref = torch.where(mask, ref, 0.0)
        if cfg.recomputes_logprobs():  # reduced precision: the update's path, so ratio == 1
            logprobs = self.policy.policy_logprobs(ids, am, tokens, cfg.temperature, num_actions,
                                                   columns)
            logprobs = torch.where(mask, logprobs, 0.0)
        kl = torch.where(mask, kl_per_token(logprobs, ref, cfg.kl_estimator), 0.0)
        scores = rollout.rewards.to(device, torch.float32)
        if cfg.no_stop_penalty is not None:
            scores = torch.where(~rollout.terminated.to(device), scores + cfg.no_stop_penalty,
                                 scores)
        scale = score_scale(scores) if cfg.scale_scores else 1.0
        if cfg.scale_scores:
            scores = whiten(scores, shift_mean=False)
        step_rewards = None
        if rollout.step_rewards is not None:  # multi-turn: per-turn rewards where they were paid
            step_rewards = place_step_rewards(rollout.step_rewards[:, :g].to(device), mask,
                                              scores, scale)
        values = rollout.values[:, :g].to(device) if rollout.values is not None else None
        batch = Batch(ids, am, tokens, mask, logprobs, ref, kl, scores, values=values,
                      agent_mask=agent, step_rewards=step_rewards)
        beta = self.kl_controller.beta
        kl_seq = kl.sum(-1)
        metrics = {  # over every rank's rows
            "reward_mean": global_mean(rollout.rewards),
            "reward_std": global_std(rollout.rewards),
            "kl_mean": global_mean(kl_seq),
            "kl_token_mean": token_mean(kl, mask),
            "beta": beta,
            "kl_penalty_mean": global_mean(-beta * kl_seq),
            "episode_length_mean": global_mean(rollout.lengths.float()),
            "stop_fraction": global_mean(rollout.terminated.float()),
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
        ids, am, columns = b.forward_inputs(idx)  # multi-turn: read the agent's tokens only
        if self.uses_value_head:
            logits, values = self.policy.forward_policy(ids, am, g, columns)
        else:
            logits, values = completion_logits(self.policy.lm, ids, am, g, columns=columns)[0], None
        logprobs, logp = token_logprobs(logits, b.tokens[idx], self.config.temperature,
                                        self.num_actions or logits.shape[-1])
        return logprobs, logp, values

    def optimize(self, b: Batch, loss_fn: LossFn, epochs: int = 1, num_minibatches: int = 1,
                 target_kl: float | None = None, critic_loss_fn: LossFn | None = None,
                 critic_epochs: int = 0) -> dict[str, float]:
        """``epochs`` x ``num_minibatches`` clipped-gradient steps of ``loss_fn`` on ``b``, with
        PPO's approximate-KL early stop at ``target_kl`` and the critic's later steps on
        ``critic_loss_fn``, then ``critic_epochs`` passes for the critic alone:
        :func:`tokengym.agents.optimize.optimize` (its docstring says what is returned)."""
        return optimize(self, b, loss_fn, epochs, num_minibatches, target_kl, critic_loss_fn,
                        critic_epochs)

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
        self.kl_controller.update(metrics["kl_mean"], batch.mask.shape[0] * world_size())
        self.iteration += 1
        tokens = int(all_reduce_sum(rollout.lengths.sum()))  # sampled by every rank
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
        restored afterwards, so evaluating does not disturb training. No collective: in a run of
        several processes one rank may evaluate alone (with FSDP, inside
        :func:`~tokengym.agents.fsdp.gathered` entered by every rank).
        """
        saved = self.sample_generator.get_state()
        self.sample_generator.manual_seed(seed)
        try:
            with local_only():  # this process's own episodes (rank 0 evaluates alone)
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
