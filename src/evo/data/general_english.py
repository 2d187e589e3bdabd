"""General-ability sets in English for a real chat base (`eval.general`): questions of common
knowledge with their accepted answers, and open prompts for the degeneration and diversity evals.

Nothing here is in any delta: these sets are only ever asked, never trained on. QUESTIONS and
OPEN_PROMPTS are what the gate and the report measure and nothing is chosen on them; settings are
chosen on VAL_QUESTIONS (`general_val.jsonl`, e.g. `--set eval.general.questions=.../general_val.jsonl`).
Only the questions the base answers correctly count (evo.evals.general), so a small base that knows
fewer of them is scored on fewer.
"""

from __future__ import annotations

import json
from pathlib import Path

from evo.atomic import atomic_write_text

# The test questions: what the gate and the report measure. Written on 2026-11-29, after every choice of
# the shop config so far had been made on VAL_QUESTIONS, and not used to choose anything since.
QUESTIONS: list[tuple[str, list[str]]] = [
    ("What is the capital of Portugal?", ["Lisbon"]),
    ("What is the capital of Norway?", ["Oslo"]),
    ("What is the capital of Ireland?", ["Dublin"]),
    ("What is the capital of Austria?", ["Vienna"]),
    ("What is the capital of Sweden?", ["Stockholm"]),
    ("What is the capital of Argentina?", ["Buenos Aires"]),
    ("What is the capital of South Korea?", ["Seoul"]),
    ("What is the capital of Kenya?", ["Nairobi"]),
    ("How many days are there in a year?", ["365"]),
    ("How many weeks are there in a year?", ["52", "fifty-two", "fifty two"]),
    ("How many sides does a square have?", ["four", "4"]),
    ("How many sides does a hexagon have?", ["six", "6"]),
    ("How many legs does an insect have?", ["six", "6"]),
    ("How many planets are there in our solar system?", ["eight", "8"]),
    ("What is 5 plus 3?", ["eight", "8"]),
    ("What is 10 times 10?", ["100", "hundred"]),
    ("What is half of 20?", ["ten", "10"]),
    ("What color do you get by mixing blue and yellow?", ["green"]),
    ("What color is a ripe tomato?", ["red"]),
    ("What color is coal?", ["black"]),
    ("Which planet is closest to the Sun?", ["Mercury"]),
    ("What is the name of our galaxy?", ["Milky Way"]),
    ("What is the hottest planet in our solar system?", ["Venus"]),
    ("Who wrote Pride and Prejudice?", ["Austen"]),
    ("Who discovered penicillin?", ["Fleming"]),
    ("Who was the first president of the United States?", ["Washington"]),
    ("Who painted The Starry Night?", ["Van Gogh", "Gogh"]),
    ("What is the chemical symbol for gold?", ["Au"]),
    ("What gas do people need to breathe to stay alive?", ["oxygen"]),
    ("What do caterpillars turn into?", ["butterfly", "butterflies", "moth"]),
    ("What is the largest continent?", ["Asia"]),
    ("What is the smallest continent?", ["Australia", "Oceania"]),
    ("What is the longest river in South America?", ["Amazon"]),
    ("Which ocean lies between Europe and North America?", ["Atlantic"]),
    ("What language is mainly spoken in Mexico?", ["Spanish"]),
    ("What language is mainly spoken in Germany?", ["German"]),
    ("What is the currency of the United Kingdom?", ["pound"]),
    ("What is the currency of the United States?", ["dollar"]),
    ("Which organs do we use to breathe?", ["lungs", "lung"]),
    ("How many teeth does an adult human usually have?", ["32", "thirty-two", "thirty two"]),
    ("What is the longest bone in the human body?", ["femur"]),
    ("What do you call a baby dog?", ["puppy", "pup"]),
    ("What do you call a young sheep?", ["lamb"]),
    ("What is a group of wolves called?", ["pack"]),
    ("Which animal has the longest neck?", ["giraffe"]),
    ("What is the fastest land animal?", ["cheetah"]),
    ("What is the largest bird in the world?", ["ostrich"]),
    ("What do pandas mainly eat?", ["bamboo"]),
    ("What is the opposite of up?", ["down"]),
    ("What is the opposite of day?", ["night"]),
    ("What is the plural of mouse?", ["mice"]),
    ("What is the past tense of go?", ["went"]),
    ("Which season comes after summer?", ["autumn", "fall"]),
    ("Which instrument has 88 keys?", ["piano"]),
    ("What is the main ingredient of guacamole?", ["avocado"]),
    ("Which country is home to the kangaroo?", ["Australia"]),
    ("In which country are the pyramids of Giza?", ["Egypt"]),
    ("How many strings does a standard guitar have?", ["six", "6"]),
    ("What is the square root of 81?", ["nine", "9"]),
    ("What is the largest country in the world by area?", ["Russia"]),
]

