"""Stage `pair`: preference pairs from the qa records, filtered, with reference log-probs (step 4).

chosen = the enhanced clean-image answer, rejected = the corrupted-image answer to the same
prompt. Every filter of the method applies in a fixed order (method/filters.py); each
dropped pair is counted under the first filter it fails. The log-probabilities of chosen
and rejected under θ(K-1) (sum over answer tokens and the token mean) are computed once,
in batches on the clean image, with the tokens and numeric regime of `train`'s step 0
(vlm/preference.py, vlm/model.py), and stored with the pair, so `train` holds no second model.
Every pair's length is checked against train.max_length before any forward pass.
Finished batches of log-probs are journaled (data/iterK/pairs.partial/), so a killed run
resumes. Under `torchrun`/`accelerate launch` the unfinished batches are dealt out between
processes, each on its own device, and rank 0 merges them in batch order (sena_cli/ranks.py);
each rank checks the lengths of its share, and all agree before any of them runs a forward.
Output: data/iterK/pairs/pairs.jsonl (loadable with `datasets.load_dataset("json", ...)`)
and stats.json with the per-filter counts.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from sena_cli import layout
from sena_cli.artifacts import file_identity, fingerprint, sampled_image_loader
from sena_cli.config import Params
from sena_cli.errors import SenaError
from sena_cli.frame import (
    PAIR,
    PAIR_STATS,
    QA_RECORD,
    REFERENCE,
    check_iteration,
    made_by,
    publish,
    read_manifest,
    read_records,
    summary,
)
from sena_cli.method.filters import filter_reasons, first_failed_filter
from sena_cli.progress import Progress, no_progress
from sena_cli.ranks import Ranks, Shards, chunked
from sena_cli.tracked import tracked_params


def filter_pairs(params: Params, records: list[dict]) -> tuple[list[dict], dict[str, int]]:
    pp = params.pair
    filters = filter_reasons(pp.max_token_repeats, pp.max_non_alnum_ratio, params.qa.drop_question_words,
                             degenerate_tokens=pp.degenerate_tokens, rejected_in_chosen_case=pp.rejected_in_chosen_case,
                             strip_answers=pp.strip_answers, alnum=pp.alnum)
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

    check_iteration(k, "pair", params.loop.iterations)
    started = time.perf_counter()
    records = read_records(layout.qa_records_file(k, root), made_by("qa", k), QA_RECORD)
    sha256 = {r["path"]: r["sha256"] for r in read_manifest(k, root)}
    _refuse_unsampled(records, sha256, k, root)
    pairs, drops = filter_pairs(params, records)
    for p in pairs:  # so `train` can check the image it reads, without the manifest
        p["image_sha256"] = sha256[p["image"]]
    stats = {"records": len(records), "pairs": len(pairs),
             "pairs_des": sum(p["type"] == "des" for p in pairs),
             "pairs_gen": sum(p["type"] == "gen" for p in pairs),
             "dropped": drops}
    ranks = Ranks.start(layout.pairs_work_dir(k, root))  # before any work: the processes must share the project folder
    bs = params.pair.batch_size
    shards, reference = None, {}
    if pairs:
        # θ(K-1) as `train` holds it at step 0: fp32 weights, autocast to train.precision (vlm/model.py).
        vlm = VLM.from_params(params.model, layout.model_dir(k - 1, root), dtype="float32", device=ranks.device)
        precision = training_precision(params.train.precision, vlm.device)
        reference = {"tokenization": tokenization_id(vlm.chat, params.train.max_length, precision),
                     "precision": precision}
        load = sampled_image_loader(pairs, root, k)
        share = chunked(pairs, bs)[ranks.rank :: ranks.world]
        _refuse_too_long(PreferenceCollator(vlm.processor, vlm.chat, load), share, params.train.max_length,
                         progress(f"token lengths, iteration {k}", sum(map(len, share))), ranks)
        # A journal of other pairs, another model or tokenization is stale: the fingerprint tells.
        run_id = fingerprint(pairs, tracked_params("pair", k, params, root), reference,
                             file_identity(layout.model_dir(k - 1, root)))
        shards = Shards(ranks, run_id)

        def batch_logps(batch: list[dict]) -> list[tuple]:
            logps = vlm.preference_logps(batch, load, max_length=params.train.max_length, precision=precision)
            _refuse_non_finite(logps, batch, k, root)  # before it is journaled
            return logps

        logps = shards.run(pairs, bs, batch_logps, tick=progress(f"reference log-probs, iteration {k}", len(pairs)))
        if ranks.is_main:  # rank 0 alone gathers the batches and publishes
            for batch, values in zip(chunked(pairs, bs), logps, strict=True):
                for p, (c, c_mean, r, r_mean) in zip(batch, values, strict=True):
                    p.update(ref_chosen_logp=c, ref_chosen_logp_mean=c_mean, ref_rejected_logp=r,
                             ref_rejected_logp_mean=r_mean)
    batches_run = shards.run_now if shards else 0

    def write() -> dict:
        with publish(layout.pairs_dir(k, root)) as out:
            out.records(layout.pairs_file(k, root), pairs, PAIR)
            out.json(layout.pairs_stats_file(k, root), stats, PAIR_STATS)
            out.json(layout.reference_file(k, root), reference, REFERENCE)
        return summary({**stats, "batches run now": batches_run}, layout.pairs_dir(k, root), started)

    return ranks.publish(write) or {**stats, "rank": ranks.rank, "batches run now": batches_run}


def _refuse_non_finite(logps: list[tuple], batch: list[dict], k: int, root: Path) -> None:
    """Reference log-probs must be numbers before they are journaled: a NaN one would train on garbage."""
    for pair, values in zip(batch, logps, strict=True):
        if not all(math.isfinite(v) for v in values):
            raise SenaError(f"{layout.model_dir(k - 1, root)}: θ{k - 1} gives log-probs that are not finite "
                            f"({', '.join(f'{v:g}' for v in values)}) for the pair of '{pair['id']}'; check its "
                            f"weights, then rerun `sena pair --iter {k}`")


def _refuse_unsampled(records: list[dict], sha256: dict[str, str], k: int, root: Path) -> None:
    """Every record's image must be one the iteration drew: its pair carries the manifest's sha256."""
    for n, r in enumerate(records, 1):
        if r["image"] not in sha256:
            raise SenaError(f"{layout.qa_records_file(k, root)}: record {n}: image '{r['image']}' is not in "
                            f"{layout.manifest_file(k, root)}; rerun `sena qa --iter {k}`")


def _refuse_too_long(collator, batches: list[list[dict]], max_length: int, tick, ranks: Ranks) -> None:
    """Every pair within train.max_length, checked before any forward pass (one line naming the fix).

    Each rank measures its share of the batches; all agree before any of them runs the model."""
    from sena_cli.vlm.preference import TOO_LONG

    over = []
    for chunk in batches:
        over += [(n, image) for n, image in collator.lengths(chunk) if n > max_length]
        tick(len(chunk))
    over = [o for share in ranks.gather(over) for o in share]
    if over:
        longest, image = max(over)
        raise SenaError(TOO_LONG.format(n=len(over), limit=max_length, longest=longest, image=image))
