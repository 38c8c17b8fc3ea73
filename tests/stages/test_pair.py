import json

import datasets
import pytest
import torch
from PIL import Image

from sena_cli.config import params_from_dict
from sena_cli.stages.pair import filter_pairs, run_pair
from sena_cli.vlm import VLM


def _record(i, chosen, rejected, type_="gen", prompt="What color is the circle? Answer with a single word or phrase."):
    return {"id": f"{i}.png", "image": f"data/world/pool/{i:05d}.png", "type": type_, "prompt": prompt,
            "enhanced_answer": chosen, "corrupted_answer": rejected}


def test_filter_counts_each_drop_once(micro_params):
    records = [_record(0, "red", "blue"), _record(1, "red", "red"), _record(2, "Yes", "No"),
               _record(3, "A red circle and a blue square.", "a blue square", "des", "Describe the image."),
               _record(4, "red", "blue", prompt="What is the name of it?")]
    kept, counts = filter_pairs(micro_params, records)
    assert [p["id"] for p in kept] == ["0.png"]
    assert counts == {"question_has_dropped_word": 1, "degenerate": 0, "mostly_symbols": 0, "identical": 1,
                      "bare_yes_no": 1, "rejected_in_chosen": 1}


def test_pairs_carry_reference_logprobs_equal_to_a_direct_computation(micro_project, micro_dict):
    params = params_from_dict({**micro_dict, "pair": {"batch_size": 3}})
    qa_dir = micro_project / "data" / "iter1" / "qa"
    qa_dir.mkdir(parents=True, exist_ok=True)
    records = [_record(i, c, r) for i, (c, r) in enumerate([("red", "blue"), ("green", "yellow"), ("top left", "one"),
                                                             ("circle", "square"), ("two", "three")])]
    records.append(_record(5, "A red circle and a blue square.", "A green cross.", "des",
                           "Describe the image concisely. Answer in one short sentence."))
    (qa_dir / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    info = run_pair(params, 1, root=micro_project)
    assert info["pairs"] == 6 and info["pairs_des"] == 1
    ds = datasets.load_dataset("json", data_files=str(micro_project / "data/iter1/pairs/pairs.jsonl"))["train"]
    assert ds.num_rows == 6 and {"ref_chosen_logp", "ref_rejected_logp_mean", "type", "image"} <= set(ds.column_names)

    vlm = VLM.load(micro_project / "models" / "iter0")
    row = ds[5]
    image = Image.open(micro_project / row["image"]).convert("RGB")
    text = vlm.chat.prompt(row["prompt"])
    full = vlm.processor(text=[text + vlm.chat.completion(row["prompt"], row["chosen"])], images=[image],
                         return_tensors="pt")
    prompt = vlm.processor(text=[text], images=[image], return_tensors="pt")
    n_prompt = prompt["input_ids"].shape[1]
    with torch.no_grad():
        logits = vlm.model(**full).logits[0]
    ids = full["input_ids"][0]
    logp = torch.log_softmax(logits[:-1], -1).gather(-1, ids[1:, None])[:, 0][n_prompt - 1 :]
    assert row["ref_chosen_logp"] == pytest.approx(logp.sum().item(), abs=1e-4)
    assert row["ref_chosen_logp_mean"] == pytest.approx(logp.mean().item(), abs=1e-5)
    assert len(logp) == len(vlm.processor.tokenizer(" " + row["chosen"]).input_ids) + 1  # answer + </s>