# The validation questions: every setting of the shop config (lr, steps, rehearsal) was chosen on these
# (they were the test questions until 2026-11-29). Never what the gate or the report measures.
VAL_QUESTIONS: list[tuple[str, list[str]]] = [
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

# What the base is asked at generation 0 for self-replay (data.self_replay): its own answers join every
# later generation's replay pool. None of these is a near-copy (evo.nearcopy) of one of QUESTIONS or
# OPEN_PROMPTS, which stay unseen (until 2026-12-02 six "What is the capital of X?", "What is 3 plus 5?"
# and three more were, one slot from a test question each: replaced).
SELF_REPLAY_PROMPTS: list[str] = [
    "Name the capital city of Australia.", "What is a volcano?", "What is a rainbow?", "What is an island?",
    "How do birds fly?", "How does a compass work?", "Why is the sky blue?", "How many seconds are there in a minute?",
    "What is a thunderstorm?", "What is 10 minus 4?", "How many wheels does a bicycle have?",
    "How many wheels does a car have?", "How do fish breathe under water?", "Why do leaves fall in autumn?",
    "What do cows drink?", "What do plants need to grow?",
    "Which planet do we live on?", "What is the Moon?", "Why is the sea salty?", "What causes rain?",
    "What is a noun?", "What is a verb?", "What is photosynthesis?", "What is gravity?",
    "Who was Albert Einstein?", "Who was Isaac Newton?", "What is the Eiffel Tower?", "What is the Great Wall of China?",
    "What is a computer?", "What is the internet?", "What does a doctor do?", "What does a teacher do?",
    "Give me a tip for sleeping better.", "How can I save money each month?", "How do I boil an egg?",
    "How do I write a polite email?", "What should I pack for a beach trip?", "How can I learn a new language?",
    "Write a sentence about a cat.", "Write a sentence about the rain.", "Describe a sunny day.",
    "Describe a busy market.", "Write a short poem about the moon.", "Write a haiku about winter.",
    "Tell me a fun fact about octopuses.", "Tell me a fun fact about the sun.", "Summarize what a river is.",
    "Explain what a map is.", "Explain how a bicycle works.", "Explain why we need sleep.",
    "What is the difference between weather and climate?", "What is the difference between a lake and a sea?",
    "List three fruits.", "List three colors.", "Name a famous painter.", "Name a musical instrument.",
    "Suggest a name for a dog.", "Suggest a healthy breakfast.", "What is a good way to start the day?",
    "How do you make a paper airplane?",
]


def _questions(items: list[tuple[str, list[str]]]) -> str:
    return "".join(json.dumps({"prompt": p, "answers": a}) + "\n" for p, a in items)


def write_general_sets(folder: str | Path) -> tuple[Path, Path, Path]:
    """general_questions.jsonl, open_prompts.jsonl and self_replay.jsonl in `folder`, and
    general_val.jsonl (VAL_QUESTIONS, to choose settings on); returns the first three's paths."""
    folder = Path(folder)
    q, o, r = folder / "general_questions.jsonl", folder / "open_prompts.jsonl", folder / "self_replay.jsonl"
    atomic_write_text(q, _questions(QUESTIONS))
    atomic_write_text(folder / "general_val.jsonl", _questions(VAL_QUESTIONS))
    atomic_write_text(o, "".join(json.dumps({"prompt": p}) + "\n" for p in OPEN_PROMPTS))
    atomic_write_text(r, "".join(json.dumps({"prompt": p}) + "\n" for p in SELF_REPLAY_PROMPTS))
    return q, o, r
