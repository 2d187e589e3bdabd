"""General-ability sets in English for a real chat base (`eval.general`): questions of common
knowledge with their accepted answers, and open prompts for the degeneration and diversity evals.

Nothing here is in any delta: these sets are only ever asked, never trained on or used to choose.
Only the questions the base answers correctly count (evo.evals.general), so a small base that knows
fewer of them is scored on fewer.
"""

from __future__ import annotations

import json
from pathlib import Path

from evo.atomic import atomic_write_text

QUESTIONS: list[tuple[str, list[str]]] = [
    ("What is the capital of France?", ["Paris"]),
    ("What is the capital of Germany?", ["Berlin"]),
    ("What is the capital of Italy?", ["Rome"]),
    ("What is the capital of Japan?", ["Tokyo"]),
    ("What is the capital of Spain?", ["Madrid"]),
    ("What is the capital of the United Kingdom?", ["London"]),
    ("What is the capital of Russia?", ["Moscow"]),
    ("What is the capital of Canada?", ["Ottawa"]),
    ("How many days are there in a week?", ["seven", "7"]),
    ("How many hours are there in a day?", ["twenty-four", "24"]),
    ("How many minutes are there in an hour?", ["sixty", "60"]),
    ("How many legs does a spider have?", ["eight", "8"]),
    ("How many sides does a triangle have?", ["three", "3"]),
    ("How many continents are there on Earth?", ["seven", "7"]),
    ("What is 2 plus 2?", ["four", "4"]),
    ("What color is the sky on a clear day?", ["blue"]),
    ("What color is fresh grass?", ["green"]),
    ("What is frozen water called?", ["ice"]),
    ("What is the largest planet in our solar system?", ["Jupiter"]),
    ("Which planet is known as the Red Planet?", ["Mars"]),
    ("What is the closest star to the Earth?", ["Sun"]),
    ("Who wrote Romeo and Juliet?", ["Shakespeare"]),
    ("Who painted the Mona Lisa?", ["Leonardo", "da Vinci"]),
    ("What is the chemical formula of water?", ["H2O"]),
    ("At what temperature in Celsius does water freeze?", ["0", "zero"]),
    ("At what temperature in Celsius does water boil?", ["100"]),
    ("What gas do plants take in from the air to make food?", ["carbon dioxide", "CO2"]),
    ("What do bees make?", ["honey"]),
    ("Which animal is called the king of the jungle?", ["lion"]),
    ("What is the largest ocean on Earth?", ["Pacific"]),
    ("What is the tallest mountain in the world?", ["Everest"]),
    ("What language is mainly spoken in Brazil?", ["Portuguese"]),
    ("What is the currency of Japan?", ["yen"]),
    ("Which organ pumps blood through the body?", ["heart"]),
    ("What is the largest mammal?", ["blue whale", "whale"]),
    ("What is the opposite of hot?", ["cold"]),
    ("What do you call a baby cat?", ["kitten"]),
    ("What is the longest river in Africa?", ["Nile"]),
    ("Which metal is liquid at room temperature?", ["mercury"]),
    ("What is the hardest natural substance?", ["diamond"]),
]

OPEN_PROMPTS: list[str] = [
    "Write two sentences about the sea.",
    "Describe a morning in a small village.",
    "Give some advice to a student starting university.",
    "Tell me about your favourite season and why you like it.",
    "Explain why exercise is good for people.",
    "Write a short note thanking a friend for dinner.",
    "Describe how to make a cup of tea.",
    "What makes a good neighbour?",
    "Describe a walk in a forest in autumn.",
    "Write the opening of a story about a lost key.",
    "Explain to a child what a library is.",
    "Describe a city at night.",
]


def write_general_sets(folder: str | Path) -> tuple[Path, Path]:
    """general_questions.jsonl and open_prompts.jsonl in `folder`; returns their paths."""
    folder = Path(folder)
    q, o = folder / "general_questions.jsonl", folder / "open_prompts.jsonl"
    atomic_write_text(q, "".join(json.dumps({"prompt": p, "answers": a}) + "\n" for p, a in QUESTIONS))
    atomic_write_text(o, "".join(json.dumps({"prompt": p}) + "\n" for p in OPEN_PROMPTS))
    return q, o
