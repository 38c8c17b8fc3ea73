"""AMBER (Wang et al., 2023) in its published format: an LLM-free hallucination benchmark.

Files (from the AMBER repository): a query file (JSON list of {"id", "image", "query"}),
annotations.json (entry id-1 describes query id: "type" is "generative" with "truth" and
"hallu" object lists, or "discriminative-…" with "truth" "yes"/"no"), relation.json (object
-> associated words) and safe_words.txt.

Generative scoring follows AMBER's own: the response's nouns (NLTK, lemmatised) that are in
AMBER's object vocabulary are matched against the truth objects and their associated words,
exactly or by spaCy similarity (> eval.amber.similarity); a noun matching no truth object
(and not a global safe word) is a hallucination.
  chair = hallucinated nouns / vocabulary nouns;  cover = truth objects mentioned / truth objects;
  hal = share of responses with a hallucination;  cog = hallu-list objects mentioned / hallu-list objects.
Discriminative: yes/no answers (POPE's parsing) with "no" as the positive class, as AMBER does.
Metrics are fractions (AMBER prints percentages).

The noun extractor and similarity need language data users download on their own machine
(nltk data, spaCy's en_core_web_lg); the scoring below takes already-extracted nouns and a
similarity function, so it is testable without them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sena_cli.bench.files import read_json_file
from sena_cli.errors import SenaError

Similar = Callable[[str, str], bool]
NLTK_INSTALL = ("pip install nltk && python -m nltk.downloader punkt punkt_tab averaged_perceptron_tagger "
                "averaged_perceptron_tagger_eng wordnet")
SPACY_INSTALL = "pip install spacy && python -m spacy download en_core_web_lg"


@dataclass
class AmberData:
    queries: list[dict]
    annotations: list[dict]
    association: dict[str, list[str]]
    safe_words: set[str]

    def annotation(self, query_id: int) -> dict:
        return self.annotations[query_id - 1]


def read_amber(queries: str | Path, annotations: str | Path, relation: str | Path,
               safe_words: str | Path) -> AmberData:
    q = read_json_file(queries, "AMBER query file", "fix eval.amber.queries")
    ann = read_json_file(annotations, "AMBER annotations", "fix eval.amber.annotations")
    rel = read_json_file(relation, "AMBER relation file", "fix eval.amber.relation")
    if not isinstance(q, list) or not all(isinstance(r, dict) and {"id", "image", "query"} <= set(r) for r in q):
        raise SenaError(f"{queries}: an AMBER query file is a JSON list of {{id, image, query}}")
    if not isinstance(ann, list) or not all(isinstance(a, dict) and {"type", "truth"} <= set(a) for a in ann):
        raise SenaError(f"{annotations}: AMBER annotations are a JSON list of {{type, truth, …}}")
    if not isinstance(rel, dict):
        raise SenaError(f"{relation}: AMBER's relation file maps each object to a list of words")
    for r in q:
        if not 1 <= int(r["id"]) <= len(ann):
            raise SenaError(f"{queries}: query id {r['id']} has no annotation in {annotations}")
    safe = Path(safe_words)
    if not safe.is_file():
        raise SenaError(f"{safe}: AMBER safe-word list not found; fix eval.amber.safe_words")
    return AmberData(q, ann, rel, {w.strip() for w in safe.read_text().splitlines() if w.strip()})


def _aliases(objects: Sequence[str], association: dict[str, list[str]]) -> list[set[str]]:
    return [{obj, *association.get(obj, [])} for obj in objects]


def _find(noun: str, aliases: list[set[str]], similar: Similar, exact_only: bool) -> int | None:
    for i, words in enumerate(aliases):
        if noun in words:
            return i
    if exact_only:
        return None
    for i, words in enumerate(aliases):
        if any(similar(noun, w) for w in words):
            return i
    return None


def score_generative(responses_nouns: Sequence[Sequence[str]], annotations: Sequence[dict],
                     data: AmberData, similar: Similar) -> dict[str, float]:
    vocabulary = set(data.association) | {w for ws in data.association.values() for w in ws}
    considered = hallucinated = with_hallucination = 0
    truth_total = truth_covered = hallu_total = hallu_covered = 0
    for nouns, ann in zip(responses_nouns, annotations, strict=True):
        truth = _aliases(ann["truth"], data.association)
        hallu = _aliases(ann.get("hallu", []), data.association)
        covered, cog = set(), set()
        bad = 0
        for noun in (n for n in nouns if n in vocabulary):
            considered += 1
            if noun in data.safe_words:
                continue
            hit = _find(noun, truth, similar, exact_only=True)
            if hit is not None:
                covered.add(hit)
                continue
            h = _find(noun, hallu, similar, exact_only=False)
            if h is not None:
                cog.add(h)
            hit = _find(noun, truth, similar, exact_only=False)
            if hit is not None:
                covered.add(hit)
                continue
            bad += 1
        hallucinated += bad
        with_hallucination += bool(bad)
        truth_total += len(truth)
        truth_covered += len(covered)
        hallu_total += len(hallu)
        hallu_covered += len(cog)
    n = len(annotations)
    return {
        "chair": hallucinated / considered if considered else 0.0,
        "cover": truth_covered / truth_total if truth_total else 0.0,
        "hal": with_hallucination / n if n else 0.0,
        "cog": hallu_covered / hallu_total if hallu_total else 0.0,
    }


def score_discriminative(answers: Sequence[str], truths: Sequence[str]) -> dict[str, float]:
    """answers and truths are 'yes'/'no'; 'no' is the positive class (AMBER's convention)."""
    said_no = sum(a == "no" for a in answers)
    is_no = sum(t == "no" for t in truths)
    both_no = sum(a == "no" and t == "no" for a, t in zip(answers, truths, strict=True))
    precision = both_no / said_no if said_no else 0.0
    recall = both_no / is_no if is_no else 0.0
    return {
        "accuracy": sum(a == t for a, t in zip(answers, truths)) / len(truths) if truths else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }


def nltk_nouns() -> Callable[[str], list[str]]:
    """AMBER's noun extractor: NLTK tokens tagged NN*, lemmatised with WordNet."""
    try:
        import nltk
        from nltk.stem import WordNetLemmatizer
    except ImportError:
        raise SenaError(f"AMBER needs NLTK for noun extraction: {NLTK_INSTALL}") from None
    lemmatizer = WordNetLemmatizer()

    def extract(text: str) -> list[str]:
        try:
            tagged = nltk.pos_tag(nltk.word_tokenize(text))
            return [lemmatizer.lemmatize(w) for w, pos in tagged if pos.startswith("NN")]
        except LookupError:
            raise SenaError(f"AMBER needs NLTK's language data: {NLTK_INSTALL}") from None

    return extract


def spacy_similarity(threshold: float) -> Similar:
    """AMBER's near-synonym test: spaCy en_core_web_lg vector similarity above the threshold."""
    try:
        import spacy
    except ImportError:
        raise SenaError(f"AMBER's synonym matching needs spaCy: {SPACY_INSTALL} "
                        "(or set eval.amber.similarity: 0 for exact matching)") from None
    try:
        nlp = spacy.load("en_core_web_lg")
    except OSError:
        raise SenaError(f"AMBER's synonym matching needs spaCy's en_core_web_lg: {SPACY_INSTALL}") from None
    cache: dict[tuple[str, str], bool] = {}

    def similar(a: str, b: str) -> bool:
        if (a, b) not in cache:
            cache[(a, b)] = nlp(a).similarity(nlp(b)) > threshold
        return cache[(a, b)]

    return similar
