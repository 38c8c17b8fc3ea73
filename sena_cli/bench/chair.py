"""CHAIR (Rohrbach et al., 2018): hallucinated objects in captions, against ground truth.

Two uses:
- `chair_metrics`: the world's CHAIR, on object mentions the world's language finds.
- `CocoChair`: the original CHAIR on COCO (LisaAnne/Hallucination, utils/chair.py), our own
  code of its rules, checked against it in tests/bench/test_differential.py. A caption is
  lower-cased, tokenised (NLTK's word_tokenize) and every token singularised (Pattern's
  singularize); MSCOCO's two-word names are joined ("traffic light", "baby dog" -> "dog", …);
  "seat" is dropped when "toilet" is there; the words left that are in CHAIR's synonym list
  (data/synonyms.txt) are the caption's objects, each mapped to its COCO class (the list's
  first word). An image's truth is the union of its instance annotations' classes and the
  objects of its reference captions.
    CHAIR_s = captions with a hallucinated object / captions
    CHAIR_i = hallucinated mentions / mentions (every mention counts, repeats included)
  `recall` is sena's addition (not in CHAIR): truth classes mentioned / truth classes.

The tokenizer and the singulariser need packages sena does not require (NLTK with its punkt
data, from `pip install "sena-cli[bench]"`; Pattern). COCO CHAIR without NLTK is refused in one
line (coco_chair.py) unless eval.coco_chair.language_standins is set; without Pattern (whose
install needs MySQL's client library) sena's singulariser stands in. Every stand-in used is
named in the metrics file (coco_chair.fallback).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from sena_cli import bounded
from sena_cli.errors import SenaError

NLTK_DATA = "python -m nltk.downloader punkt punkt_tab"
NLTK_INSTALL = f'pip install "sena-cli[bench]" && {NLTK_DATA}'
PATTERN_INSTALL = "pip install Pattern"

# MSCOCO's two-word names and CHAIR's special cases: a qualifier before an animal or a vehicle
# names the animal or the vehicle, not a person ("baby bird" -> bird, "passenger jet" -> jet).
DOUBLE_WORDS = ("motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal",
                "stop light", "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball",
                "baseball bat", "baseball glove", "tennis racket", "wine glass", "hot dog", "cell phone",
                "mobile phone", "teddy bear", "hair drier", "potted plant", "bow tie", "laptop computer",
                "stove top oven", "home plate", "train track")
ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal",
                "cub")
VEHICLE_WORDS = ("jet", "train")


def chair_metrics(mentioned: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> dict[str, float]:
    """The world's CHAIR. `mentioned` holds every mention of a caption (repeats count, as in CHAIR).
    chair_s: share of captions naming any absent object; chair_i: share of mentions that are of
    absent objects; recall: share of present objects that are named; caption_f1: harmonic mean
    of 1 - chair_i and recall (saying less lowers CHAIR; only recall exposes that)."""
    if len(mentioned) != len(truth) or not truth:
        raise ValueError("CHAIR needs one object list per caption and at least one caption")
    named = hallucinated = bad_captions = covered = present = 0
    for said, real in zip(mentioned, truth):
        real = set(real)
        wrong = [s for s in said if s not in real]
        named += len(said)
        hallucinated += len(wrong)
        bad_captions += bool(wrong)
        covered += len(set(said) & real)
        present += len(real)
    chair_i = hallucinated / named if named else 0.0
    recall = covered / present if present else 0.0
    precision = 1.0 - chair_i if named else 0.0
    return {
        "chair_s": bad_captions / len(truth),
        "chair_i": chair_i,
        "recall": recall,
        "caption_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }


def chair_counts(mentioned: Sequence[Sequence[str]], truth: Sequence[Iterable[str]]) -> dict[str, int]:
    """How many items each CHAIR proportion is over (its n, for a standard error), for the world's
    CHAIR and COCO's alike: captions (chair_s), mentions (chair_i), objects present (recall)."""
    return {"chair_s": len(truth), "chair_i": sum(len(said) for said in mentioned),
            "recall": sum(len(set(real)) for real in truth)}


# ---------------------------------------------------------------- the original CHAIR on COCO

