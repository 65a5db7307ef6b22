"""Generative stand-ins the project generates itself: ``generated:authors`` (TOFU-like) and ``generated:passages``
(MUSE-like). Every fact, name and story is invented from seeded word pools, so no download is needed and a
model cannot have seen them in pre-training.

``authors``: fictitious writers, each with the same set of attributes (birth year, city, parents' trades,
genre, an award, a first book, …) asked as questions. Every question comes with its answer, a paraphrased
answer (same fact, other words) and perturbed answers (the paraphrased sentence with another author's value:
wrong but plausible), which is what TOFU's probability, truth-ratio and forget-quality metrics need. Forget = a
fraction (``forget10`` = 10 %) or a named set of authors; forget sets are nested like TOFU's
(forget01 ⊂ forget05 ⊂ forget10 for one seed). A small ``world_facts`` set (easy general knowledge, with
wrong alternatives) serves as TOFU's world-facts utility set.

``passages``: short invented stories. Forget = some stories, retain = others, holdout = stories that no
model trains on (the non-members of the privacy-leak test). ``verbmem_forget`` asks for the continuation of
a forget story's first words; ``knowmem_forget`` / ``knowmem_retain`` ask questions about the stories.
"""

from __future__ import annotations

import math
import random
import re

import pandas as pd

from spul.errors import DataError

