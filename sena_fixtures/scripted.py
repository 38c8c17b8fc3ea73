"""`ScriptedVLM`: the model boundary's generate(), answering from a function of the prompt."""

from __future__ import annotations

from collections.abc import Callable


class ScriptedVLM:
    """Stands in for sena_cli.vlm.VLM where a scorer or a stage only needs generate(): `answer(prompt)` gives
    each answer, `asked` keeps every prompt in order, and every call is checked to pass one PIL image per prompt."""

    def __init__(self, answer: Callable[[str], str]):
        self.answer = answer
        self.asked: list[str] = []

    def generate(self, images, texts, *, max_new_tokens, batch_size, on_batch=lambda n: None, features=None,
                 prefixes=None):
        # `features`, `prefixes`: VLM.generate's caches of vision features and prompt-prefix key/values (eval
        # passes them); a scripted model has neither a vision tower nor a KV cache
        from PIL import Image

        assert len(images) == len(texts) and all(isinstance(im, Image.Image) for im in images)
        self.asked += list(texts)
        on_batch(len(texts))
        return [self.answer(t) for t in texts]
