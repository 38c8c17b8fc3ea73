"""Fixtures that the tests and the benchmarks share; not part of the product (sena_cli imports nothing here).

- families.py: real-shaped tiny checkpoints of LLaVA-1.5, Qwen2-VL and SmolVLM, built offline;
- micro.py: the micro world and θ0 (seconds, not the 10-minute default), photo-like images, a paired iteration;
- scripted.py: `ScriptedVLM`, the model boundary answering from a script;
- memory_model.py: the memory arithmetic of docs/performance.md (its test checks it against autograd and
  peft; benchmarks/train_memory_model.py and gpu_scale.py print it beside measurements).
"""
