"""The valid neighbours of tests/test_bad_env_inputs.py's bad inputs are still accepted: the
checks that refuse a bad input do not refuse a good one next to it."""

from __future__ import annotations

import functools
import types
from pathlib import Path

import numpy as np
from env_input_helpers import TOK, file, make, started, vec

from tokengym.models import smollm2_path
from tokengym.reward_models import make as make_rm


def test_prompt_file_suffixes_in_any_case(tmp_path: Path) -> None:
    env = make(prompts=file(tmp_path, "P.JSONL", '{"prompt": "Hi", "answer": 3}\n'))
    assert env.unwrapped.episodes.source.records[0].fields == {"answer": 3}
    env = make(prompts=Path(file(tmp_path, "p.TXT", "one\ntwo\n")))
    assert [r.text for r in env.unwrapped.episodes.source.records] == ["one", "two"]


def test_record_fields_and_callables() -> None:
    env = started(prompts=[{"prompt": "Hi", "answer": 3, "my-field": 1}], reward_model="arithmetic")
    assert env.unwrapped.prompt_record.fields == {"answer": 3, "my-field": 1}
    env = started(prompts=lambda rng, *rest: "Generated prompt")
    assert env.unwrapped.prompt_record.text == "Generated prompt"


def test_tokenizer_as_a_path_and_flexible_scalars() -> None:
    env = make(tokenizer=Path(smollm2_path()), chat_template=np.bool_(True),
               stop_tokens=np.int64(2), stop_strings=("\n\n",))
    assert env.unwrapped.episodes.stop_ids.tolist() == [2]
    eos = env.unwrapped.tokenizer.eos_token
    assert make(stop_tokens=eos, max_prompt_tokens=np.int64(8)).unwrapped.max_prompt_tokens == 8


def test_reward_model_forms() -> None:
    class WithFields:
        def __call__(self, prompts, completions, **fields):
            return [1.0] * len(completions)

    def two(prompts, completions, answer=None):
        return [0.0] * len(completions)

    for rm in (WithFields(), functools.partial(two), two, lambda *args: [0.0]):
        started(reward_model=rm, max_new_tokens=1).step(100)
    make(reward_model="length", reward_model_kwargs=types.MappingProxyType({"target": 3}))
    assert make_rm("keywords", words=("good", "great")).words == ["good", "great"]
    assert make_rm("keywords", words="good, great").words == ["good", "great"]
    assert make_rm("regex", pattern="x", match=np.float32(2.0), no_match=-1).values == (2.0, -1.0)
    assert make_rm("normalized", base="vader", mean=0, std=np.float64(2.0)).std == 2.0


def test_vector_seeds_and_options() -> None:
    envs = vec(2)
    obs, _ = envs.reset(seed=np.array([3, 4]))
    again, _ = vec(2).reset(seed=[3, 4])
    np.testing.assert_array_equal(obs["input_ids"], again["input_ids"])
    envs.reset(seed=np.int64(5), options=types.MappingProxyType({"prompt": "Forced"}))
    assert [r.text for r in envs.unwrapped.prompt_records()] == ["Forced", "Forced"]


def test_tasks_take_a_split_or_prompts() -> None:
    assert make("tokengym/Sentiment-v0", split="eval").unwrapped.prompt_record is None
    env = make("tokengym/Keywords-v0", prompts=[{"prompt": "Use: cat", "keywords": ["cat"]}])
    assert len(env.unwrapped.episodes.source) == 1
    assert make("tokengym/Length-v0", tokenizer=TOK).unwrapped.max_new_tokens == 2
