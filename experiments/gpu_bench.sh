#!/usr/bin/env bash
# The benchmark suite on a lent GPU machine (issue 18); figures go to docs/performance.md.
#
#   experiments/gpu_bench.sh [OUT_DIR] [SUITES]      # SUITES default: icl,lopt,estimators
#
# Through the `device` tool, from the repository root (the working tree travels; nothing is
# downloaded there):  run(command="bash experiments/gpu_bench.sh $OUT", timeout_s=480)
#
# The GPU image has jax, flax, optax, einops, tqdm, scikit-learn, pandas and matplotlib but
# not metalearn, and nothing can be installed from an index there: the package is laid out
# from the copied tree as pyproject.toml maps it (app/ is `metalearn`, core/ `metalearn.core`,
# ...), by symbolic links in a throwaway folder on PYTHONPATH; no pip, no build. Suites with one device: `scaling` and `local` need several
# devices for their multi-device rows (`bench local --devices 1` still gives the one-device
# rows); `sweep` needs nothing more but takes minutes. Set PYTHON to use another interpreter
# (e.g. a CPU virtual environment, to try the script here).
set -euo pipefail

out=${1:-${OUT:-gpu_bench_out}}
suites=${2:-icl,lopt,estimators}
python=${PYTHON:-python3}
mkdir -p "$out"
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT

export PYTHONUNBUFFERED=1
mkdir "$site/metalearn"
ln -s "$PWD"/app/*.py "$site/metalearn/"
for floor in core data meta icl lopt experiments; do ln -s "$PWD/$floor" "$site/metalearn/$floor"; done
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"

"$python" - <<'EOF' | tee "$out/machine.txt"
import jax
print(f"jax {jax.__version__}; devices: {jax.devices()}")
EOF
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
        | tee -a "$out/machine.txt"
fi

set -o pipefail
"$python" -m metalearn.cli bench all --only "$suites" --json "$out/bench.jsonl" \
    2>&1 | tee "$out/bench.txt"
"$python" -m metalearn.cli bench local --devices 1 --repeats 10 2>&1 | tee "$out/bench_local.txt"
