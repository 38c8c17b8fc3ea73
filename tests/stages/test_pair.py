import json

import datasets
import pytest
import torch
from PIL import Image

from sena_cli.config import params_from_dict
from sena_cli.stages.pair import filter_pairs, run_pair
from sena_cli.vlm import VLM
from tests.helpers import torchrun, write_manifest


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
    write_manifest(micro_project, 1, [r["image"] for r in records])
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


# ---------------------------------------------------------------- several processes


def _records_project(micro_project, micro_dict, root, n, batch_size):
    """A project with θ0 and n qa records (every one a kept pair), and its params file."""
    from sena_cli.artifacts import write_jsonl
    from tests.conftest import full_params_yaml
    from tests.helpers import project_from

    d = {**micro_dict, "pair": {"batch_size": batch_size}}
    project_from(micro_project, root)
    (root / "params.yaml").write_text(full_params_yaml(d))
    colours = ["red", "green", "blue", "yellow"]
    write_jsonl(root / "data/iter1/qa/records.jsonl", [
        _record(i, colours[i % 4], colours[(i + 1) % 4]) if i % 3 else
        _record(i, f"A {colours[i % 4]} circle.", f"A {colours[(i + 2) % 4]} cross.", "des", "Describe the image.")
        for i in range(n)])
    write_manifest(root, 1, [f"data/world/pool/{i:05d}.png" for i in range(n)])
    return root, params_from_dict(d)


OUTPUTS = ("data/iter1/pairs/pairs.jsonl", "data/iter1/pairs/stats.json", "data/iter1/pairs/reference.json")


@pytest.mark.slow  # torchrun, 2 processes
def test_two_processes_share_the_batches_and_write_what_one_writes(micro_project, micro_dict, tmp_path):
    import re

    single, params = _records_project(micro_project, micro_dict, tmp_path / "single", 10, batch_size=2)
    run_pair(params, 1, root=single)
    project, _ = _records_project(micro_project, micro_dict, tmp_path / "p", 10, batch_size=2)
    proc = torchrun("-m", "sena_cli", "pair", "--iter", "1", cwd=project)
    stdout = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    for out in OUTPUTS:
        assert (project / out).read_bytes() == (single / out).read_bytes(), out
    assert not (project / "data/iter1/pairs.partial").exists()
    # 5 batches dealt round-robin: rank 0 ran 3, rank 1 ran 2 (each prints its summary)
    assert sorted(map(int, re.findall(r"batches run now\s*│\s*(\d+)", stdout))) == [2, 3]


@pytest.mark.slow  # torchrun, 2 processes
def test_a_killed_two_process_run_resumes_with_one_process(micro_project, micro_dict, tmp_path):
    """The process count is not part of the run: what either rank journaled is kept, only the rest is redone."""
    import json
    import signal
    import subprocess
    import time

    import psutil

    reference, params = _records_project(micro_project, micro_dict, tmp_path / "ref", 24, batch_size=1)
    run_pair(params, 1, root=reference)
    project, _ = _records_project(micro_project, micro_dict, tmp_path / "p", 24, batch_size=1)
    partial = project / "data/iter1/pairs.partial"

    def finished(rank):
        path = partial / f"rank{rank}.jsonl"
        chunks = [json.loads(ln)["chunk"] for ln in path.read_text().splitlines() if ln.endswith("}")] \
            if path.exists() else []
        return [c for c in chunks if isinstance(c, int)]  # batches, not the ranks' finish markers

    proc = torchrun("-m", "sena_cli", "pair", "--iter", "1", cwd=project, wait=False,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and min(len(finished(0)), len(finished(1))) < 2:
        time.sleep(0.005)
    for child in psutil.Process(proc.pid).children(recursive=True):  # both ranks, then torchrun
        child.send_signal(signal.SIGKILL)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = finished(0) + finished(1)
    assert len(finished(1)) >= 2 and len(done) < 24, "the kill came too late to test a resume"
    assert set(finished(0)) <= set(range(0, 24, 2)) and set(finished(1)) <= set(range(1, 24, 2))
    assert not (project / "data/iter1/pairs").exists()

    info = run_pair(params, 1, root=project)  # one process now
    assert info["batches run now"] == 24 - len(done)
    for out in OUTPUTS:
        assert (project / out).read_bytes() == (reference / out).read_bytes(), out
