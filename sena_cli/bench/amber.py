"""AMBER (Wang et al., 2023) in its published format, scored as AMBER's inference.py scores it.

Files (from the AMBER repository): a query file (JSON list of {"id", "image", "query"}),
annotations.json (entry id-1 describes query id: "type" is "generative" with "truth" and
"hallu" object lists, or "discriminative-…" with "truth" "yes"/"no"), relation.json (object
-> associated words) and safe_words.txt.

Generative (our wording of AMBER's rule; the checks against AMBER's own script are in
tests/bench/test_differential.py): the response's nouns (NLTK tokens tagged NN*, lemmatised
with WordNet) that are in AMBER's vocabulary are the candidates. A global safe word is never a
hallucination. A candidate found in the truth words (every truth object's associated words
first, then the truth names) covers the first object it is found under. Otherwise it is looked
up in the hallucination words the same way (first exact hit marked for Cog), then, by spaCy
similarity above eval.amber.similarity, the first similar hallucination word is marked too and
the first similar truth word covers its object; a candidate with no similar truth word is a
hallucination.
  CHAIR = hallucinated / candidates; Cover = truth objects covered / truth objects;
  Hal = responses with a hallucination / responses; Cog = hallucination objects marked / hallu objects.
Discriminative: only the exact answers "Yes" and "No" count (anything else, the empty answer
included, is wrong and is not a "No"); "no" is the positive class. Per type as AMBER reports:
existence (discriminative-hallucination), attribute (state, number, action) and relation.

Every value is a percentage rounded to 0.1, computed with AMBER's arithmetic: its counters start
from metrics.txt (denominators at 0.001), and F1 comes from the rounded precision and recall
with AMBER's small constant in the denominator. Blocks with no question are left out (AMBER's
script prints 0 for them).

The noun extractor and the similarity need NLTK and spaCy (`pip install "sena-cli[bench]"`) and
their data (NLTK's tokenizer, tagger and WordNet; spaCy's en_core_web_lg), which sena does not
ship. Without them the generative scores are refused in one line saying how to fetch them, before
the model loads; `eval.amber.language_standins: true` (a named deviation) scores with sena's
stand-ins instead and the metrics say which part fell back and how, under amber.fallback. The
scoring below takes extracted nouns and a similarity function, so it is testable without them.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sena_cli import bounded
from sena_cli.bench.external import Tick, generate_windows, need
from sena_cli.bench.record import Benchmark, Chart
from sena_cli.config import param
from sena_cli.errors import SenaError
from sena_cli.frame import ANY, TEXT, TEXTS, WHOLE, Each, fault, given, one_of, read_json, refuse

if TYPE_CHECKING:  # the model boundary imports torch; reading and scoring a benchmark needs neither
    from sena_cli.vlm import VLM

Similar = Callable[[str, str], bool]
BENCH_EXTRA = 'pip install "sena-cli[bench]"'  # nltk and spaCy, pinned in constraints.txt
NLTK_DATA = ("python -m nltk.downloader punkt punkt_tab averaged_perceptron_tagger averaged_perceptron_tagger_eng "
             "wordnet")
SPACY_DATA = "python -m spacy download en_core_web_lg"
NLTK_INSTALL = f"{BENCH_EXTRA} && {NLTK_DATA}"
SPACY_INSTALL = f"{BENCH_EXTRA} && {SPACY_DATA}"


def how_to_get(package: str, data: str) -> str:
    """The command that fetches a language package's data, after installing the bench extra if the
    package itself is missing."""
    import importlib.util

    return data if importlib.util.find_spec(package) else f"{BENCH_EXTRA} && {data}"
YES_NO_PARSINGS = ("exact", "pope")

# The discriminative types and the counter prefix each one uses (as in AMBER's metrics.txt).
TYPE_PREFIX = {"discriminative-attribute-state": "as", "discriminative-attribute-number": "an",
               "discriminative-attribute-action": "aa", "discriminative-hallucination": "ha"}
OTHER_PREFIX = "asso"  # every other discriminative type: relation
PREFIXES = ("", "as_", "an_", "aa_", "asso_", "ha_")


@dataclass
class AmberData:
    queries: list[dict]
    annotations: list[dict]
    association: dict[str, list[str]]
    safe_words: list[str]

    def annotation(self, query_id: int) -> dict:
        return self.annotations[query_id - 1]


QUERY = {"id": WHOLE, "image": TEXT, "query": TEXT}
ANNOTATION = {"type": TEXT, "truth": ANY}
GENERATIVE = {"truth": TEXTS, "hallu?": TEXTS}
DISCRIMINATIVE = {"truth": one_of("yes", "no")}


def read_amber(queries: str | Path, annotations: str | Path, relation: str | Path,
               safe_words: str | Path) -> AmberData:
    ann_source = given("AMBER annotation file", "eval.amber.annotations")
    q = read_json(queries, given("AMBER query file", "eval.amber.queries"), [QUERY])
    ann = read_json(annotations, ann_source, [ANNOTATION])
    rel = read_json(relation, given("AMBER relation file", "eval.amber.relation"), Each(TEXTS))
    for i, a in enumerate(ann):
        refuse(annotations, fault(a, GENERATIVE if a["type"] == "generative" else DISCRIMINATIVE, f"item {i + 1}"),
               ann_source)
    for r in q:
        if not 1 <= r["id"] <= len(ann):
            raise SenaError(f"{queries}: query id {r['id']!r} has no annotation in {annotations}")
        a = ann[r["id"] - 1]
        if a["type"] == "generative":
            missing = [o for o in [*a["truth"], *a.get("hallu", [])] if o not in rel]
            if missing:
                raise SenaError(f"{annotations}: object {missing[0]!r} of entry {r['id']} is not in {relation}")
    safe = Path(safe_words)
    if not safe.exists():
        raise SenaError(f"{safe}: AMBER safe-word list not found; fix eval.amber.safe_words")
    # As AMBER reads it: each line up to its newline, nothing stripped.
    text = bounded.read_text(safe, fix="fix eval.amber.safe_words")  # regular, within limits.max_file_bytes
    words = [line.split("\n")[0] for line in text.splitlines(keepends=True)]
    return AmberData(q, ann, rel, words)


# ---------------------------------------------------------------- scoring

def _new_counters() -> dict[str, float]:
    """AMBER's metrics.txt: every score starts at 0, every denominator at 0.001."""
    c: dict[str, float] = {}
    for name in ("chair", "safe_cover", "hallu_cover"):
        c[f"{name}_score"], c[f"{name}_num"] = 0, 0.001
    c["non_hallu_score"], c["non_hallu_num"] = 0, 0.001
    for p in PREFIXES:
        for name in ("qa_correct", "qa_no", "qa_ans_no"):
            c[f"{p}{name}_score"], c[f"{p}{name}_num"] = 0, 0.001
    return c