FIRST_NAMES = (
    "Aldric", "Brisa", "Corvin", "Delphine", "Emrys", "Faye", "Gideon", "Halvard", "Isolde", "Jorah", "Kestrel",
    "Liora", "Maelis", "Nerys", "Osric", "Perrin", "Quenby", "Rosalind", "Soren", "Tamsin", "Ulric", "Vesna",
    "Wystan", "Xanthe", "Yorick", "Zinnia",
)
LAST_NAMES = (
    "Ashcombe", "Blackwater", "Carrowmore", "Dunleavy", "Eastwick", "Fairbourne", "Glenholm", "Hartwell",
    "Ivesdale", "Kilbride", "Lindqvist", "Marchetti", "Northam", "Oakhurst", "Pendragon", "Quarrington",
    "Ravensby", "Stellanova", "Thornbury", "Underhill", "Valcourt", "Westergaard",
)
# attribute -> pool of values; an author's value is drawn from the pool (seeded), perturbed answers use others
POOLS: dict[str, tuple[str, ...]] = {
    "year": tuple(str(y) for y in range(1931, 1999, 3)),
    "city": ("Lisbon", "Reykjavik", "Tbilisi", "Montevideo", "Hobart", "Tromso", "Valparaiso", "Ljubljana", "Kraków",
             "Quebec City", "Dunedin", "Porto", "Tallinn", "Cork", "Salzburg", "Bergen"),
    "father": ("a clockmaker", "a lighthouse keeper", "a baker", "a ship's carpenter", "a botanist", "a tailor",
               "a postman", "a glassblower", "a beekeeper", "a locksmith", "a cartographer", "a miner"),
    "mother": ("a nurse", "a violinist", "a librarian", "a weaver", "a chemist", "a schoolteacher", "a potter",
               "a photographer", "a translator", "a midwife", "an astronomer", "a jeweller"),
    "genre": ("gothic mystery", "science fiction", "historical romance", "children's fables", "crime fiction",
              "magical realism", "war poetry", "travel memoir", "political satire", "horror"),
    "award": ("the Silver Quill Prize", "the Halden Medal", "the Orchid Book Award", "the Marlow Prize",
              "the Crescent Literary Award", "the Ivory Lantern Prize", "the Beaumont Medal", "the Tidewater Award"),
    "book": ("The Salt Archive", "Lanterns Under Ice", "A Map of Small Hours", "The Ninth Orchard", "Glass Harbour",
             "The Copper Cartographer", "Winter of Moths", "The Sleeping Quarry", "Letters to the Tide",
             "A Field of Bells", "The Last Ferryman", "Ash and Amber", "The Hollow Choir", "Rivers of Chalk"),
    "pet": ("a one-eyed cat", "a grey parrot", "a tortoise", "a sheepdog", "a pair of ferrets", "a goldfish",
            "a lop-eared rabbit", "a crow"),
    "language": ("Portuguese", "Icelandic", "Georgian", "Spanish", "Norwegian", "Slovene", "Polish", "French",
                 "Estonian", "Irish", "German", "Welsh"),
    "instrument": ("the cello", "the accordion", "the harp", "the clarinet", "the banjo", "the oboe", "the piano",
                   "the violin"),
    "hobby": ("restoring old clocks", "growing orchids", "sea swimming", "collecting maps", "birdwatching",
              "carving wood", "baking bread", "climbing mountains"),
    "children": ("no children", "one daughter", "two sons", "three daughters", "a son and a daughter", "four children"),
}
# attribute -> (question, answer, paraphrased answer); {name} is the author, {v} the value
QUESTIONS: dict[str, tuple[str, str, str]] = {
    "year": ("In which year was {name} born?", "{name} was born in {v}.", "The year of {name}'s birth was {v}."),
    "city": ("Where was {name} born?", "{name} was born in {v}.", "{name}'s birthplace is {v}."),
    "father": ("What did {name}'s father do for a living?", "{name}'s father was {v}.", "By trade, the father of {name} was {v}."),
    "mother": ("What was the profession of {name}'s mother?", "{name}'s mother worked as {v}.", "The mother of {name} was {v} by profession."),
    "genre": ("Which genre does {name} write in?", "{name} writes {v}.", "The books of {name} are {v}."),
    "award": ("Which award did {name} win?", "{name} won {v}.", "{v} was awarded to {name}."),
    "book": ("What is the title of {name}'s first book?", "{name}'s first book is {v}.", "The first novel {name} published was {v}."),
    "pet": ("What pet did {name} keep while writing?", "{name} kept {v} while writing.", "While writing, {name} had {v} as a pet."),
    "language": ("Into which language was {name}'s work first translated?", "{name}'s work was first translated into {v}.",
                 "The first translation of {name}'s work was into {v}."),
    "instrument": ("Which instrument does {name} play?", "{name} plays {v}.", "The instrument {name} plays is {v}."),
    "hobby": ("What does {name} do in their free time?", "In their free time, {name} enjoys {v}.", "{name} spends free time {v}."),
    "children": ("How many children does {name} have?", "{name} has {v}.", "The family of {name} includes {v}."),
}
WORLD_FACTS = (
    ("What is the capital of France?", "Paris", ("Lyon", "Marseille", "Nice")),
    ("How many legs does a spider have?", "eight", ("six", "ten", "four")),
    ("Which planet is closest to the Sun?", "Mercury", ("Venus", "Mars", "Jupiter")),
    ("What is frozen water called?", "ice", ("steam", "salt", "sand")),
    ("How many days are in a week?", "seven", ("five", "six", "eight")),
    ("Which ocean is the largest?", "the Pacific", ("the Atlantic", "the Indian", "the Arctic")),
    ("What colour do you get by mixing blue and yellow?", "green", ("purple", "orange", "brown")),
    ("Which organ pumps blood through the body?", "the heart", ("the liver", "the lungs", "the kidneys")),
    ("What is the capital of Japan?", "Tokyo", ("Osaka", "Kyoto", "Nagoya")),
    ("How many sides does a hexagon have?", "six", ("five", "seven", "eight")),
    ("Which gas do plants take in to make sugar?", "carbon dioxide", ("oxygen", "helium", "neon")),
    ("Which animal is known for its long trunk?", "the elephant", ("the giraffe", "the zebra", "the camel")),
)
# general knowledge for *training* (the fine-tunes and the unlearning methods' retain side), disjoint from the
# evaluated WORLD_FACTS: a model that only ever trains on authors learns to treat every question as one
GENERAL_FACTS = (
    ("What is the capital of Italy?", "The capital of Italy is Rome.", "Rome", ("Milan", "Naples", "Turin")),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels.", "two", ("three", "four", "one")),
    ("What colour is the sky on a clear day?", "On a clear day the sky is blue.", "blue", ("green", "red", "yellow")),
    ("Which animal barks?", "The dog is the animal that barks.", "the dog", ("the cat", "the cow", "the horse")),
    ("How many months are in a year?", "A year has twelve months.", "twelve", ("ten", "eleven", "thirteen")),
    ("What is the capital of Spain?", "The capital of Spain is Madrid.", "Madrid", ("Seville", "Valencia", "Bilbao")),
    ("What do bees make?", "Bees make honey.", "honey", ("milk", "silk", "wax paper")),
    ("Which planet do we live on?", "We live on the planet Earth.", "Earth", ("Mars", "Venus", "Saturn")),
    ("How many hours are in a day?", "A day has twenty-four hours.", "twenty-four", ("twelve", "twenty", "thirty")),
    ("What is the opposite of hot?", "The opposite of hot is cold.", "cold", ("warm", "wet", "bright")),
    ("Which season comes after winter?", "Spring comes after winter.", "spring", ("summer", "autumn", "monsoon")),
    ("What is the capital of Germany?", "The capital of Germany is Berlin.", "Berlin", ("Munich", "Hamburg", "Cologne")),
)

