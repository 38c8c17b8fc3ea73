"""The memory arithmetic behind docs/performance.md agrees with what transformers, peft and autograd do."""

from __future__ import annotations

import contextlib

import pytest
import torch

from sena_fixtures import memory_model as tm


def _llava(s, device="meta"):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=s.vision_hidden, intermediate_size=s.vision_intermediate,
                                       num_hidden_layers=s.vision_layers, num_attention_heads=16,
                                       image_size=s.image_size, patch_size=s.patch_size),
        text_config=LlamaConfig(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                                num_hidden_layers=s.layers, num_attention_heads=s.heads,
                                num_key_value_heads=s.heads),
        vision_feature_layer=-2, vision_feature_select_strategy="default", image_token_index=32000)
    with torch.device(device):
        return LlavaForConditionalGeneration(config)


def test_parameter_counts_match_the_model_and_peft():
    from peft import LoraConfig, get_peft_model

    from sena_cli.vlm.dpo import LORA_TARGETS

    # LLaVA-1.5-7B's widths with 2 decoder and 2 vision layers: every count is linear in the layers.
    s = tm.Shape(**{**tm.LLAVA_7B.__dict__, "layers": 2, "vision_layers": 2})
    model = _llava(s)
    named = dict(model.named_parameters())
    count = lambda key: sum(p.numel() for n, p in named.items() if key in n)  # noqa: E731
    assert count("vision_tower") == s.vision_params()
    assert count("multi_modal_projector") == s.projector_params()
    assert sum(p.numel() for p in named.values()) == s.total_params()
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS))
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == s.lora_params()
    assert tm.LLAVA_7B.total_params() == 7_063_427_072


def _saved_bytes_of_second_layer(model, layers, regime: str) -> int:
    """Bytes of the tensors autograd saves in decoder layer 1 (not parameters or weight casts; nothing
    layer 0 saved too, such as the rotary tables), counted once per storage."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weight_shapes = {tuple(p.shape) for p in model.parameters() if p.dim() == 2}
    current, saved = [None], {0: {}, 1: {}}

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if current[0] in saved and key not in params and tuple(t.shape) not in weight_shapes:
            saved[current[0]][key] = t.untyped_storage().nbytes()
        return t

    for i in (0, 1):
        layers[i].register_forward_pre_hook(lambda *_, i=i: current.__setitem__(0, i))
        layers[i].register_forward_hook(lambda *_: current.__setitem__(0, None))
    ids = torch.randint(5, 500, (2, 40))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if regime == "mixed" else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return sum(n for key, n in saved[1].items() if key not in saved[0])


@pytest.mark.parametrize("regime,lora", [("fp32", False), ("mixed", False), ("bf16", False),
                                         ("fp32", True), ("mixed", True)])
def test_saved_activations_per_layer_match_autograd(regime, lora):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import disable_dropout_in_model

    s = tm.Shape(vocab=512, hidden=64, intermediate=176, layers=2, heads=4, vision_hidden=0,
                 vision_intermediate=0, vision_layers=0, image_size=14, patch_size=14)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                                         num_hidden_layers=s.layers, num_attention_heads=s.heads,
                                         num_key_value_heads=s.heads))
    if regime == "bf16":
        model = model.to(torch.bfloat16)
    layers = model.model.layers
    if lora:
        model = get_peft_model(model, LoraConfig(r=s.lora_r, lora_alpha=32, lora_dropout=0.05,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                 "up_proj", "down_proj"]))
        disable_dropout_in_model(model)  # as trl's DPOConfig(disable_dropout=True) does
    model.train()
    measured = _saved_bytes_of_second_layer(model, layers, regime)
    assert measured == tm.layer_activation_bytes_per_token(s, regime, lora) * 2 * 40