def _entries(objects: Sequence[str], association: dict[str, list[str]]) -> tuple[list[str], list[int]]:
    """Every object's associated words, then the object names, each with the object it stands for."""
    words, owner = [], []
    for i, obj in enumerate(objects):
        words += association[obj]
        owner += [i] * len(association[obj])
    return words + list(objects), owner + list(range(len(objects)))


def _generative(c: dict, nouns: Sequence[str], ann: dict, data: AmberData, vocabulary: set[str],
                similar: Similar) -> None:
    candidates = [n for n in nouns if n in vocabulary]
    truth, hallu = ann["truth"], ann.get("hallu", [])
    safe_words, safe_owner = _entries(truth, data.association)
    ha_words, ha_owner = _entries(hallu, data.association)
    covered: set[int] = set()
    marked: set[int] = set()
    hallucinated = 0
    for noun in candidates:
        if noun in data.safe_words:
            continue
        if noun in safe_words:
            covered.add(safe_owner[safe_words.index(noun)])
            continue
        if noun in ha_words:
            marked.add(ha_owner[ha_words.index(noun)])
        hit = next((j for j, w in enumerate(ha_words) if similar(noun, w)), None)
        if hit is not None:
            marked.add(ha_owner[hit])
        hit = next((j for j, w in enumerate(safe_words) if similar(noun, w)), None)
        if hit is not None:
            covered.add(safe_owner[hit])
            continue
        hallucinated += 1
    c["chair_score"] += hallucinated
    c["chair_num"] += len(candidates)
    c["safe_cover_score"] += len(covered)
    c["safe_cover_num"] += len(truth)
    c["hallu_cover_score"] += len(marked)
    c["hallu_cover_num"] += len(hallu)
    if hallucinated == 0:
        c["non_hallu_score"] += 1
    c["non_hallu_num"] += 1