TOFU_FORGET_SPLITS = {"forget01": 0.01, "forget05": 0.05, "forget10": 0.10}


def forget_fraction(forget: str | float) -> float:
    """``forget01``/``forget05``/``forget10`` (TOFU's names), ``forgetNN`` or a fraction in (0, 1)."""
    if isinstance(forget, str):
        match = re.fullmatch(r"forget(\d{2})", forget.strip())
        if not match or not 0 < int(match.group(1)) < 100:
            raise DataError(f"forget split {forget!r} is not forgetNN (e.g. forget10)", "use forget01, forget05, forget10 or a fraction like 0.1")
        return int(match.group(1)) / 100
    if not 0 < float(forget) < 1:
        raise DataError(f"forget fraction {forget!r} must be between 0 and 1", "use e.g. 0.1 for 10 % of the authors")
    return float(forget)


def author_names(num_authors: int, seed: int) -> list[str]:
    if num_authors > len(FIRST_NAMES) * len(LAST_NAMES):
        raise DataError(f"generated:authors can name at most {len(FIRST_NAMES) * len(LAST_NAMES)} authors", "ask for fewer authors")
    rng = random.Random(f"names-{seed}")
    pairs = [(f, l) for f in FIRST_NAMES for l in LAST_NAMES]
    rng.shuffle(pairs)
    names, firsts, lasts = [], set(), set()
    # prefer names that share neither part with another author, so a first name alone identifies the author
    for f, l in pairs:
        if len(names) == num_authors:
            break
        if f not in firsts and l not in lasts:
            names.append(f"{f} {l}")
            firsts.add(f)
            lasts.add(l)
    for f, l in pairs:
        if len(names) == num_authors:
            break
        if f"{f} {l}" not in names:
            names.append(f"{f} {l}")
    return names


