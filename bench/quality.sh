#!/usr/bin/env bash
# Train every family from its default config on the demo's data, then write the quality report.
#   bench/quality.sh [OUT]   (default out/quality; reuses out/demo's synthetic CelebA shards)
# Each training run holds /tmp/facegen-ray.lock, so it never shares the machine with another local Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/quality}
PY=.venv/bin/python
LOCK=/tmp/facegen-ray.lock
mkdir -p "$OUT"

[ -f out/demo/shards64/manifest.json ] || { echo "run 'make demo' first (it writes out/demo/shards64)"; exit 2; }
[ -f out/demo/fairface64/manifest.json ] || {
  [ -d out/demo/synth-fairface ] || $PY -m facegen.cli synth --layout fairface --n 3000 --out out/demo/synth-fairface
  $PY -m facegen.cli prepare --dataset fairface --src out/demo/synth-fairface --out out/demo/fairface64 --no-progress
}
[ -f out/demo/digits32/manifest.json ] || $PY -m facegen.cli prepare --dataset digits --out out/demo/digits32 --no-progress

CONFIGS=${CONFIGS:-"classifier_synth64 ae_synth64 betavae_synth64 cvae_synth64 infogan_digits fairface_synth64 cvae_digits began_synth64 vae_synth64 infogan_synth64"}
for name in $CONFIGS; do
  echo "==> $name ($(date +%T))"
  start=$(date +%s)
  flock "$LOCK" $PY -m facegen.cli train --config "configs/$name.yaml" train.storage_path="$OUT/runs" \
      --metrics-out "$OUT/$name.metrics.json" > "$OUT/$name.log" 2>&1 || echo "    FAILED (see $OUT/$name.log)"
  echo "    $(( $(date +%s) - start )) s"
done
$PY -m facegen.cli report "$OUT/runs" --out "$OUT/report"
