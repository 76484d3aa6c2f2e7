#!/usr/bin/env bash
# The full quality table: train every default config on the demo's synthetic data (a config whose bundle is
# newer than the config file is skipped, so an interrupted run resumes), train the independent judge, write the
# renderer's counterfactual test pairs, then `facegen evaluate` every bundle on the held-out test split.
#
#   bench/quality.sh [--out DIR] [--configs "vae_synth64 ae_synth64 ..."] [--force] [--help]
#
# Default OUT is out/quality; data comes from out/demo (run `make demo` first). Each training run holds
# /tmp/facegen-ray.lock, so it never shares the machine with another local Ray. Budget: about 2 h on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=out/quality
CONFIGS="classifier_synth64 ae_synth64 vae_synth64 betavae_synth64 cvae_synth64 infogan_digits fairface_synth64 cvae_digits began_synth64 infogan_synth64"
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --configs) CONFIGS=$2; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
PY=.venv/bin/python
LOCK=/tmp/facegen-ray.lock
mkdir -p "$OUT"

[ -f out/demo/shards64/manifest.json ] || { echo "error: run 'make demo' first (it writes out/demo/shards64)" >&2; exit 2; }
[ -f out/demo/fairface64/manifest.json ] || {
  [ -d out/demo/synth-fairface ] || $PY -m facegen.cli synth --layout fairface --n 3000 --out out/demo/synth-fairface
  $PY -m facegen.cli prepare --dataset fairface --src out/demo/synth-fairface --out out/demo/fairface64 --no-progress
}
[ -f out/demo/digits32/manifest.json ] || $PY -m facegen.cli prepare --dataset digits --out out/demo/digits32 --no-progress

for name in judge_synth64 $CONFIGS; do
  bundle="$OUT/runs/$name/bundle/meta.json"
  if [ "$FORCE" = 0 ] && [ -f "$bundle" ] && [ "$bundle" -nt "configs/$name.yaml" ]; then
    echo "==> $name: bundle up to date, skipped"; continue
  fi
  echo "==> $name ($(date +%T))"
  start=$(date +%s)
  flock "$LOCK" $PY -m facegen.cli train --config "configs/$name.yaml" train.storage_path="$OUT/runs" \
      --metrics-out "$OUT/$name.metrics.json" > "$OUT/$name.log" 2>&1 || echo "    FAILED (see $OUT/$name.log)"
  echo "    $(( $(date +%s) - start )) s"
done

[ -d "$OUT/counterfactuals" ] || $PY -m facegen.cli synth --counterfactuals out/demo/synth-celeba --seed 0 \
    --out "$OUT/counterfactuals" --n 64
$PY -m facegen.cli evaluate --runs "$OUT/runs" --judge "$OUT/runs/judge_synth64/bundle" \
    --counterfactuals "$OUT/counterfactuals" --out "$OUT/evaluation"
$PY -m facegen.cli report "$OUT/runs" --out "$OUT/report"