class CocoChair:
    """CHAIR's vocabulary (synonyms.txt) and rules; tokenize and singularize are injected."""

    def __init__(self, synonyms_text: str, tokenize: Callable[[str], list[str]],
                 singularize: Callable[[str], str]):
        self.tokenize, self.singularize = tokenize, singularize
        self.objects: set[str] = set()
        self.node: dict[str, str] = {}
        # As CHAIR reads the file: each line stripped, split on ", " (so a doubled space keeps its blank).
        for line in synonyms_text.splitlines(keepends=True):
            names = line.strip().split(", ")
            self.objects.update(names)
            for name in names:
                self.node[name] = names[0]
        self.double = {w: w for w in DOUBLE_WORDS}
        for animal in ANIMAL_WORDS:
            self.double[f"baby {animal}"] = animal
            self.double[f"adult {animal}"] = animal
        for vehicle in VEHICLE_WORDS:
            self.double[f"passenger {vehicle}"] = vehicle
        self.double["bow tie"] = "tie"
        self.double["toilet seat"] = "toilet"
        self.double["wine glas"] = "wine glass"  # the singulariser turns "glass" into "glas"

    def mentions(self, caption: str) -> list[str]:
        """The COCO classes a caption names, one per mention, in order."""
        words = [self.singularize(w) for w in self.tokenize(caption.lower())]
        joined, i = [], 0
        while i < len(words):
            pair = " ".join(words[i:i + 2])
            if pair in self.double:
                joined.append(self.double[pair])
                i += 2
            else:
                joined.append(words[i])
                i += 1
        if "toilet" in joined and "seat" in joined:  # "the seat of the toilet" is not a chair
            joined = [w for w in joined if w != "seat"]
        return [self.node[w] for w in joined if w in self.objects]

    def truth(self, category_names: Iterable[str], reference_captions: Iterable[str]) -> set[str]:
        """An image's objects: its instance classes and the objects of its reference captions."""
        out = {self.node[name] for name in category_names}
        for caption in reference_captions:
            out.update(self.mentions(caption))
        return out


def coco_chair_metrics(mentions: Sequence[Sequence[str]], truths: Sequence[set[str]]) -> dict[str, float]:
    """CHAIR_s and CHAIR_i as CHAIR computes them, and sena's recall."""
    if len(mentions) != len(truths) or not truths:
        raise ValueError("CHAIR needs one truth set per caption and at least one caption")
    bad_captions = hallucinated = words = covered = present = 0
    for said, real in zip(mentions, truths):
        wrong = sum(node not in real for node in said)
        words += len(said)
        hallucinated += wrong
        bad_captions += wrong > 0
        covered += len(set(said) & real)
        present += len(real)
    return {"chair_s": bad_captions / float(len(truths)),
            "chair_i": hallucinated / float(words) if words else 0.0,
            "recall": covered / present if present else 0.0}


def read_synonyms(path: str | Path) -> str:
    path = Path(path)
    if not path.exists():
        raise SenaError(f"{path}: CHAIR's synonyms.txt not found; fix eval.coco_chair.synonyms "
                        "(data/synonyms.txt of CHAIR's repository)")
    return bounded.read_text(path, fix="fix eval.coco_chair.synonyms")  # regular, within limits.max_file_bytes


# ---------------------------------------------------------------- language tools (optional)

def language_tools() -> tuple[Callable[[str], list[str]], Callable[[str], str], dict[str, str]]:
    """(tokenize, singularize, notes): NLTK's word_tokenize and Pattern's singularize when
    installed, else sena's stand-ins, with a note for each stand-in used."""
    notes = {}
    try:
        import nltk

        nltk.word_tokenize("A dog. A cat.")
        tokenize = nltk.word_tokenize
    except (ImportError, LookupError, OSError):
        tokenize = _fallback_tokenize
        notes["tokenize"] = (f"NLTK or its punkt data missing ({NLTK_INSTALL}): words split by a regular "
                             "expression instead of NLTK's word_tokenize")
    try:
        from pattern.en import singularize  # type: ignore[import-not-found]
    except ImportError:
        singularize = _fallback_singularize
        notes["singularize"] = (f"Pattern missing ({PATTERN_INSTALL}): plurals by sena's simple rules instead of "
                                "Pattern's singularize, so irregular plurals may count differently")
    return tokenize, singularize, notes


def _fallback_tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]", text)


_IRREGULAR = {"people": "person", "children": "child", "men": "man", "women": "woman", "mice": "mouse",
              "knives": "knife", "geese": "goose", "oxen": "ox", "feet": "foot", "teeth": "tooth",
              "leaves": "leaf", "wolves": "wolf", "shelves": "shelf", "calves": "calf", "buses": "bus"}


def _fallback_singularize(word: str) -> str:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word
