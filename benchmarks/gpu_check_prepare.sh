#!/usr/bin/env bash
# Wheels for benchmarks/gpu_check.py on a GPU machine that cannot reach PyPI (issues 21 and 22).
#
#   bash benchmarks/gpu_check_prepare.sh            # here, with PyPI: writes .whl/ (ignored by git)
#   bash benchmarks/gpu_check_prepare.sh DIR 3.11   # another folder / the GPU machine's Python version
#
# The GPU machine has torch, transformers, accelerate, peft, sentence-transformers, pandas, pyarrow,
# xxhash and fsspec, but not TRL nor what TRL needs beyond them: datasets, dill, multiprocess. All four
# are pure-Python wheels; they are fetched for the GPU machine's Python (default 3.12), without their
# dependencies (the machine has the rest). Then, on the GPU machine, carry the folder and run:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD \
#     && PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --all --wheel-dir .whl --json "$OUT/gpu_check.json"
set -euo pipefail
DIR=${1:-.whl}
PYTHON_VERSION=${2:-3.12}
PYTHON=${PYTHON:-python3}
mkdir -p "$DIR"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$DIR" trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
ls -1 "$DIR"