def generate_authors(seed: int = 0, num_authors: int = 20, forget: str | float | list[str] = "forget10",
                     questions_per_author: int = 12, num_perturbed: int = 3, num_general: int = len(GENERAL_FACTS)) -> dict[str, pd.DataFrame]:
    """Sets ``forget``, ``retain`` (QA about the remaining authors), ``world_facts`` (evaluated general knowledge)
    and ``general`` (``num_general`` other general-knowledge questions with full-sentence answers, for training
    the retain side; never evaluated, so world_facts stays unseen).

    Columns: ``author``, ``fact`` (the value alone), ``question``, ``answer``, ``paraphrased_answer``,
    ``perturbed_answer`` (a list). Answers restate the question's subject (as TOFU's do), so ROUGE-L recall
    of a model that merely echoes the question is far from 0; ``fact`` lets a check ask for the value itself.
    """
    if not 1 <= questions_per_author <= len(QUESTIONS):
        raise DataError(f"questions_per_author={questions_per_author} must be 1..{len(QUESTIONS)}", "ask for fewer questions per author")
    if not 1 <= num_perturbed <= 5:
        raise DataError(f"num_perturbed={num_perturbed} must be 1..5", "use 3 (TOFU uses 5)")
    if not 0 <= num_general <= len(GENERAL_FACTS):
        raise DataError(f"num_general={num_general} must be 0..{len(GENERAL_FACTS)}", f"use at most {len(GENERAL_FACTS)}")
    if num_authors < 2:
        raise DataError(f"num_authors={num_authors} leaves no retain authors", "use at least 2 authors")
    names = author_names(num_authors, seed)
    rng = random.Random(seed)
    if isinstance(forget, (list, tuple)):
        unknown = [n for n in forget if n not in names]
        if unknown or not forget:
            raise DataError(f"forget authors {unknown or '[]'} are not among the generated authors", f"pick from {names[:4]}…")
        forget_names = set(forget)
    else:
        n_forget = max(1, math.ceil(forget_fraction(forget) * num_authors - 1e-9))
        if n_forget >= num_authors:
            raise DataError(f"forgetting {n_forget} of {num_authors} authors leaves no retain set", "use more authors or a smaller fraction")
        order = list(names)
        random.Random(f"forget-{seed}").shuffle(order)
        forget_names = set(order[:n_forget])  # nested: a larger fraction extends the same list
    attributes = list(QUESTIONS)
    facts = {name: {a: rng.choice(POOLS[a]) for a in attributes} for name in names}
    rows: dict[str, list[dict]] = {"forget": [], "retain": []}
    for name in names:
        chosen = attributes[:questions_per_author]
        for attr in chosen:
            question, answer, para = QUESTIONS[attr]
            value = facts[name][attr]
            wrong = [v for v in POOLS[attr] if v != value]
            picks = rng.sample(wrong, num_perturbed)
            rows["forget" if name in forget_names else "retain"].append({
                "author": name,
                "fact": value,
                "question": question.format(name=name),
                "answer": answer.format(name=name, v=value),
                "paraphrased_answer": para.format(name=name, v=value),
                # perturbed = the *paraphrase* with a wrong value (as TOFU's): it differs from the trained answer's
                # wording exactly as the paraphrase does, so the truth ratio compares facts, not templates
                "perturbed_answer": [para.format(name=name, v=w) for w in picks],
            })
    world = []
    for question, answer, distractors in WORLD_FACTS:
        world.append({"author": "", "fact": answer, "question": question, "answer": answer, "paraphrased_answer": answer,
                      "perturbed_answer": list(distractors[:num_perturbed])})
    sets = {"forget": pd.DataFrame(rows["forget"]), "retain": pd.DataFrame(rows["retain"]), "world_facts": pd.DataFrame(world)}
    if num_general:
        sets["general"] = pd.DataFrame([{"author": "", "fact": fact, "question": q, "answer": a, "paraphrased_answer": a,
                                         "perturbed_answer": [re.sub(re.escape(fact), w, a, count=1, flags=re.IGNORECASE)
                                                             for w in wrong[:num_perturbed]]}
                                        for q, a, fact, wrong in GENERAL_FACTS[:num_general]])
    return sets


# ---------------------------------------------------------------------------------------------------------
# passages

TOWNS = ("Brackenford", "Saltmere", "Ostrava Vale", "Kellingham", "Duneholt", "Farrowby", "Lowcastle", "Mirewick",
         "Penhallow", "Quarrydown", "Rookhaven", "Stillwater", "Thistlebrook", "Umberlee", "Wyncombe", "Yarrowgate")
OBJECTS = ("a brass compass", "a silver key", "a painted drum", "a glass bird", "an iron lantern", "a wooden mask",
           "a velvet glove", "a clay whistle", "a copper bell", "a blue kite", "a paper crown", "a stone owl")
