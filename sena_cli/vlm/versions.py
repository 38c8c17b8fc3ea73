"""The library versions whose internals sena uses, checked when the model boundary is imported.

sena subclasses trl's DPOTrainer and uses two of its internals (it keeps trl from building a
reference copy of the model, and sets the flag under which trl's loss reads the stored reference
log-probs: vlm/dpo.py says why and which tests catch a change), and overrides transformers'
Trainer checkpoint loading: so sena supports exactly the minor versions it is tested with.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from sena_cli.errors import SenaError

SUPPORTED = {"transformers": "5.24", "trl": "1.16"}
OVERRIDE = "SENA_ALLOW_UNTESTED_VERSIONS"


def check_versions() -> None:
    import os

    if os.environ.get(OVERRIDE) == "1":
        return
    wrong = []
    for name, minor in SUPPORTED.items():
        try:
            found = version(name)
        except PackageNotFoundError:
            found = "none"
        if found.split(".")[:2] != minor.split("."):
            wrong.append(f"{name} {found}")
    if wrong:
        wanted = " ".join(f"'{n}=={m}.*'" for n, m in SUPPORTED.items())
        raise SenaError(f"sena supports {', '.join(f'{n} {m}.x' for n, m in SUPPORTED.items())} (found "
                        f"{', '.join(wrong)}): pip install {wanted} (or set {OVERRIDE}=1 to try anyway)")
