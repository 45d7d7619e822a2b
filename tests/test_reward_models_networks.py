"""Network reward models on real text: ``embedding-similarity`` (all-MiniLM-L6-v2),
``hf-classifier`` (a real classifier the test fine-tunes and saves), ``llm-judge`` (tiny-llama for
the contract, SmolLM2 in a slow test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tokengym.models import minilm_path
from tokengym.reward_models import make, score

P = ["Describe it."] * 8


@pytest.fixture(scope="module")
def embedder():
    return make(
        "embedding-similarity",
        targets=["The cat is sleeping on the sofa."],
        device="cpu",
        batch_size=3,
    )


def test_embedding_paraphrase_beats_unrelated_text(embedder) -> None:
    r = embedder(
        P[:3],
        [
            "A cat naps on the couch.",
            "Stock markets fell sharply on Monday.",
            "The kitten is asleep on the settee.",
        ],
    )
    assert r.dtype == np.float32 and r.shape == (3,) and np.all(np.abs(r) <= 1.0 + 1e-5)
    assert r[0] > r[1] + 0.3 and r[2] > r[1] + 0.3


def test_embedding_chunking_does_not_change_scores(embedder) -> None:
    texts = [
        "A cat naps.",
        "Markets fell.",
        "Cats sleep a lot, especially after dinner.",
        "x",
        "The sofa is blue.",
        "Dogs bark.",
        "A sleeping cat.",
        "Rain.",
    ]
    chunked = embedder(P, texts)  # batch_size=3: three forwards
    alone = np.array([embedder(P[:1], [t])[0] for t in texts])
    np.testing.assert_allclose(chunked, alone, atol=1e-5)
    np.testing.assert_array_equal(chunked, embedder(P, texts))  # deterministic


def test_embedding_several_targets_and_per_prompt_targets(embedder) -> None:
    multi = make(
        "embedding-similarity", targets=["I love pizza.", "The train was late."], device="cpu"
    )
    r = multi(P[:2], ["Pizza is my favourite food.", "My train arrived an hour late."])
    single = make("embedding-similarity", targets="I love pizza.", device="cpu")(
        P[:2], ["Pizza is my favourite food.", "My train arrived an hour late."]
    )
    assert r[0] == pytest.approx(single[0], abs=1e-5) and r[1] > single[1] + 0.3  # max over targets
    per = embedder(P[:2], ["I adore pizza.", "I adore pizza."], target=["Pizza is great.", None])
    assert per[0] > per[1] + 0.3  # sample 1 falls back to the constructor's cat target


def _train_classifier(out: Path) -> None:
    """MiniLM + a sequence-classification head, fine-tuned briefly on a small sentiment set."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pos = [
        "I loved this film.",
        "What a wonderful performance.",
        "Brilliant and moving.",
        "A delightful, funny story.",
        "The best movie of the year.",
        "Great acting and music.",
        "I enjoyed every minute.",
        "Beautiful and touching.",
        "A real pleasure to watch.",
        "Superb direction, highly recommended.",
    ]
    neg = [
        "I hated this film.",
        "What a dreadful performance.",
        "Boring and pointless.",
        "A tedious, unfunny mess.",
        "The worst movie of the year.",
        "Terrible acting and music.",
        "I regretted every minute.",
        "Ugly and depressing.",
        "A real chore to watch.",
        "Awful direction, avoid it.",
    ]
    tok = AutoTokenizer.from_pretrained(minilm_path())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(
            minilm_path(),
            num_labels=2,
            id2label={0: "NEGATIVE", 1: "POSITIVE"},
            label2id={"NEGATIVE": 0, "POSITIVE": 1},
        )
        enc = tok(pos + neg, padding=True, return_tensors="pt")
        labels = torch.tensor([1] * len(pos) + [0] * len(neg))
        # Only the top layer, the pooler and the new head train: a few cheap steps suffice.
        model.bert.embeddings.requires_grad_(False)
        model.bert.encoder.layer[:5].requires_grad_(False)
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=2e-4)
        model.train()
        for _ in range(8):
            loss = model(**enc, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval().save_pretrained(out)
    tok.save_pretrained(out)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("imdb-like-classifier")
    _train_classifier(out)
    return out


HELD_OUT_POS = ["An amazing, heartfelt film.", "Lovely story, I was smiling the whole time."]
HELD_OUT_NEG = ["A dull, painful waste of time.", "Horrible plot and bad jokes."]


def test_hf_classifier_ranks_held_out_positives_over_negatives(classifier_dir: Path) -> None:
    rm = make(
        "hf-classifier", model=str(classifier_dir), label="POSITIVE", device="cpu", batch_size=3
    )
    assert rm.label == "POSITIVE" and rm.label_index == 1
    r, _ = score(rm, P[:4], HELD_OUT_POS + HELD_OUT_NEG)
    assert np.all((r >= 0) & (r <= 1))
    assert min(r[:2]) > max(r[2:])
    neg = make("hf-classifier", model=classifier_dir, label="negative", device="cpu")
    np.testing.assert_allclose(neg(P[:4], HELD_OUT_POS + HELD_OUT_NEG), 1 - r, atol=1e-5)
    logits = make("hf-classifier", model=classifier_dir, label=1, output="logit", device="cpu")
    lg = logits(P[:4], HELD_OUT_POS + HELD_OUT_NEG)
    assert min(lg[:2]) > max(lg[2:])  # the raw logit ranks the same way here


def test_hf_classifier_rejects_unknown_labels(classifier_dir: Path) -> None:
    with pytest.raises(ValueError, match="not one of this classifier's labels"):
        make("hf-classifier", model=classifier_dir, label="NEUTRAL")
    with pytest.raises(ValueError, match="out of range"):
        make("hf-classifier", model=classifier_dir, label=2)


@pytest.fixture(scope="module")
def tiny_judge():
    return make("llm-judge", model="tiny-llama", device="cpu", batch_size=3)


def test_llm_judge_contract_on_tiny_llama(tiny_judge) -> None:
    texts = [
        "Great!",
        "Bad.",
        "A much longer completion that needs more tokens than the others",
        "{prompt} braces {completion}",
        "",
        "ok",
        "fine",
        "meh",
    ]
    r, _ = score(tiny_judge, P, texts)
    assert r.shape == (8,) and r.dtype == np.float32 and np.all((r > 0) & (r < 1))
    np.testing.assert_array_equal(r, tiny_judge(P, texts))  # deterministic
    # Left padding with real-token positions: a sample scores the same alone as in a batch.
    alone = np.array([tiny_judge(P[:1], [t])[0] for t in texts])
    np.testing.assert_allclose(r, alone, atol=1e-5)


def test_llm_judge_renders_the_rubric_with_the_chat_template(tiny_judge) -> None:
    text = tiny_judge.render("The {completion} prompt", "it was {prompt} fun")
    assert "The {completion} prompt" in text and "it was {prompt} fun" in text  # no re-substitution
    assert text.rstrip().endswith("assistant")  # the answer slot comes next
    plain = make(
        "llm-judge",
        model="tiny-llama",
        device="cpu",
        chat_template=False,
        rubric="Q: is '{completion}' nice?",
    )
    assert plain.render("p", "x") == "Q: is 'x' nice?\nAnswer:"
    with pytest.raises(ValueError, match="placeholder"):
        make("llm-judge", model="tiny-llama", rubric="no placeholder")


@pytest.mark.slow
def test_llm_judge_smollm2_rubric_separates_good_from_bad_reviews() -> None:
    judge = make(
        "llm-judge", rubric="Is this a positive review? Answer Yes or No.\n\n{prompt}{completion}"
    )
    prompts = ["The movie was"] * 6
    good = [
        " a wonderful, heartwarming story with brilliant acting. I loved it.",
        " fantastic: beautiful music, great cast, and a happy ending.",
        " an absolute delight from start to finish.",
    ]
    bad = [
        " terrible. Boring, ugly and I hated every minute.",
        " the worst film I have ever seen, awful and painful.",
        " a dull, stupid mess. I walked out.",
    ]
    r = judge(prompts, good + bad)
    assert min(r[:3]) > max(r[3:]), r