def _discriminative(c: dict, response: str, ann: dict) -> None:
    p = TYPE_PREFIX.get(ann["type"], OTHER_PREFIX) + "_"
    truth = ann["truth"]
    for q in ("", p):
        c[f"{q}qa_correct_num"] += 1
    if truth == "yes":
        if response == "Yes":
            for q in ("", p):
                c[f"{q}qa_correct_score"] += 1
    else:
        for q in ("", p):
            c[f"{q}qa_no_num"] += 1
        if response == "No":
            for q in ("", p):
                c[f"{q}qa_correct_score"] += 1
                c[f"{q}qa_no_score"] += 1
    if response == "No":
        for q in ("", p):
            c[f"{q}qa_ans_no_num"] += 1
        if truth == "no":
            for q in ("", p):
                c[f"{q}qa_ans_no_score"] += 1


def _pct(score: float, num: float) -> float:
    return round(score / num * 100, 1)


def _block(c: dict, prefixes: Sequence[str], f1_eps: float = 0.0001) -> dict[str, float]:
    def total(name):
        value = c[f"{prefixes[0]}{name}"]
        for p in prefixes[1:]:
            value = value + c[f"{p}{name}"]
        return value

    accuracy = _pct(total("qa_correct_score"), total("qa_correct_num"))
    precision = _pct(total("qa_ans_no_score"), total("qa_ans_no_num"))
    recall = _pct(total("qa_no_score"), total("qa_no_num"))
    f1 = round(2 * (precision / 100) * (recall / 100) / ((precision / 100) + (recall / 100) + f1_eps) * 100, 1)
    return {"accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1}


def score(responses: Sequence[str], nouns: Sequence[Sequence[str] | None], ids: Sequence[int], data: AmberData,
          similar: Similar, yes_no: str = "exact") -> dict:
    """AMBER's metrics for responses to the queries `ids` (in order); `nouns[i]` are the
    extracted nouns of a generative response (None for discriminative ones)."""
    from sena_cli.bench.pope import parse_yes_no

    vocabulary = set(data.association) | {w for ws in data.association.values() for w in ws}
    c = _new_counters()
    types = []
    for response, found, qid in zip(responses, nouns, ids, strict=True):
        ann = data.annotation(qid)
        types.append(ann["type"])
        if ann["type"] == "generative":
            _generative(c, found or [], ann, data, vocabulary, similar)
        else:
            if yes_no == "pope":  # sena's lenient option: POPE's rule, then AMBER's exact words
                response = "Yes" if parse_yes_no(response) == "yes" else "No"
            _discriminative(c, response, ann)
    out: dict = {}
    if "generative" in types:
        out["generative"] = {
            "chair": _pct(c["chair_score"], c["chair_num"]),
            "cover": _pct(c["safe_cover_score"], c["safe_cover_num"]),
            "hal": round(100 - c["non_hallu_score"] / c["non_hallu_num"] * 100, 1),
            "cog": _pct(c["hallu_cover_score"], c["hallu_cover_num"]),
        }
    present = {TYPE_PREFIX.get(t, OTHER_PREFIX) for t in types if t != "generative"}
    if present:
        out["discriminative"] = _block(c, [""])
    if "ha" in present:
        out["existence"] = _block(c, ["ha_"], f1_eps=0.001)
    if present & {"as", "an", "aa"}:
        out["attribute"] = _block(c, ["as_", "an_", "aa_"])
        for name, p in (("state", "as_"), ("number", "an_"), ("action", "aa_")):
            out[name] = _block(c, [p])
    if "asso" in present:
        out["relation"] = _block(c, ["asso_"])
    return out


# ---------------------------------------------------------------- language data (optional)

def nltk_nouns() -> tuple[Callable[[str], list[str]], str | None]:
    """AMBER's noun extractor (NLTK tokens tagged NN*, lemmatised with WordNet), and None;
    without NLTK or its data: sena's stand-in and a note saying how it differs."""
    try:
        import nltk
        from nltk.stem import WordNetLemmatizer

        lemmatizer = WordNetLemmatizer()
        tagged = nltk.pos_tag(nltk.word_tokenize("A dog sits."))
        lemmatizer.lemmatize("dogs")
    except (ImportError, LookupError, OSError):
        note = (f"NLTK or its data missing ({NLTK_INSTALL}): nouns are every lower-case word with a plural 's' "
                "removed, not NLTK's tagged nouns, so chair, cover, hal and cog are not AMBER's")
        return _fallback_nouns, note
    del tagged

    def extract(text: str) -> list[str]:
        return [lemmatizer.lemmatize(w) for w, pos in nltk.pos_tag(nltk.word_tokenize(text)) if pos.startswith("NN")]

    return extract, None


def _fallback_nouns(text: str) -> list[str]:
    words = re.findall(r"[a-z]+", text.lower())
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


def spacy_similarity(threshold: float) -> tuple[Similar, str | None]:
    """AMBER's near-synonym test (spaCy en_core_web_lg similarity above the threshold), and None;
    without spaCy or the model: exact matching and a note saying so."""
    exact = operator.eq  # spaCy's similarity of a word with itself is 1, of other words less
    if threshold <= 0:
        return exact, "eval.amber.similarity is 0: near-synonyms are not matched (exact matching)"
    try:
        import spacy

        nlp = spacy.load("en_core_web_lg")
    except (ImportError, OSError):
        return exact, f"spaCy's en_core_web_lg missing ({SPACY_INSTALL}): exact matching instead of similarity"
    cache: dict[tuple[str, str], bool] = {}

    def similar(a: str, b: str) -> bool:
        if (a, b) not in cache:
            cache[(a, b)] = nlp(a).similarity(nlp(b)) > threshold
        return cache[(a, b)]

    return similar, None


# ---------------------------------------------------------------- the benchmark: section, runner, record

@dataclass
class AmberFiles:
    queries: str = param("", "query_all.json (or query_generative.json, query_discriminative.json)")
    annotations: str = param("", "annotations.json")
    relation: str = param("", "relation.json")
    safe_words: str = param("", "safe_words.txt")
    image_root: str = param("", "AMBER's images")
    similarity: float = param(0.8, "spaCy similarity above which two words are near-synonyms (AMBER: 0.8); "
                              "0 = exact matching only", 0.0, 1.0)
    yes_no_parsing: str = param("exact", "discriminative answers: 'exact' = AMBER's rule (only Yes and No "
                                "count); 'pope' = POPE's parsing first (not AMBER's numbers)",
                                choices=list(YES_NO_PARSINGS))
    language_standins: bool = param(False, "without NLTK/spaCy or their data, score the generative queries with "
                                    "sena's stand-ins (a lower-case word split, exact matching; flagged under "
                                    "amber.fallback; far from AMBER's numbers); false = refused in one line saying "
                                    "how to install them (AMBER: NLTK and spaCy)")


def data_of(ctx) -> AmberData:
    a = ctx.settings("amber", AmberFiles)
    return ctx.once(("amber", "data"), lambda: read_amber(
        need(a.queries, "eval.amber.queries"), need(a.annotations, "eval.amber.annotations"),
        need(a.relation, "eval.amber.relation"), need(a.safe_words, "eval.amber.safe_words")))


def language(ctx) -> tuple[Callable[[str], list[str]], Similar, dict[str, str]]:
    """(noun extractor, similarity, notes of the stand-ins used), made once an evaluation. Refused in one
    line, when a generative query is to be scored, if NLTK or spaCy is missing and
    eval.amber.language_standins is not set."""
    def make():
        a = ctx.settings("amber", AmberFiles)
        nouns, noun_note = nltk_nouns()
        similar, similar_note = spacy_similarity(a.similarity)
        notes = {key: note for key, note in (("generative_nouns", noun_note), ("generative_similarity", similar_note))
                 if note}
        missing = ([f"NLTK and its data ({how_to_get('nltk', NLTK_DATA)})"] if noun_note else []) + (
            [f"spaCy's en_core_web_lg ({how_to_get('spacy', SPACY_DATA)})"] if similar_note and a.similarity > 0
            else [])
        generative = any(data_of(ctx).annotation(q["id"])["type"] == "generative" for q in data_of(ctx).queries)
        if missing and generative and not a.language_standins:
            raise SenaError(f"eval.amber: AMBER's generative scores need {' and '.join(missing)}, missing here; "
                            "install them, or set eval.amber.language_standins: true to score with sena's "
                            "stand-ins (not AMBER's numbers)")
        return nouns, similar, notes

    return ctx.once(("amber", "language"), make)


def run(ctx, vlm: VLM, tick: Tick, nouns: Callable[[str], list[str]] | None = None,
        similar: Similar | None = None):
    params = ctx.params
    a = ctx.settings("amber", AmberFiles)
    data = data_of(ctx)
    root = need(a.image_root, "eval.amber.image_root")
    notes = {}
    if nouns is None or similar is None:
        found_nouns, found_similar, found_notes = language(ctx)
        if nouns is None:
            nouns = found_nouns
            notes.update({k: v for k, v in found_notes.items() if k == "generative_nouns"})
        if similar is None:
            similar = found_similar
            notes.update({k: v for k, v in found_notes.items() if k == "generative_similarity"})
    answers = generate_windows(vlm, root, [q["image"] for q in data.queries], [q["query"] for q in data.queries],
                               "eval.amber.image_root", params, tick)
    generative = [data.annotation(q["id"])["type"] == "generative" for q in data.queries]
    found = [nouns(ans) if gen else None for ans, gen in zip(answers, generative)]
    metrics = score(answers, found, [q["id"] for q in data.queries], data, similar, a.yes_no_parsing)
    if notes and any(generative):
        metrics["fallback"] = notes
    records = [{"benchmark": "amber", **q, "answer": ans} for q, ans in zip(data.queries, answers)]
    return metrics, records


def count(ctx) -> int:
    language(ctx)  # before the model loads: NLTK and spaCy there, or the stand-ins asked for
    return len(data_of(ctx).queries)


BLOCKS = ("discriminative", "existence", "attribute", "state", "number", "action", "relation")
BENCHMARK = Benchmark(
    "amber", "amber", ("eval.amber.queries", "eval.amber.annotations", "eval.amber.relation", "eval.amber.safe_words",
                       "eval.amber.image_root"),
    "sena_cli.bench.amber:run", "sena_cli.bench.amber:count",
    ("generative.<chair|cover|hal|cog>", *(f"{b}.<accuracy|precision|recall|f1>" for b in BLOCKS), "fallback.<part>"),
    (Chart("AMBER generative (%)", (("CHAIR", "generative.chair"), ("Cover", "generative.cover"),
                                    ("Hal", "generative.hal"), ("Cog", "generative.cog"))),
     Chart("AMBER discriminative (%)", (("accuracy", "discriminative.accuracy"), ("F1", "discriminative.f1")))),
    order=12, section=AmberFiles,
    source="github.com/junyangwang0410/AMBER (data/query/query_all.json, data/annotations.json, data/relation.json, "
    "data/safe_words.txt; the images from the download link in its README)")
