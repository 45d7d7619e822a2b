"""Regenerate the prompt sets of the Keywords, Length and Arithmetic tasks (envs/data/*.jsonl).

Deterministic (fixed seed): running it again rewrites identical files. The word lists and
templates below were written by the tokengym team for these tasks.

    python scripts/make_task_prompts.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "envs" / "data"

# CommonGen-style scenes: words that can plausibly share one everyday sentence.
SCENES = {
    "park": ["dog", "frisbee", "throw", "grass", "catch", "run", "bench", "tree"],
    "kitchen": ["cook", "pan", "onion", "chop", "stove", "knife", "soup", "taste"],
    "beach": ["wave", "sand", "swim", "towel", "sun", "shell", "surf", "castle"],
    "school": ["teacher", "student", "board", "write", "lesson", "desk", "book", "listen"],
    "farm": ["farmer", "cow", "field", "tractor", "milk", "barn", "harvest", "plant"],
    "winter": ["snow", "ski", "mountain", "jacket", "cold", "slope", "fall", "slide"],
    "music": ["guitar", "play", "song", "stage", "sing", "crowd", "drum", "dance"],
    "office": ["computer", "type", "meeting", "coffee", "desk", "email", "phone", "report"],
    "garden": ["flower", "water", "soil", "dig", "seed", "grow", "rose", "bee"],
    "road": ["car", "drive", "traffic", "light", "stop", "street", "bus", "wait"],
    "library": ["read", "shelf", "quiet", "book", "librarian", "borrow", "page", "table"],
    "birthday": ["cake", "candle", "blow", "gift", "party", "friend", "balloon", "sing"],
    "river": ["boat", "fish", "paddle", "bridge", "stream", "rock", "cross", "swim"],
    "gym": ["lift", "weight", "sweat", "exercise", "mat", "stretch", "run", "coach"],
    "market": ["buy", "fruit", "vendor", "basket", "sell", "price", "apple", "bag"],
    "camping": ["tent", "fire", "wood", "forest", "night", "star", "sleep", "pitch"],
    "rain": ["umbrella", "puddle", "jump", "boot", "cloud", "wet", "storm", "window"],
    "airport": ["plane", "ticket", "gate", "board", "luggage", "fly", "pilot", "wait"],
    "restaurant": ["waiter", "menu", "order", "plate", "serve", "table", "eat", "bill"],
    "soccer": ["ball", "kick", "goal", "field", "team", "score", "player", "referee"],
    "bakery": ["bread", "oven", "flour", "bake", "dough", "knead", "loaf", "smell"],
    "hospital": ["doctor", "nurse", "patient", "bed", "medicine", "check", "heal", "room"],
    "city": ["building", "walk", "sidewalk", "shop", "crowd", "taxi", "light", "night"],
    "zoo": ["lion", "cage", "feed", "keeper", "child", "watch", "elephant", "visit"],
    "painting": ["brush", "canvas", "paint", "color", "artist", "wall", "draw", "dry"],
    "laundry": ["wash", "shirt", "fold", "machine", "dry", "sock", "basket", "clean"],
    "train": ["station", "platform", "ride", "track", "seat", "window", "conductor", "arrive"],
    "pool": ["dive", "swim", "lane", "water", "goggles", "float", "splash", "lifeguard"],
    "cat": ["cat", "sleep", "sofa", "purr", "mouse", "chase", "window", "stretch"],
    "wedding": ["bride", "ring", "dance", "cake", "toast", "guest", "dress", "kiss"],
}

TOPICS = [
    "the ocean", "a rainy morning", "your favourite food", "a busy city", "autumn leaves",
    "a cup of coffee", "the moon", "a lazy cat", "a mountain hike", "your best friend",
    "a summer holiday", "a thunderstorm", "an old library", "a bicycle ride", "fresh bread",
    "a quiet forest", "the first day of school", "a football match", "a train journey",
    "a birthday party", "snow", "a garden in spring", "the desert", "a good book",
    "a night sky", "a crowded market", "a campfire", "a river", "a lighthouse", "a concert",
    "breakfast", "a museum", "a sunset", "a new phone", "the wind", "a small village",
    "a dog at the park", "an airport", "a bakery", "a rainy afternoon at home", "the sea breeze",
    "a snowy mountain", "a late-night walk", "a science lesson", "a vegetable soup",
    "a waterfall", "a busy kitchen", "your hometown", "a picnic", "a painting",
]
LENGTH_TEMPLATES = [
    "Describe {topic} in exactly {k} words.",
    "Write exactly {k} words about {topic}.",
    "Using exactly {k} words, describe {topic}.",
    "In exactly {k} words, tell me about {topic}.",
]
KEYWORD_TEMPLATES = [
    "Write one sentence that uses all of these words: {words}.",
    "Make a short sentence containing the words {words}.",
    "Use these words in a single sentence: {words}.",
]
ARITHMETIC = [
    ("What is {a} plus {b}?", lambda a, b: a + b),
    ("What is {a} minus {b}?", lambda a, b: a - b),
    ("What is {a} times {b}?", lambda a, b: a * b),
    ("Compute {a} + {b}.", lambda a, b: a + b),
    ("Compute {a} - {b}.", lambda a, b: a - b),
    ("Calculate {a} * {b}.", lambda a, b: a * b),
]


def keyword_records(rng: random.Random, n: int) -> list[dict]:
    seen, out = set(), []
    scenes = sorted(SCENES)
    while len(out) < n:
        words = tuple(sorted(rng.sample(SCENES[rng.choice(scenes)], rng.choice([3, 3, 4]))))
        if words in seen:
            continue
        seen.add(words)
        shown = list(words)
        rng.shuffle(shown)
        prompt = rng.choice(KEYWORD_TEMPLATES).format(words=", ".join(shown))
        out.append({"prompt": prompt, "keywords": list(words)})
    return out


def length_records(rng: random.Random, n: int) -> list[dict]:
    seen, out = set(), []
    while len(out) < n:
        topic, k, tpl = rng.choice(TOPICS), rng.randint(3, 12), rng.choice(LENGTH_TEMPLATES)
        if (topic, k) in seen:
            continue
        seen.add((topic, k))
        out.append({"prompt": tpl.format(topic=topic, k=k), "target": k})
    return out


def arithmetic_records(rng: random.Random, n: int) -> list[dict]:
    seen, out = set(), []
    while len(out) < n:
        tpl, fn = rng.choice(ARITHMETIC)
        times = "times" in tpl or "*" in tpl
        a, b = (rng.randint(2, 12), rng.randint(2, 12)) if times else (rng.randint(1, 50), rng.randint(1, 50))
        prompt = tpl.format(a=a, b=b) + " Answer with the number only."
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append({"prompt": prompt, "answer": fn(a, b)})
    return out


def write(name: str, records: list[dict], n_eval: int) -> None:
    for split, part in (("train", records[n_eval:]), ("eval", records[:n_eval])):
        path = DATA / f"{name}_{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
        print(f"{path.relative_to(DATA.parent.parent)}: {len(part)} prompts")


def main() -> None:
    write("keywords", keyword_records(random.Random(1), 500), n_eval=100)
    write("length", length_records(random.Random(2), 500), n_eval=100)
    write("arithmetic", arithmetic_records(random.Random(3), 600), n_eval=100)


if __name__ == "__main__":
    main()
