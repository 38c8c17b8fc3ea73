#!/usr/bin/env bash
# One command on a lent GPU machine (no network; its own CUDA torch): install from .whl/ only what the
# machine lacks or has too old for sena, then run benchmarks/gpu_scale.py at LLaVA-1.5-7B widths.
#   bash benchmarks/gpu_session.sh [gpu_scale.py options]      (default: --layers 4,8 --batch 32)
# Writes everything it prints to $OUT/gpu_scale.txt (or /tmp/gpu_scale.txt). About 4-6 minutes on one
# H100/H200; gpu_scale.py is stopped after 420 s. docs/performance.md says which wheels to put in .whl/.
set -uo pipefail
cd "$(dirname "$0")/.."
log="${OUT:-/tmp}/gpu_scale.txt"
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--layers 4,8 --batch 32)

python=""
for candidate in python3 python; do  # the interpreter that has the machine's CUDA torch
    if command -v "$candidate" >/dev/null && "$candidate" -c "import torch" 2>/dev/null; then
        python="$candidate"
        break
    fi
done

{
    echo "== machine"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    echo "cpus: $(nproc)"
    if [ -z "$python" ]; then echo "no python with torch found"; exit 1; fi
    "$python" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| cuda', torch.version.cuda, '| gpus', torch.cuda.device_count())"

    echo "== install (no index: wheels from .whl/ only where the machine's packages do not satisfy sena)"
    started=$SECONDS
    # --system-site-packages keeps the machine's torch; pip installs nothing the machine already satisfies.
    # Without the venv module, install into the machine's own environment (the machine is lent, then reset).
    if "$python" -c "import sys; sys.exit(sys.prefix == sys.base_prefix)"; then
        py="$(command -v "$python")"  # torch lives in a venv already: a venv made from it would not see torch
    elif "$python" -m venv --system-site-packages /tmp/sena-gpu-venv; then
        py=/tmp/sena-gpu-venv/bin/python
    else
        py="$(command -v "$python")"
    fi
    # Two steps: generation needs only the first; trl's step needs datasets (and so pyarrow) as well.
    "$py" -m pip install --quiet --no-index --find-links .whl "transformers>=5.24,<5.25" "tokenizers>=0.21" \
        "safetensors>=0.4" "pillow>=10" "pyyaml>=6" || echo "pip: could not install the transformers set"
    "$py" -m pip install --quiet --no-index --find-links .whl "trl>=1.16,<1.17" "peft>=0.21" "accelerate>=1.10" \
        "datasets>=4" || echo "pip: could not install the trl set; gpu_scale.py reports what it cannot import"
    "$py" - <<'EOF'
import importlib
for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "pyarrow", "tokenizers", "numpy", "PIL"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except Exception as exc:  # noqa: BLE001 - report and go on: the benchmark says what it skips
        print(f"{name} MISSING ({type(exc).__name__}: {exc})")
EOF
    echo "install: $((SECONDS - started)) s"

    echo "== gpu_scale.py ${args[*]}"
    OMP_NUM_THREADS=8 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD" \
        timeout 420 "$py" benchmarks/gpu_scale.py "${args[@]}"
    echo "gpu_scale exit code: $?"
} 2>&1 | tee "$log"
