"""Throughput of `sena qa` (step 3): today's generation path against the new one, same model, same images.

Paths (each runs qa_chunk, qa's own step 3, greedy, on the same images and prompts):
- one at a time: batch 1 (the reference's way), today's path;
- today: batched, mixed-length batches, each prompt encodes its image, dynamic KV cache;
- new: batches by length (qa.length_batches), each image's vision features once (qa.reuse_image_features),
  the key/value cache of each image's prompt prefix once (qa.reuse_prefix_cache), qa.decode auto
  (compiled on a GPU, dynamic on a CPU);
- new, no prefix cache: the same with qa.reuse_prefix_cache false (every prompt prefills its image);
- new, static: the new path with qa.decode static (the preallocated KV cache, eager);
- new, compiled (--compiled): qa.decode compiled, its first compilation included.
Steps/s counts one decode step per token column generated (a batch runs until its last answer ends).
For each: images/s, decode steps/s (forward passes of the language model, prefill included), new
tokens/s (tokens of the decoded answers), tokens prefilled (prompt tokens run through the language model:
the prefix cache cuts the image's), images through the vision encoder, and whether the records
equal today's. Models: the embedded θ0 (the folder --model, else an untrained micro θ0 built here) and
the real-shaped LLaVA-1.5 fixture (sena_fixtures/families.py: 336-px CLIP geometry, 576 image tokens).
Random or untrained weights answer at random lengths, so batches by length show little here: their
gain needs long descriptions next to short answers (docs/performance.md).

    python benchmarks/qa_throughput.py [--images 16] [--batch-size 8] [--families embedded,llava-1.5]
    python benchmarks/qa_throughput.py --tiny      # 4 images, batch 4, both models: a check that it runs
Ends with `RESULT qa_new_path_speedup <new / today images/s, last family>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from sena_cli import layout
from sena_cli.config import params_from_dict
from sena_cli.method.noise import corrupt_image, corrupt_pictures, scheduler
from sena_cli.stages.qa import qa_chunk
from sena_cli.vlm import VLM


class InMemoryNoised:
    """What qa_chunk asks of `sena noise`'s record: each image's corrupted pictures (`transform`, for
    noise.space pixel_values) or its corrupted image (`image`, for noise.space image), made on the fly with
    the seeds `sena noise` uses; qa's own check against the recorded sha256 is what this skips."""

    def __init__(self, params):
        self.params = params.noise
        self.sched = scheduler(params.noise)

    def transform(self, pictures, keys):
        return [corrupt_pictures(pics, self.params, key, self.sched) for pics, key in zip(pictures, keys, strict=True)]

    def image(self, image_id, clean):
        return corrupt_image(clean, self.params, image_id, self.sched)


class Counters:
    """Decode steps (one per token column a generate() call produces: the forward passes, prefill
    included), images through the vision encoder, tokens of the decoded answers. Counted outside the
    model's forward, so a compiled decode step sees no Python counter (it would recompile per value)."""

    def __init__(self, vlm: VLM):
        self.steps = self.encoded = self.tokens = self.prefilled = 0
        model, base = vlm.model, vlm.model.base_model
        model_generate, encode, generate = model.generate, base.get_image_features, vlm.generate
        prefix_layers = vlm._prefix_layers
        tok = vlm.processor.tokenizer

        @functools.wraps(model_generate)
        def counted_model_generate(*a, **k):
            cached = k["cache"].get_seq_length() if k.get("cache") is not None else 0
            mask = k.get("attention_mask")
            self.prefilled += int(mask[:, cached:].sum()) if mask is not None else k["input_ids"].numel()
            out = model_generate(*a, **k)
            self.steps += out.shape[1] - k["input_ids"].shape[1]
            return out

        @functools.wraps(encode)  # generate reads the encoder's signature
        def counted_encode(*a, **k):
            out = encode(*a, **k)
            self.encoded += len(out.pooler_output)
            return out

        def counted_generate(*a, **k):
            answers = generate(*a, **k)
            self.tokens += sum(len(tok(t, add_special_tokens=False).input_ids) for t in answers)
            return answers

        def counted_prefix_layers(prefix_ids, pieces, encoded, keys, prefixes, *rest):
            missing = {key: len(ids) for key, ids in zip(keys, prefix_ids, strict=True) if key not in prefixes}
            self.prefilled += sum(missing.values())
            return prefix_layers(prefix_ids, pieces, encoded, keys, prefixes, *rest)

        model.generate, base.get_image_features, vlm.generate = counted_model_generate, counted_encode, counted_generate
        vlm._prefix_layers = counted_prefix_layers

    def reset(self) -> None:
        self.steps = self.encoded = self.tokens = self.prefilled = 0


