#!/usr/bin/env bash
# One command for a GPU machine lent for about ten minutes, start-up included (on the first lent H200 the
# tests took 2 min and each training run 1.5-2.5 min, most of it before the first epoch; README: Performance):
#   1. the CUDA tests (pytest -m cuda: bf16 steps without host syncs, Ray Train over NCCL with 1 process, the
#      perceptual net on the GPU),
#   2. bench/gpu_bench.py: the VAE at 64 px through facegen train (images/s, achieved TFLOP/s, data wait), Serve
#      edit throughput on its bundle with gpus_per_replica, the InfoGAN, the VAE at batch 256.
# Writes $OUT/gpu.json, $OUT/pytest.txt and the whole console to $OUT/gpu.log (OUT defaults to out/bench/gpu);
# the shards and training runs go to $WORK (default $OUT), so a lent machine can send back only the figures.
#
#   bench/gpu.sh           on the GPU machine, from the repository root or anywhere (a machine without
#                          Ray: bench/gpu_pack.sh here, bench/gpu_device.sh there)
#   bench/gpu.sh --cpu     the same steps on CPU at tiny sizes: a dry run that catches mistakes before a GPU
#                          is at hand (the CUDA tests then run on CPU: FACEGEN_CUDA_TESTS_ON_CPU=1)
#   bench/gpu.sh --skip-tests --only train_vae_b1024,serve_edit
#                          a second lease's command: the tests passed already, some steps are still wanted
#                          (other arguments go to bench/gpu_bench.py: --help lists its steps)
#   bench/gpu.sh --skip-tests --budget-s 540 --only gan_began,gan_infogan --judge BUNDLE
#                          the GANs at GPU budgets (~3 min each, estimated from the step alone), judged by
#                          an attribute classifier's bundle
# PYTHON overrides the interpreter (default: the repository's .venv; a name on PATH, e.g. python3, works too).
# Exit status: non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-out/bench/gpu}
WORK=${WORK:-$OUT}
MODE=gpu
SKIP_TESTS=0
BUDGET=400
BENCH_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    --cpu) MODE=cpu; BENCH_ARGS+=(--cpu) ;;
    --skip-tests) SKIP_TESTS=1 ;;
    --budget-s) BUDGET=${2:?--budget-s needs seconds}; shift ;;
    *) BENCH_ARGS+=("$1") ;;
  esac
  shift
done
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu.log") 2>&1
if ! command -v "$PY" >/dev/null; then echo "error: no Python at $PY (make install, or PYTHON=...)" >&2; exit 2; fi

started=$(date +%s)
echo "[gpu.sh] $(date -u +%FT%TZ) mode=$MODE out=$OUT python=$PY"
"$PY" -c 'import torch; print("[gpu.sh] torch", torch.__version__, "cuda", torch.version.cuda,
      "devices", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])'
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

export RAY_DATA_DISABLE_PROGRESS_BARS=1
if [ "$MODE" = cpu ]; then export FACEGEN_CUDA_TESTS_ON_CPU=1; fi
# Bounded, so a hang in one step cannot eat the machine's time: tests 2.5 min, benchmarks --budget-s (default 400 s:
# with the tests, under a 10-min command) plus 20 s.
tests_rc=0
if [ "$SKIP_TESTS" = 0 ]; then
  timeout 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider --durations=5 tests/test_cuda.py \
    tests/models/test_perceptual.py 2>&1 | tee "$OUT/pytest.txt"
  tests_rc=${PIPESTATUS[0]}
  echo "[gpu.sh] CUDA tests exit $tests_rc after $(( $(date +%s) - started )) s"
fi

timeout $((BUDGET + 20)) "$PY" bench/gpu_bench.py --out "$OUT" --work "$WORK" --budget-s "$BUDGET" "${BENCH_ARGS[@]}"
bench_rc=$?
echo "[gpu.sh] bench exit $bench_rc; total $(( $(date +%s) - started )) s; $OUT/gpu.json"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ]
