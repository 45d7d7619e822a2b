"""Agents from outside the package: ``register()``, and throw-away distributions whose entry points
(group ``tokengym.agents``) add agents that ``make_agent`` builds and ``tokengym train`` trains."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from tokengym.agents import registry
from tokengym.agents.registry import (
    AGENTS,
    ENTRY_POINT_GROUP,
    AgentSpec,
    available,
    check_agent_name,
    config_class,
    get_spec,
    make_agent,
    make_config,
    register,
)

BUILTINS = ["ppo", "reinforce", "rloo", "grpo", "a2c", "best-of-n", "sample", "greedy", "sb3-ppo",
            "sb3-a2c"]

# A plugin agent: REINFORCE with its advantages scaled by a config field of its own, so the CLI
# test also shows that a plugin's config fields become flags.
MYAGENTS = '''
"""``my-reinforce``: REINFORCE with its advantages multiplied by ``advantage_scale``."""

from dataclasses import dataclass

from tokengym.agents.registry import AgentSpec
from tokengym.agents.reinforce import ReinforceAgent, ReinforceConfig


@dataclass
class MyReinforceConfig(ReinforceConfig):
    # Multiplies every advantage.
    advantage_scale: float = 1.0

    def validate(self):
        super().validate()
        if self.advantage_scale <= 0:
            raise ValueError(f"advantage_scale must be > 0, got {self.advantage_scale}")
        return self


class MyReinforce(ReinforceAgent):
    def advantages(self, b):
        out = super().advantages(b)
        b.advantages = b.advantages * self.config.advantage_scale
        return out


SPEC = AgentSpec(name="my-reinforce", family="policy gradient", samples_per_prompt="1",
                 uses_value_head=False, uses_reference=True, trainable=True,
                 agent=MyReinforce, config=MyReinforceConfig)
'''

# Entry points that are wrong in every way one can be (and one that is right, via a function).
INPROC = '''
from tokengym.agents.registry import AgentSpec


def make_spec():
    return AgentSpec("callable-agent", "policy gradient", "1", False, True, True,
                     "tokengym.agents.reinforce:ReinforceAgent",
                     "tokengym.agents.reinforce:ReinforceConfig")


class NotASpec:
    pass
'''


def _write_distribution(root: Path, name: str, files: dict[str, str], entry_points: str) -> None:
    """A distribution laid out as pip installs one: its code plus a ``.dist-info`` directory, which
    ``importlib.metadata`` finds on ``sys.path`` (so ``root`` on PYTHONPATH "installs" it)."""
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text), encoding="utf-8")
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_points}")
    (info / "RECORD").write_text("")


@pytest.fixture
def private_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, AgentSpec]:
    """A copy of the registry for one test, so nothing it registers leaks into the others."""
    agents = dict(registry.AGENTS)
    monkeypatch.setattr(registry, "AGENTS", agents)
    monkeypatch.setattr(registry, "_BROKEN", set())
    return agents


def _spec(name: str, **changes) -> AgentSpec:
    fields = dict(name=name, family="policy gradient", samples_per_prompt="1",
                  uses_value_head=False, uses_reference=True, trainable=True,
                  agent="tokengym.agents.reinforce:ReinforceAgent",
                  config="tokengym.agents.reinforce:ReinforceConfig")
    return AgentSpec(**{**fields, **changes})


def test_builtins_resolve_and_sb3_names_fix_their_algo() -> None:
    assert list(AGENTS)[:len(BUILTINS)] == BUILTINS
    for name in BUILTINS:
        spec = get_spec(name)
        assert isinstance(spec.agent, str) and isinstance(spec.agent_class(), type)
        assert config_class(name) is spec.config_class()
    assert check_agent_name is get_spec
    # As before the single registry: the name wins over an ``algo`` override.
    assert make_config("sb3-a2c", {"algo": "ppo"}).algo == "a2c"
    assert make_config("sb3-ppo").algo == "ppo"
    fixed = {"algo": "a2c"}
    spec = _spec("copied", fixed_config=fixed)
    fixed["algo"] = "ppo"  # the spec keeps its own copy
    assert spec.fixed_config == {"algo": "a2c"}
    assert pickle.loads(pickle.dumps(spec)) == spec and {spec: 1}[spec] == 1  # hashable
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.trainable = False  # type: ignore[misc]


def test_lazy_package_exports() -> None:
    import tokengym.agents as agents

    assert agents.register is register and agents.AgentSpec is AgentSpec
    assert agents.available is available and agents.AGENTS is registry.AGENTS


def test_register_duplicates_overwrite_and_types(private_registry: dict[str, AgentSpec]) -> None:
    spec = _spec("my-alias")
    register(spec)
    assert private_registry["my-alias"] is spec and list(available())[-1] == "my-alias"
    register(_spec("my-alias"))  # an equal spec again: nothing to refuse
    with pytest.raises(ValueError, match="'my-alias' is already registered.*overwrite=True"):
        register(_spec("my-alias", trainable=False))
    with pytest.raises(ValueError, match="'ppo' is already registered"):
        register(_spec("ppo"))
    register(_spec("my-alias", family="other"), overwrite=True)
    assert get_spec("my-alias").family == "other"
    with pytest.raises(TypeError, match="AgentSpec"):
        register({"name": "x"})  # type: ignore[arg-type]
    # Built from the import strings, like a built-in.
    assert type(make_config("my-alias")).__name__ == "ReinforceConfig"


def test_bad_specs_name_the_agent(private_registry: dict[str, AgentSpec]) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        _spec("")
    with pytest.raises(ValueError, match="'bad'.*'package.module:Attr'"):
        _spec("bad", agent="tokengym.agents.reinforce.ReinforceAgent")
    with pytest.raises(TypeError, match="'bad'.*agent must be a class"):
        _spec("bad", agent=42)
    with pytest.raises(TypeError, match="'bad'.*trainable must be a bool"):
        _spec("bad", trainable="yes")
    register(_spec("no-module", config="tokengym.agents.no_such_module:Config"))
    with pytest.raises(ValueError, match="agent 'no-module': cannot import module"):
        make_config("no-module")
    register(_spec("no-attr", agent="tokengym.agents.reinforce:NoSuchAgent"))
    with pytest.raises(ValueError, match="agent 'no-attr'.*no 'NoSuchAgent'"):
        make_agent("no-attr", None, None)
    register(_spec("not-a-class", agent="tokengym.agents.registry:ENTRY_POINT_GROUP"))
    with pytest.raises(TypeError, match="agent 'not-a-class'.*not a class"):
        make_agent("not-a-class", None, None)
    register(_spec("no-from-dict", config=dict))
    with pytest.raises(TypeError, match="agent 'no-from-dict'.*from_dict"):
        make_config("no-from-dict")


def test_unknown_name_lists_known_ones_and_the_closest_match() -> None:
    with pytest.raises(ValueError, match=r"unknown agent 'rlo'\. Did you mean 'rloo'\?") as info:
        make_agent("rlo", None, None)
    assert all(name in str(info.value) for name in BUILTINS)
    with pytest.raises(ValueError, match="unknown agent 'zzz'. Known: ppo, reinforce"):
        check_agent_name("zzz")


def test_entry_points_load_lazily_and_broken_ones_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_registry: dict[str, AgentSpec]
) -> None:
    _write_distribution(tmp_path, "tg_agents_inproc", {"tg_agents_inproc.py": INPROC},
                        "callable-agent = tg_agents_inproc:make_spec\n"
                        "broken = tg_agents_no_such_module:SPEC\n"
                        "a-class = tg_agents_inproc:NotASpec\n"
                        "renamed = tg_agents_inproc:make_spec\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tg_agents_inproc", raising=False)

    # Found by name, through its entry point (a zero-argument function returning the spec).
    assert get_spec("callable-agent").name == "callable-agent"
    assert "callable-agent" in private_registry
    # Listing warns about each broken plugin once and still lists everything else.
    with pytest.warns(RuntimeWarning) as caught:
        names = list(available())
    assert names == [*BUILTINS, "callable-agent"]
    messages = " | ".join(str(w.message) for w in caught)
    assert all(f"entry point {n!r}" in messages for n in ("broken", "a-class", "renamed"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(available()) == names
    # Using a broken one raises, naming its entry point.
    with pytest.raises(ValueError, match=r"entry point 'broken' \(tg_agents_no_such_module:SPEC\)"
                       ".*cannot be loaded"):
        make_agent("broken", None, None)
    with pytest.raises(TypeError, match="entry point 'a-class'.*loads the class NotASpec"):
        get_spec("a-class")
    with pytest.raises(ValueError, match="entry point 'renamed'.*'callable-agent'"):
        get_spec("renamed")


def _plugin_env(root: Path) -> dict[str, str]:
    paths = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    _write_distribution(root, "myagents", {"myagents/__init__.py": MYAGENTS},
                        "my-reinforce = myagents:SPEC\n")
    return root


def test_plugin_is_listed_and_built_in_a_fresh_process(installed_plugin: Path) -> None:
    code = textwrap.dedent(f"""
        from tokengym.agents.registry import AGENTS, available, make_agent
        from tokengym.agents.toy_task import make_toy_envs
        from tokengym.models import load_causal_lm, load_tokenizer

        assert "my-reinforce" not in AGENTS  # nothing is loaded before it is asked for
        lm = load_causal_lm("tiny-llama", device="cpu")
        envs = make_toy_envs(load_tokenizer("tiny-llama"), lm, 4, max_new_tokens=4)
        agent = make_agent("my-reinforce", envs, lm, {{"advantage_scale": 2.0, "lr": 1e-4}})
        assert type(agent).__name__ == "MyReinforce", type(agent)
        assert agent.config.advantage_scale == 2.0 and agent.config.num_envs == 4
        assert agent.train_iteration()["iteration"] == agent.iteration == 1
        assert list(available()) == {BUILTINS!r} + ["my-reinforce"], list(available())
    """)
    done = subprocess.run([sys.executable, "-c", code], env=_plugin_env(installed_plugin),
                          cwd=installed_plugin.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _tokengym_command() -> list[str]:
    """The ``tokengym`` console script of this interpreter (no ``python -m tokengym`` exists)."""
    script = Path(sys.executable).with_name("tokengym")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tokengym.cli"]


def test_plugin_trains_through_the_cli(installed_plugin: Path) -> None:
    out = installed_plugin.parent / "run"
    done = subprocess.run(
        [*_tokengym_command(), "train", "--agent", "my-reinforce", "--model", "tiny-llama",
         "--env", "tokengym/TextGen-v0", "--iterations", "2", "--num-envs", "4",
         "--advantage-scale", "2.0", "--out", str(out), "--no-tensorboard",
         "--env-kwarg", "max_new_tokens=4", "--env-kwarg", "reward_model=length",
         "--env-kwarg", 'prompts=["Once upon a time", "The weather today was"]'],
        env=_plugin_env(installed_plugin), cwd=installed_plugin.parent, capture_output=True,
        text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in
               (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    assert [r["iteration"] for r in records] == [1, 2]
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert saved["agent"] == "my-reinforce" and saved["config"]["advantage_scale"] == 2.0
