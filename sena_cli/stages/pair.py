"""Stage `pair`: preference pairs from the qa records, filtered, with reference log-probs (step 4).

chosen = the enhanced clean-image answer, rejected = the corrupted-image answer to the same
prompt. Every filter of the method applies in a fixed order (method/filters.py); each
dropped pair is counted under the first filter it fails. The log-probabilities of chosen
and rejected under θ(K-1) (sum over answer tokens and the token mean) are computed once,
in batches on the clean image, with the tokens and numeric regime of `train`'s step 0
(vlm/preference.py, vlm/model.py), and stored with the pair, so `train` holds no second model.
Every pair's length is checked against train.max_length before any forward pass.
Finished batches of log-probs are journaled, so a killed run resumes.
Output: data/iterK/pairs/pairs.jsonl (loadable with `datasets.load_dataset("json", ...)`)
and stats.json with the per-filter counts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from sena_cli import layout
from sena_cli.artifacts import (
    Journal,
    atomic_dir,
    file_identity,
    fingerprint,
    read_jsonl,
    read_manifest,
    sampled_image_loader,
    write_json,
    write_jsonl,
)
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.method.filters import filter_reasons, first_failed_filter
from sena_cli.progress import Progress, no_progress
from sena_cli.tracked import tracked_params

# What the stored reference log-probs were computed under (tokenization, precision); `train` checks it.
REFERENCE_FILE = "reference.json"


def read_qa(k: int, root: Path) -> list[dict]:
    path = layout.iter_dir(k, root) / "qa" / "records.jsonl"
    if not path.is_file():
        raise SenaError(f"{path}: missing; run `sena qa --iter {k}` first")
    try:
        return read_jsonl(path)
    except json.JSONDecodeError as exc:
        raise SenaError(f"{path}: malformed JSON at line {exc.lineno}; rerun `sena qa --iter {k}`") from None


def filter_pairs(params: Params, records: list[dict]) -> tuple[list[dict], dict[str, int]]:
    filters = filter_reasons(params.pair.max_token_repeats, params.pair.max_non_alnum_ratio,
                             params.qa.drop_question_words)
    counts = {name: 0 for name, _ in filters}
    kept = []
    for r in records:
        chosen, rejected = r["enhanced_answer"], r["corrupted_answer"]
        reason = first_failed_filter(r["prompt"], chosen, rejected, filters)
        if reason:
            counts[reason] += 1
            continue
        kept.append({"id": r["id"], "image": r["image"], "type": r["type"], "prompt": r["prompt"],
                     "chosen": chosen, "rejected": rejected})
    return kept, counts


def run_pair(params: Params, k: int, root: Path = Path("."), progress: Progress = no_progress) -> dict:
    from sena_cli.vlm import VLM, training_precision
    from sena_cli.vlm.preference import PreferenceCollator, tokenization_id

    if k < 1 or k > params.loop.iterations:
        raise SenaError(f"--iter {k}: pair runs for iterations 1..loop.iterations ({params.loop.iterations})")
    records = read_qa(k, root)
    started = time.perf_counter()
    pairs, drops = filter_pairs(params, records)
    sha256 = {r.get("path"): r.get("sha256") for r in read_manifest(k, root)}
    for p in pairs:  # so `train` can check the image it reads, without the manifest
        p["image_sha256"] = sha256.get(p["image"])
    bs = params.pair.batch_size
    batches_run, reference = 0, {}
    if pairs:
        # θ(K-1) as `train` holds it at step 0: fp32 weights, autocast to train.precision (vlm/model.py).
        vlm = VLM.load(layout.model_dir(k - 1, root), trust_remote_code=params.model.trust_remote_code,
                       dtype="float32", processor_settings=params.model.processor)
        precision = training_precision(params.train.precision, vlm.device)
        reference = {"tokenization": tokenization_id(vlm.chat, params.train.max_length, precision),
                     "precision": precision}
        load = sampled_image_loader(pairs, root, k)
        _refuse_too_long(PreferenceCollator(vlm.processor, vlm.chat, load), pairs, bs, params.train.max_length,
                         progress(f"token lengths, iteration {k}", len(pairs)))
        # A journal of other pairs, another model or tokenization is stale: the fingerprint tells.
        run_id = fingerprint(pairs, tracked_params("pair", k, params, root), reference,
                             file_identity(layout.model_dir(k - 1, root)))
        journal = Journal(layout.iter_dir(k, root) / "pairs.partial.jsonl", run_id)
        done = journal.done()
        tick = progress(f"reference log-probs, iteration {k}", len(pairs))
        for b, start in enumerate(range(0, len(pairs), bs)):
            chunk = pairs[start : start + bs]
            if b not in done:
                done[b] = vlm.preference_logps(chunk, load, max_length=params.train.max_length, precision=precision)
                journal.add(b, done[b])
                batches_run += 1
            for p, (c, c_mean, r, r_mean) in zip(chunk, done[b]):
                p.update(ref_chosen_logp=c, ref_chosen_logp_mean=c_mean, ref_rejected_logp=r,
                         ref_rejected_logp_mean=r_mean)
            tick(len(chunk))
    stats = {"records": len(records), "pairs": len(pairs),
             "pairs_des": sum(p["type"] == "des" for p in pairs),
             "pairs_gen": sum(p["type"] == "gen" for p in pairs),
             "dropped": drops}
    with atomic_dir(layout.iter_dir(k, root) / "pairs") as tmp:
        write_jsonl(tmp / "pairs.jsonl", pairs)
        write_json(tmp / "stats.json", stats)
        write_json(tmp / REFERENCE_FILE, reference)
    (layout.iter_dir(k, root) / "pairs.partial.jsonl").unlink(missing_ok=True)
    return {**stats, "batches run now": batches_run, "output": str(layout.iter_dir(k, root) / "pairs"),
            "seconds": time.perf_counter() - started}


def _refuse_too_long(collator, pairs: list[dict], batch_size: int, max_length: int, tick) -> None:
    """Every pair within train.max_length, checked before any forward pass (one line naming the fix)."""
    from sena_cli.vlm.preference import TOO_LONG

    lengths = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        lengths += collator.lengths(chunk)
        tick(len(chunk))
    over = [(n, image) for n, image in lengths if n > max_length]
    if over:
        longest, image = max(over)
        raise SenaError(TOO_LONG.format(n=len(over), limit=max_length, longest=longest, image=image))
