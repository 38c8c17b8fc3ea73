import json

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from sena_cli.errors import SenaError
from sena_cli.frame import read_jsonl
from sena_cli.stages.base import vocabulary_texts
from sena_cli.vlm import VLM
from sena_cli.world import tiny


def test_decode_encode_round_trips_every_world_text(micro_project, micro_params):
    world = micro_project / "data" / "world"
    processor = AutoProcessor.from_pretrained(micro_project / "models" / "iter0")
    tok = processor.tokenizer
    texts = vocabulary_texts(micro_params, read_jsonl(world / "instruct" / "train.jsonl"), world)
    assert len(texts) > 500
    for text in texts:
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text


def test_base_model_loads_like_a_hub_checkpoint_and_generates(micro_project):
    path = micro_project / "models" / "iter0"
    assert (path / "model.safetensors").is_file()
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert model.config.model_type == "llava"
    image = Image.open(next((micro_project / "data" / "world" / "eval" / "images").iterdir()))
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image concisely."}]}],
        add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    log = json.loads((path / "train_log.json").read_text())
    assert log["log"][-1]["loss"] < log["log"][0]["loss"]  # training moved the loss


def test_batched_generation_equals_one_at_a_time(micro_project):
    vlm = VLM.load(micro_project / "models" / "iter0")
    folder = micro_project / "data" / "world" / "eval" / "images"
    images = [Image.open(p) for p in sorted(folder.iterdir())[:6]]
    texts = ["Describe the image concisely.", "What color is the circle? Answer with a single word or phrase.",
             "Ask one question about the content of this image."] * 2
    batched = vlm.generate(images, texts, max_new_tokens=8, batch_size=6)
    single = [vlm.generate([im], [t], max_new_tokens=8, batch_size=1)[0] for im, t in zip(images, texts)]
    assert batched == single


def test_tokenizer_keeps_punctuation_apart_from_words():
    tok = tiny.build_tokenizer(["QUESTION: Where is the red circle?", "A red circle, a blue square."])
    pieces = tok.convert_ids_to_tokens(tok("Where is the red circle?", add_special_tokens=False).input_ids)
    assert pieces[-2:] == ["▁circle", "?"]
    assert tok.decode(tok("A red circle, a blue square.", add_special_tokens=False).input_ids) == \
        "A red circle, a blue square."


def test_train_tiny_lowers_the_loss(micro_params):
    from sena_cli.config import params_from_dict

    texts = ["Is there a red circle? Yes No"]
    tok = tiny.build_tokenizer(texts)
    processor = tiny.build_processor(tok, micro_params.world, micro_params.base)
    model = tiny.build_model(tok, micro_params.world, micro_params.base)
    examples = [{"prompt": "Is there a red circle?", "answer": a} for a in ("Yes", "No")]
    encoded = tiny.encode_examples(processor, examples)
    pixels = torch.stack([torch.full((3, 48, 48), 1.0), torch.full((3, 48, 48), -1.0)])
    base = params_from_dict({"base": {"steps": 60, "batch_size": 2, "lr": 0.003, "warmup_steps": 0}}).base
    log = tiny.train_tiny(model, pixels, encoded, [0, 1], base, tok.pad_token_id)
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]


def test_packed_examples_get_exactly_the_logits_they_get_alone(micro_project):
    """Several examples of one image in a row (train_tiny's packing) must not see each other:
    each gets the logits of a plain single-example forward."""
    from sena_cli.stages.base import pixel_tensor

    world = micro_project / "data" / "world"
    path = micro_project / "models" / "iter0"
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    examples = read_jsonl(world / "instruct" / "train.jsonl")[:8]
    images = sorted({e["image"] for e in examples})
    rows = [[i for i, e in enumerate(examples) if e["image"] == name] for name in images]
    assert max(len(r) for r in rows) >= 3
    pixels = pixel_tensor(processor, [world / "instruct" / "images" / n for n in images], lambda n: None)
    encoded = tiny.encode_examples(processor, examples)
    prefix = tiny.image_prefix_length(encoded, model.config.image_token_id)
    with torch.no_grad():
        packed = model(**tiny.packed_batch(rows, encoded, prefix, processor.tokenizer.pad_token_id),
                       pixel_values=pixels).logits
        for r, row in enumerate(rows):
            offset = prefix
            for i in row:
                seq, _ = encoded[i]
                alone = model(input_ids=torch.tensor([seq]), pixel_values=pixels[[r]]).logits[0]
                n = len(seq) - prefix
                torch.testing.assert_close(packed[r, offset : offset + n], alone[prefix:], atol=1e-5, rtol=1e-4)
                offset += n


def test_from_params_loads_as_the_model_section_says(micro_project):
    from sena_cli.config import ModelParams

    path, cpu = micro_project / "models" / "iter0", torch.device("cpu")
    assert VLM.from_params(ModelParams(), path, dtype="bfloat16", device=cpu).model.dtype == torch.bfloat16
    with pytest.raises(SenaError, match=r"^model\.processor\.no_such_setting: "):  # model.processor is laid over
        VLM.from_params(ModelParams(processor={"no_such_setting": 1}), path, dtype="float32", device=cpu)


def test_theta0_before_training_is_the_same_bytes_for_the_same_params(micro_params):
    """build_model goes through the shared random-LLaVA builder (random_llava), seeded by base.seed: the same
    params give the same weights, bit for bit; another seed gives others."""
    import dataclasses

    tok = tiny.build_tokenizer(["Is there a red circle? Yes No"])

    def weights(base):
        model = tiny.build_model(tok, micro_params.world, base)
        return model.config.to_json_string(), {k: v.clone() for k, v in model.state_dict().items()}

    config_a, a = weights(micro_params.base)
    config_b, b = weights(micro_params.base)
    assert config_a == config_b and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    _, other = weights(dataclasses.replace(micro_params.base, seed=micro_params.base.seed + 1))
    assert not all(torch.equal(a[k], other[k]) for k in a)


def test_answers_during_training_are_the_ones_sena_qa_would_get(micro_project, micro_params):
    """base.own_answers_step has θ0 answer its enhancement questions from token ids and the pixel tensor it
    trains on; they must be the answers VLM.generate gives the same questions and images (as `sena qa` asks)."""
    from sena_cli.stages.base import pixel_tensor

    path, world = micro_project / "models" / "iter0", micro_project / "data" / "world"
    vlm = VLM.load(path)
    processor = AutoProcessor.from_pretrained(path)
    asked = [e for e in read_jsonl(world / "instruct" / "train.jsonl") if e.get("question")][:12]
    names = sorted({e["image"] for e in asked})
    pixels = pixel_tensor(processor, [world / "instruct" / "images" / n for n in names], lambda n: None)
    prompts = [seq[:n] for seq, n in tiny.encode_examples(processor, [{"prompt": e["question"], "answer": ""}
                                                                       for e in asked])]
    ids = tiny.greedy_answers(vlm.model, pixels, prompts, [names.index(e["image"]) for e in asked],
                              processor.tokenizer.eos_token_id, batch_size=5)
    during = [processor.tokenizer.decode(a, skip_special_tokens=True).strip() for a in ids]
    images = [Image.open(world / "instruct" / "images" / e["image"]) for e in asked]
    assert during == vlm.generate(images, [e["question"] for e in asked], max_new_tokens=8, batch_size=1)
    assert len(set(map(len, prompts))) > 1  # questions of several lengths, batched by length
