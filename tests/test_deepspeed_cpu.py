"""DeepSpeed ZeRO-2 and ZeRO-3 on CPU: 2 processes train sena's DPO step like plain DDP does.

Needs the optional `deepspeed` package, skipped without it: `pip install --no-build-isolation
deepspeed==0.19.8` (a source build against the installed torch), and a C++ compiler, since DeepSpeed's
CPU accelerator compiles its shared-memory collective op on first use. DS_ACCELERATOR=cpu selects
that accelerator; the processes talk over gloo.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.slow  # three 2-process launches, about 90 s on 2 cores

REPO = Path(__file__).resolve().parents[1]


def _tiny_llava(out: Path) -> Path:
    import torch
    from PIL import Image
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from sena_cli.world import tiny
    from tests.deepspeed_steps import ANSWERS

    tok = tiny.build_tokenizer(["Describe the image concisely."] + [t for pair in ANSWERS for t in pair])
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok, patch_size=8, vision_feature_select_strategy="full", num_additional_image_tokens=1,
        chat_template=tiny.CHAT_TEMPLATE)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=32, patch_size=8),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=4, pad_token_id=tok.pad_token_id,
                                eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="full",
        vision_feature_layer=-1)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    for i, colour in enumerate(["red", "blue", "green", "yellow"]):
        Image.new("RGB", (32, 32), colour).save(out / f"img{i}.png")
    return out


def _steps(model_dir: Path, out: Path, deepspeed_config: str | None = None) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO),
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), str(REPO / "tests" / "deepspeed_steps.py"), str(model_dir), str(out)]
    proc = subprocess.run(cmd + ([deepspeed_config] if deepspeed_config else []), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_zero2_and_zero3_follow_the_ddp_loss_curve(tmp_path):
    model_dir = _tiny_llava(tmp_path / "model")
    ddp = _steps(model_dir, tmp_path / "ddp.json")
    assert not ddp["deepspeed"] and ddp["processes"] == 2
    losses = ddp["losses"]
    assert len(losses) == 8 and sum(losses[4:]) < sum(losses[:4])  # it trains: epoch 2 (same pairs) below epoch 1
    for stage in (2, 3):
        # The shipped config, "auto" values and all, resolved by the Trainer as `sena train` does.
        zero = _steps(model_dir, tmp_path / f"zero{stage}.json", f"configs/deepspeed/zero{stage}.json")
        assert zero["deepspeed"] and zero["processes"] == 2
        # With the training arguments made first, ZeRO-3 loads the weights already partitioned.
        assert zero["sharded_at_load"] is (stage == 3)
        assert zero["losses"] == pytest.approx(ddp["losses"], rel=1e-4), stage