PATHS = {"today": dict(length_batches=False, reuse_image_features=False, reuse_prefix_cache=False, decode="dynamic"),
         "new": dict(length_batches=True, reuse_image_features=True, reuse_prefix_cache=True, decode="auto"),
         "new, no prefix cache": dict(length_batches=True, reuse_image_features=True, reuse_prefix_cache=False,
                                      decode="auto"),
         "new, static": dict(length_batches=True, reuse_image_features=True, reuse_prefix_cache=True, decode="static")}


def run(vlm, params, items, images, noised, batch_size: int, counters: Counters, **qa) -> tuple[dict, list]:
    p = dataclasses.replace(params, qa=dataclasses.replace(params.qa, batch_size=batch_size, **qa))
    counters.reset()
    started = time.perf_counter()
    records = []
    for s in range(0, len(items), batch_size):
        recs, _ = qa_chunk(vlm, p, items[s : s + batch_size], images[s : s + batch_size], noised)
        records += recs
    seconds = time.perf_counter() - started
    return {"images/s": len(items) / seconds, "steps/s": counters.steps / seconds,
            "tokens/s": counters.tokens / seconds, "encoded": counters.encoded, "prefilled": counters.prefilled,
            "seconds": seconds}, records


def micro_theta0(folder: Path, params) -> Path:
    """An untrained micro θ0 (the world's builders at sena_fixtures' micro sizes)."""
    from sena_cli.world import tiny
    from sena_fixtures.families import corpus

    tok = tiny.build_tokenizer(corpus())
    processor = tiny.build_processor(tok, params.world, params.base)
    tiny.build_model(tok, params.world, params.base).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def random_images(n: int, size: tuple[int, int], seed: int = 0) -> list[Image.Image]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(layout.model_dir(0)), help="the embedded θ0 (else a micro one)")
    ap.add_argument("--families", default="embedded,llava-1.5")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32, help="qa.max_new_tokens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compiled", action="store_true", help="also the new path with qa.decode compiled (on a "
                    "CPU the compilation takes minutes; its time is part of the row)")
    ap.add_argument("--tiny", action="store_true", help="4 images, batch 4, 8 new tokens")
    args = ap.parse_args()
    if args.tiny:
        args.images, args.batch_size, args.new_tokens = 4, 4, 8
    torch.set_num_threads(args.threads)
    from sena_fixtures.families import FAMILIES
    from sena_fixtures.micro import micro_dict

    # An untrained θ0 asks no question: qa's fixed questions stand in, so every image reaches every prompt.
    params = params_from_dict({**micro_dict(), "qa": {"max_new_tokens": args.new_tokens, "self_questioning": False}})
    noised = InMemoryNoised(params)
    speedup = float("nan")
    print(f"{args.images} images, batch {args.batch_size}, qa.max_new_tokens {args.new_tokens}, {args.threads} "
          f"threads, device {'cuda' if torch.cuda.is_available() else 'cpu'}; a shared machine's timings are noisy")
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families.split(","):
            if family == "embedded":
                model = Path(args.model)
                source = str(model) if model.is_dir() else "an untrained micro θ0 (no --model folder)"
                if not model.is_dir():
                    model = micro_theta0(Path(tmp) / "embedded", params)
                images = random_images(args.images, (params.world.image_size,) * 2)
            else:
                model, source = FAMILIES[family](Path(tmp) / family), f"sena_fixtures {family}, random weights"
                images = random_images(args.images, (640, 480))
            vlm = VLM.load(model)
            counters = Counters(vlm)
            items = [{"id": f"{i}.png", "path": f"{i}.png"} for i in range(args.images)]
            run(vlm, params, items[:2], images[:2], noised, 2, counters)  # warm-up
            print(f"\n{family}: {source}")
            results = {"one at a time": run(vlm, params, items, images, noised, 1, counters, **PATHS["today"])}
            paths = {**PATHS, **({"new, compiled": {**PATHS["new"], "decode": "compiled"}} if args.compiled else {})}
            for name, qa in paths.items():
                results[name] = run(vlm, params, items, images, noised, args.batch_size, counters, **qa)
            today = results["today"][1]
            for name, (m, records) in results.items():
                same = sum(a == b for a, b in zip(records, today)) if len(records) == len(today) else 0
                print(f"  {name:<20} {m['images/s']:8.2f} images/s {m['steps/s']:9.1f} steps/s "
                      f"{m['tokens/s']:9.1f} tokens/s {m['prefilled']:7d} tokens prefilled  "
                      f"{m['encoded']:4d} images encoded  "
                      f"records = today's: {same}/{len(today)}  ({m['seconds']:.1f} s)")
            speedup = results["new"][0]["images/s"] / results["today"][0]["images/s"]
            print(f"  new / today: {speedup:.2f}x images/s")
    print(f"RESULT qa_new_path_speedup {speedup:.2f}")


if __name__ == "__main__":
    main()
