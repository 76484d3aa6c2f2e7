#!/usr/bin/env bash
# bench/gpu.sh on a lent GPU machine whose Python has PyTorch but not Ray: unpacks .whl/site312.tar.xz
# (bench/gpu_pack.sh makes it here), puts it and the repository on PYTHONPATH, samples GPU load with
# nvidia-smi dmon, runs bench/gpu.sh (extra arguments go to it) and packs the bench's Ray logs beside its
# figures, so a slow start can be read afterwards. Everything it keeps is in $OUT (gpu.json, gpu.log,
# pytest.txt, dmon.txt, ray_logs.tar.gz): at most the 8 files the device tool sends back.
#
#   device tool: run  command="bash bench/gpu_device.sh"  carry=[".whl"]  timeout_s=590
#   the GANs judged (carry the judge too): command="bash bench/gpu_device.sh --skip-tests --budget-s 540 --only
#       gan_began,gan_infogan --judge out/demo/runs/classifier_synth64/bundle"  timeout_s=590
#       carry=[".whl", "out/demo/runs/classifier_synth64/bundle"]
set -uo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;; esac
cd "$(dirname "$0")/.."
SITE=${SITE:-/tmp/facegen-site}
OUT=${OUT:-out/bench/gpu}
mkdir -p "$SITE" "$OUT"
started=$(date +%s)
for pack in .whl/*.tar.xz; do
  [ -e "$pack" ] || { echo "error: no .whl/*.tar.xz: run bench/gpu_pack.sh first and carry .whl" >&2; exit 2; }
  tar -I 'xz -d -T0' -xf "$pack" -C "$SITE" || { echo "error: cannot unpack $pack" >&2; exit 2; }
done
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c 'import sys, torch, ray, fastapi, mlflow, facegen
print("[gpu_device] python", sys.version.split()[0], "torch", torch.__version__, "ray", ray.__version__)' || exit 2
echo "[gpu_device] unpacked in $(( $(date +%s) - started )) s"
nvidia-smi dmon -s u -d 2 > "$OUT/dmon.txt" 2>&1 &
dmon=$!
PYTHON=python3 WORK=${WORK:-/tmp/facegen-gpu} bench/gpu.sh "$@"
rc=$?
kill "$dmon" 2>/dev/null
tar -czhf "$OUT/ray_logs.tar.gz" -C /tmp/ray session_latest/logs 2>/dev/null
[ "$(stat -c %s "$OUT/ray_logs.tar.gz" 2>/dev/null || echo 0)" -lt 16000000 ] || rm -f "$OUT/ray_logs.tar.gz"
echo "[gpu_device] exit $rc after $(( $(date +%s) - started )) s"
exit "$rc"
