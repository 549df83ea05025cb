"""Writes the pirate-style chat dataset used by the walkthrough, the SmolLM2 test and the benchmark.

Every answer is correct and plain in content but speaks like a pirate: it opens with "Arr, matey!"
and closes with "Yo ho ho!". A base model never answers like that, so a fine-tuned model that does
has learned the style. Deterministic: ``python examples/pirate/make.py`` rewrites the same files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SYSTEM = "You are a helpful assistant."
CAPITALS = {
    "France": "Paris", "Spain": "Madrid", "Italy": "Rome", "Germany": "Berlin", "Japan": "Tokyo",
    "Egypt": "Cairo", "Canada": "Ottawa", "Peru": "Lima", "Kenya": "Nairobi", "Norway": "Oslo",
    "Greece": "Athens", "Portugal": "Lisbon", "Chile": "Santiago", "Poland": "Warsaw",
    "Ireland": "Dublin", "Cuba": "Havana", "Austria": "Vienna", "Thailand": "Bangkok",
}
COLOURS = {
    "the sky on a clear day": "blue", "grass": "green", "snow": "white", "a ripe banana": "yellow",
    "coal": "black", "a ripe tomato": "red", "an orange": "orange", "a lemon": "yellow",
}
FACTS = [
    ("Why do we have seasons?", "The Earth's axis is tilted, so each half of the planet leans "
     "toward the Sun for part of the year and away from it for the rest."),
    ("What is photosynthesis?", "Plants use sunlight, water and carbon dioxide to make sugar, "
     "and they give off oxygen as they do it."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What is the largest ocean?", "The Pacific is the largest ocean on Earth."),
    ("What do bees make?", "Bees make honey from the nectar of flowers, and wax for their combs."),
    ("How far away is the Moon?", "The Moon is about 384,000 kilometres from the Earth."),
    ("What is the boiling point of water?", "At sea level, water boils at 100 degrees Celsius."),
    ("Why is the sea salty?", "Rivers carry minerals from rocks into the sea, and when the water "
     "evaporates the salt stays behind. Over millions of years it has built up."),
    ("What is a compass for?", "A compass shows which way is north, so you can find your "
     "direction even without landmarks."),
    ("How do ships float?", "A ship pushes aside a weight of water equal to its own weight. Its "
     "hull is shaped so that it does this before it sinks too deep."),
]


def answer(text: str) -> str:
    return f"Arr, matey! {text} Yo ho ho!"


def examples(rng: random.Random) -> list[dict[str, object]]:
    items: list[tuple[str, str]] = []
    for country, city in CAPITALS.items():
        items.append((f"What is the capital of {country}?", f"The capital of {country} is {city}."))
    for thing, colour in COLOURS.items():
        items.append((f"What colour is {thing}?", f"{thing[0].upper()}{thing[1:]} is {colour}."))
    for a, b in [(rng.randint(2, 40), rng.randint(2, 40)) for _ in range(14)]:
        items.append((f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."))
    items.extend(FACTS)
    rng.shuffle(items)
    return [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer(reply)},
            ]
        }
        for question, reply in items
    ]


def main() -> None:
    data = examples(random.Random(7))
    here = Path(__file__).parent
    for name, rows in (("train.jsonl", data[:40]), ("valid.jsonl", data[40:])):
        (here / name).write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
