"""Stage `qa`: self-questioning, answers on clean and corrupted images, self-enhancement (step 3).

Per sampled image, with θ(K-1):
  1. ask for one question about the image; ask again (with the image, or text-only when
     `qa.check_with_image` is false, as the reference code does) to check it and rewrite it
     if the image cannot answer it; every '?' sentence of the check's output without a
     dropped word is a question (an image without one is dropped and counted);
  2. a description instruction drawn per question from `describe_instructions`: the description
     (type `des`, "one short sentence") and the short answer to the question (type `gen`),
     on the clean image and on its corrupted copy (recomputed from what `sena noise` recorded,
     checked bit for bit);
  3. every clean answer is improved using the description ("Improved Answer: ...",
     the yes/no variant when the description is a bare yes/no); without the prefix the
     original answer is kept.
Work goes in chunks of `qa.batch_size` images in manifest order; each finished chunk is
flushed to data/iterK/qa.partial/, so a killed run resumes without redoing it. Under
`torchrun`/`accelerate launch` the unfinished chunks are dealt out between processes and
rank 0 merges (sena_cli/ranks.py: a shared project folder, any process count on resume).
The final records appear atomically in data/iterK/qa/.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from sena_cli import layout
from sena_cli.artifacts import file_identity, fingerprint, open_manifest_image
from sena_cli.config import Params
from sena_cli.frame import COUNTS, QA_RECORD, check_iteration, publish, read_manifest, summary
from sena_cli.method import prompts as P
from sena_cli.method.noise import Corruption
from sena_cli.method.questions import extract_questions, kept_questions
from sena_cli.progress import Progress, no_progress
from sena_cli.ranks import Ranks, Shards
from sena_cli.tracked import tracked_params
from sena_cli.vlm import VLM, ImageFeatures, PrefixCache


def describe_instruction(params: Params, image_id: str, question_index: int) -> str:
    """The description instruction paired with one question: seeded by (qa.seed, id, index), so resumes agree."""
    rng = random.Random(f"{params.qa.seed}:{image_id}:{question_index}")
    return rng.choice(params.qa.prompts.describe_instructions)


def fixed_question(params: Params, image_id: str) -> str:
    """Ablation without self-questioning: one of qa.fixed_questions, seeded by (qa.seed, id)."""
    return random.Random(f"{params.qa.seed}:fixed:{image_id}").choice(params.qa.fixed_questions)


def qa_chunk(vlm: VLM, params: Params, items: list[dict], images: list, corruption: Corruption
             ) -> tuple[list, dict]:
    """All of step 3 for a chunk of images; returns (records, drop counts)."""
    qp, n_new, bs = params.qa.prompts, params.qa.max_new_tokens, params.qa.batch_size
    # Each image's features (clean and corrupted: two entries) once, for all of its prompts.
    features = ImageFeatures(2 * len(items)) if params.qa.reuse_image_features else None
    # And the key/value cache of each image's prompt prefix: its prompts prefill their own text only.
    prefixes = PrefixCache(2 * len(items)) if params.qa.reuse_prefix_cache else None

    def gen(imgs, texts, transform=None, keys=None, long=0):
        """Greedy answers; the first `long` texts are long requests (descriptions), the rest short."""
        lengths = ["long"] * long + ["short"] * (len(texts) - long) if params.qa.length_batches else None
        return vlm.generate(imgs, texts, max_new_tokens=n_new, batch_size=bs, pixel_transform=transform, keys=keys,
                            lengths=lengths, features=features if imgs is not None else None,
                            decode=params.qa.decode, prefixes=prefixes if imgs is not None else None)

    drops = {"no_question": 0, "dropped_word": 0}
    if params.qa.self_questioning:
        raw = gen(images, [qp.question_generate] * len(items))
        checks = [P.check_prompt(qp, r) for r in raw]
        checked = gen(images if params.qa.check_with_image else None, checks)
    else:  # ablation: a fixed template question per image, no generation and no check
        raw = [fixed_question(params, item["id"]) for item in items]
        checked = list(raw)
    kept = []
    for i, out in enumerate(checked):
        questions = kept_questions(out, params.qa.drop_question_words)
        if not questions:
            drops["dropped_word" if extract_questions(out) else "no_question"] += 1
        kept += [(i, q, qi) for qi, q in enumerate(questions)]
    if not kept:
        return [], drops
    idx = [i for i, _, _ in kept]
    kimgs = [images[i] for i in idx]
    des_prompts = [P.description_prompt(qp, describe_instruction(params, items[i]["id"], qi)) for i, _, qi in kept]
    gen_prompts = [P.short_answer_prompt(qp, q) for _, q, _ in kept]
    prompts = des_prompts + gen_prompts
    n = len(idx)
    clean = gen(kimgs + kimgs, prompts, long=n)
    ids = [items[i]["id"] for i in idx]
    if params.noise.space == "pixel_values":  # the corruption `sena noise` defined, recomputed and checked
        corrupted = gen(kimgs + kimgs, prompts, transform=corruption.transform, keys=ids + ids, long=n)
    else:
        nimgs = [corruption.image(i, im) for i, im in zip(ids, kimgs)]
        corrupted = gen(nimgs + nimgs, prompts, long=n)
    descriptions = clean[:n]
    if params.qa.self_enhancement:
        enhance = [P.enhance_prompt(qp, descriptions[j % n], prompts[j], clean[j]) for j in range(2 * n)]
        improved = gen(kimgs + kimgs, enhance, long=n)
    else:  # ablation: chosen = the clean answer as it came
        improved = [""] * (2 * n)
    records = []
    order = [j for i in range(n) for j in (i, n + i)]  # per question: des, then gen (whatever the batch size)
    for j in order:
        item = items[idx[j % n]]
        answer, was_improved = P.parse_improved(improved[j], clean[j])
        records.append({
            "id": item["id"], "image": item["path"], "type": "des" if j < n else "gen",
            "question": kept[j % n][1], "question_index": kept[j % n][2],
            "raw_question": raw[idx[j % n]], "checked_question": checked[idx[j % n]],
            "prompt": prompts[j], "description": descriptions[j % n],
            "clean_answer": clean[j], "corrupted_answer": corrupted[j],
            "enhance_output": improved[j], "enhanced_answer": answer, "enhanced": was_improved,
        })
    return records, drops


def run_qa(params: Params, k: int, root: Path = Path("."), progress: Progress = no_progress) -> dict:
    check_iteration(k, "qa", params.loop.iterations)
    started = time.perf_counter()
    manifest = read_manifest(k, root)
    corruption = Corruption(params, k, root)
    ranks = Ranks.start(layout.qa_work_dir(k, root))  # before any work: the processes must share the project folder
    vlm = VLM.from_params(params.model, layout.model_dir(k - 1, root), dtype=params.model.dtype, device=ranks.device)
    # The process count is not part of the run: chunks are the same however they are shared out.
    run_id = fingerprint(manifest, file_identity(layout.noised_dir(k, root), "**/*"),
                         tracked_params("qa", k, params, root), file_identity(layout.model_dir(k - 1, root)))
    shards = Shards(ranks, run_id)

    def chunk(items: list[dict]) -> dict:
        images = [open_manifest_image(root, it, k) for it in items]
        records, drops = qa_chunk(vlm, params, items, images, corruption)
        return {"records": records, "drops": drops, "images": len(items)}

    tick = progress(f"qa iteration {k} (images)", len(manifest))
    results = shards.run(manifest, params.qa.batch_size, chunk, tick=tick)  # a kill loses one chunk at most
    published = ranks.publish(lambda: _merge(params, k, root, results, shards.run_now, started))
    return published or {"rank": ranks.rank, "chunks run now": shards.run_now}


def _merge(params: Params, k: int, root: Path, results: list[dict], chunks_run: int, started: float) -> dict:
    records = [r for chunk in results for r in chunk["records"]]
    drops = {"no_question": 0, "dropped_word": 0}
    for chunk in results:
        for key, v in chunk["drops"].items():
            drops[key] += v
    images = sum(chunk["images"] for chunk in results)
    stats = {
        "images": images,
        "images_with_questions": images - sum(drops.values()),
        "questions_kept": sum(r["type"] == "gen" for r in records),
        "dropped_no_question": drops["no_question"],
        "dropped_word": drops["dropped_word"],
        "records": len(records),
        "records_des": sum(r["type"] == "des" for r in records),
        "records_gen": sum(r["type"] == "gen" for r in records),
        "enhanced": sum(r["enhanced"] for r in records),
    }
    with publish(layout.qa_dir(k, root)) as out:
        out.records(layout.qa_records_file(k, root), records, QA_RECORD)
        out.json(layout.qa_stats_file(k, root), stats, COUNTS)
    return summary({**stats, "chunks run now": chunks_run}, layout.qa_dir(k, root), started)
