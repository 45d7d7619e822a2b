"""The learned preference reward model: Bradley–Terry training, saving, ``make(DIR)``, the
``train-rm`` / ``label-pairs`` commands."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tokengym.cli import main as cli_main
from tokengym.labeling import label_pairs, make_pairs
from tokengym.reward_models import make, score, train_preference_model
from tokengym.reward_models.preference_training import read_pairs

NOUNS = [
    "film",
    "meal",
    "trip",
    "concert",
    "book",
    "hotel",
    "party",
    "lecture",
    "game",
    "album",
    "show",
    "class",
    "visit",
    "dinner",
    "weekend",
]
POSITIVE = [
    "wonderful",
    "delightful",
    "excellent",
    "charming",
    "superb",
    "lovely",
    "brilliant",
    "fantastic",
    "marvellous",
    "enjoyable",
]
NEGATIVE = [
    "dreadful",
    "boring",
    "awful",
    "terrible",
    "dull",
    "horrible",
    "disappointing",
    "miserable",
    "tedious",
    "unpleasant",
]
# Words the model never sees in training: the rule (positive beats negative) must generalise.
UNSEEN_POSITIVE = ["amazing", "magnificent", "splendid"]
UNSEEN_NEGATIVE = ["atrocious", "dismal", "appalling"]


def synthetic_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Pairs that follow one learnable rule: the positive review is always chosen."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        noun = rng.choice(NOUNS)
        pairs.append(
            {
                "prompt": f"Review {i % 40}: the {noun}",
                "chosen": f" was {rng.choice(POSITIVE)}, really.",
                "rejected": f" was {rng.choice(NEGATIVE)}, really.",
            }
        )
    return pairs


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("rm") / "sentiment-rm"
    report = train_preference_model(
        synthetic_pairs(240), out, epochs=8, device="cpu", progress=False
    )
    return out, report


def test_held_out_pairwise_accuracy_is_high(trained) -> None:
    out, report = trained
    assert report.num_val > 0 and report.num_train + report.num_val == 240
    assert report.val_accuracy >= 0.9
    assert [h["epoch"] for h in report.history] == list(range(1, 9))
    assert report.history[-1]["loss"] < report.history[0]["loss"]


def test_saved_directory_layout_and_config(trained) -> None:
    out, report = trained
    assert sorted(p.name for p in out.iterdir()) == [
        "model.safetensors",
        "tokengym_reward_model.json",
    ]
    config = json.loads((out / "tokengym_reward_model.json").read_text())
    assert config["type"] == "preference" and config["backbone"] is None  # the default MiniLM
    assert config["training"]["history"] == report.history
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temp dirs left


def test_make_dir_loads_a_consistent_reward_model(trained) -> None:
    out, _ = trained
    rm = make(str(out), device="cpu")
    assert make(out, device="cpu")(["p"], ["x"]) == pytest.approx(rm(["p"], ["x"]))
    prompts = ["Review 99: the museum"] * 6
    texts = [f" was {w}, really." for w in UNSEEN_POSITIVE + UNSEEN_NEGATIVE]
    r, _ = score(rm, prompts, texts)
    assert min(r[:3]) > max(r[3:])  # unseen words follow the learned rule
    np.testing.assert_allclose(r, rm(prompts, texts), atol=1e-6)  # deterministic
    alone = [rm(prompts[:1], [t])[0] for t in texts]
    np.testing.assert_allclose(r, alone, atol=1e-4)  # batch composition does not matter
    assert make("preference", path=out, device="cpu")(prompts[:1], texts[:1]) == pytest.approx(
        r[:1]
    )


def test_saving_refuses_to_overwrite_unrelated_directories(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a saved tokengym reward model"):
        train_preference_model(
            synthetic_pairs(20), tmp_path, epochs=1, device="cpu", progress=False
        )
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_finetuned_causal_lm_backbone_is_saved_with_the_model(tmp_path: Path) -> None:
    out = tmp_path / "tiny-rm"
    pairs = [
        {"prompt": "Q:", "chosen": f" good answer {i}", "rejected": f" bad {i}"} for i in range(16)
    ]
    report = train_preference_model(
        pairs,
        out,
        backbone="tiny-llama",
        finetune_backbone=True,
        epochs=2,
        batch_size=8,
        lr=1e-2,
        backbone_lr=1e-3,
        device="cpu",
        progress=False,
    )
    assert (out / "backbone" / "model.safetensors").is_file()
    config = json.loads((out / "tokengym_reward_model.json").read_text())
    assert config["backbone"] == "backbone" and config["pooling"] == "last"
    rm = make(out, device="cpu")
    r = rm(["Q:"] * 2, [" good answer 99", " bad 99"])
    assert r[0] > r[1] and report.history[-1]["train_accuracy"] == 1.0
    # Retraining into the same directory replaces it, atomically.
    train_preference_model(
        pairs, out, backbone="tiny-llama", epochs=1, device="cpu", progress=False
    )
    assert not (out / "backbone").exists()


def test_bad_pairs_are_reported(tmp_path: Path) -> None:
    bad = tmp_path / "pairs.jsonl"
    bad.write_text(
        '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": 3}\n'
    )
    with pytest.raises(ValueError, match=r"pairs.jsonl\[1\]"):
        read_pairs(bad)
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="pairs.jsonl:1: not valid JSON"):
        read_pairs(bad)


def test_a_bad_saved_model_fails_clearly(trained, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokengym_reward_model.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a tokengym reward model config"):
        make(broken)
    import shutil

    from safetensors.torch import save_file

    wrong = tmp_path / "wrong-weights"
    shutil.copytree(trained[0], wrong)
    save_file({"w": torch.zeros(2)}, str(wrong / "model.safetensors"))
    with pytest.raises(ValueError, match="expected head.weight, head.bias"):
        make(wrong, device="cpu")


def test_make_pairs_strategies() -> None:
    samples = [{"prompt": "p", "completions": ["a", "b", "c", "c"], "scores": [0.1, 0.9, 0.5, 0.5]}]
    assert make_pairs(samples) == [
        {"prompt": "p", "chosen": "b", "rejected": "a", "chosen_score": 0.9, "rejected_score": 0.1}
    ]
    every = make_pairs(samples, "all")
    assert len(every) == 5  # 6 pairs minus the tie between the two identical "c"
    assert all(p["chosen_score"] > p["rejected_score"] for p in every)
    wide = make_pairs(samples, "all", min_margin=0.5)
    assert [(p["chosen"], p["rejected"]) for p in wide] == [("b", "a")]


def test_label_pairs_then_train_rm_through_the_cli(tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The movie was\nI think that\nYesterday we\nMy favourite food is\n")
    pairs_file = tmp_path / "pairs.jsonl"
    assert (
        cli_main(
            [
                "label-pairs",
                "--prompts",
                str(prompts),
                "--out",
                str(pairs_file),
                "--policy",
                "tiny-llama",
                "--gold",
                "length",
                "--gold-kwargs",
                '{"target": 4}',
                "--k",
                "3",
                "--max-new-tokens",
                "6",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    assert pairs and {"prompt", "chosen", "rejected"} <= set(pairs[0])
    gold = make("length", target=4)
    for p in pairs:
        c, r = gold([p["prompt"]] * 2, [p["chosen"], p["rejected"]])
        assert c > r and c == pytest.approx(p["chosen_score"])
    # The Python function gives the same pairs for the same seed.
    again = label_pairs(
        "tiny-llama",
        str(prompts),
        "length",
        gold_kwargs={"target": 4},
        k=3,
        max_new_tokens=6,
        seed=1,
        progress=False,
    )
    assert again == pairs
    out = tmp_path / "rm"
    assert (
        cli_main(
            [
                "train-rm",
                "--pairs",
                str(pairs_file),
                "--out",
                str(out),
                "--epochs",
                "2",
                "--val-fraction",
                "0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "saved" in capsys.readouterr().out
    assert make(str(out), device="cpu")(["p"], ["x"]).shape == (1,)