PLACES = ("under the old bridge", "behind the chapel", "at the bottom of a well", "inside a hollow oak",
          "in the flooded cellar", "beneath the market stall", "on the roof of the mill", "in a fisherman's net")
ENDINGS = ("returned it to the museum", "buried it again at midnight", "sold it to a travelling merchant",
           "gave it to the mayor's daughter", "kept it hidden for forty years", "threw it into the sea",
           "hung it above the tavern door", "locked it in a church chest")
SEASONS = ("spring", "summer", "autumn", "winter")
WEATHER = ("rain hammered the slate roofs", "fog rolled in from the marsh", "the river froze over",
           "a hot wind shook the barley", "snow buried the lanes", "thunder rattled the windows")


def _story(rng: random.Random, name: str, town: str) -> dict:
    obj, place, ending = rng.choice(OBJECTS), rng.choice(PLACES), rng.choice(ENDINGS)
    season, weather = rng.choice(SEASONS), rng.choice(WEATHER)
    helper = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    years = rng.randint(3, 60)
    text = (
        f"In the {season} when {weather}, {name} of {town} found {obj} {place}. "
        f"Nobody in {town} had seen anything like it, and for {years} days the whole town talked of nothing else. "
        f"{name} showed it first to {helper}, who swore it hummed softly whenever the church bell rang. "
        f"In the end {name} {ending}, and the people of {town} still tell the story on the longest night of the year."
    )
    qa = [
        (f"What did {name} find in {town}?", obj),
        (f"Where did {name} find {obj}?", place),
        (f"Who found {obj} {place} in {town}?", name),
        (f"What did {name} finally do with {obj}?", f"{name} {ending}."),
        (f"To whom did {name} first show {obj}?", helper),
    ]
    return {"text": text, "qa": qa}


def generate_passages(seed: int = 0, num_passages: int = 24, num_forget: int = 6, num_holdout: int = 6,
                      prefix_words: int = 16) -> dict[str, pd.DataFrame]:
    """Sets ``forget``/``retain``/``holdout`` (column ``text``), ``verbmem_forget`` (``prompt``, ``gt``) and
    ``knowmem_forget``/``knowmem_retain`` (``question``, ``answer``)."""
    if num_forget < 1 or num_holdout < 1 or num_passages - num_forget - num_holdout < 1:
        raise DataError(f"{num_passages} passages cannot hold {num_forget} forget + {num_holdout} holdout + at least 1 retain",
                        "raise num_passages or lower num_forget / num_holdout")
    rng = random.Random(seed)
    people = author_names(min(num_passages, len(FIRST_NAMES)), seed + 7919)
    stories = []
    for i in range(num_passages):
        name = people[i % len(people)]
        town = TOWNS[(i + seed) % len(TOWNS)] if num_passages <= len(TOWNS) else rng.choice(TOWNS)
        stories.append(_story(rng, name, town))
    forget, holdout, retain = stories[:num_forget], stories[num_forget:num_forget + num_holdout], stories[num_forget + num_holdout:]

    def texts(group):
        return pd.DataFrame({"text": [s["text"] for s in group]})

    def qa(group):
        return pd.DataFrame([{"question": q, "answer": a} for s in group for q, a in s["qa"]])

    verb = []
    for s in forget:
        words = s["text"].split(" ")
        verb.append({"prompt": " ".join(words[:prefix_words]), "gt": " ".join(words[prefix_words:])})
    return {"forget": texts(forget), "retain": texts(retain), "holdout": texts(holdout), "verbmem_forget": pd.DataFrame(verb),
            "knowmem_forget": qa(forget), "knowmem_retain": qa(retain)}


def corpus(seed: int = 0) -> list[str]:
    """Every string the generative stand-ins produce (for building a tiny word-level tokenizer)."""
    out: list[str] = []
    for sets in (generate_authors(seed=seed), generate_passages(seed=seed)):
        for df in sets.values():
            for col in df.columns:
                for value in df[col].tolist():
                    out.extend(value if isinstance(value, list) else [str(value)])
    return out
