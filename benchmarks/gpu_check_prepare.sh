#!/usr/bin/env bash
# Wheels for benchmarks/gpu_check.py on a GPU machine that cannot reach PyPI (issues 21 and 22).
#
#   bash benchmarks/gpu_check_prepare.sh            # here, with PyPI: writes .whl/ (ignored by git)
#   bash benchmarks/gpu_check_prepare.sh DIR 3.11   # another folder / the GPU machine's Python version
#
# The GPU machine has torch, transformers, accelerate, peft, sentence-transformers, pandas, pyarrow,
# xxhash and fsspec, but not TRL nor what TRL needs beyond them: datasets, dill, multiprocess. All four
# are pure-Python wheels; they are fetched for the GPU machine's Python (default 3.12), without their
# dependencies (the machine has the rest). datasets 5.2 asks for pyarrow >= 24; if the machine's pyarrow is
# older (its version is not listed), WITH_PYARROW=1 adds pyarrow 26.0.1 (~45 MB of the 64 MiB a device call
# may carry). Then, on the GPU machine, carry the folder and run:
#
#   see benchmarks/README.md ("The GPU check") for the one device command: it installs these wheels into
#   /tmp/site (pyarrow only when the machine's is older than 24) and runs gpu_check.py --all --wheel-dir .whl
set -euo pipefail
DIR=${1:-.whl}
PYTHON_VERSION=${2:-3.12}
PYTHON=${PYTHON:-python3}
mkdir -p "$DIR"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$DIR" trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
if [ "${WITH_PYARROW:-0}" = "1" ]; then
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$DIR" pyarrow==26.0.1
fi
ls -1 "$DIR"
