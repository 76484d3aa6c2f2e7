#!/usr/bin/env bash
# The full quality table: train every default config on the demo's synthetic data (a config whose bundle is
# newer than the config file is skipped, so an interrupted run resumes), train the independent judge, write the
# renderer's counterfactual test pairs, then `facegen evaluate` every bundle on the held-out test split (a bundle
# already evaluated with the same judge, data and settings keeps its stored result, so that resumes too).
#
#   bench/quality.sh [--out DIR] [--data DIR] [--configs "vae_synth64 ae_synth64 ..."] [--gpu] [--set K=V]...
#                    [--edit-n N] [--force] [--help]
#
# OUT defaults to out/quality; DATA (default out/demo, what `make demo` leaves) holds the shards; missing ones
# are rendered and prepared first. --gpu trains each config with one GPU worker (bf16); --set adds a config
# override to every run; --edit-n sets the counterfactual pairs per attribute the edits are scored on (default
# 64; 32 halves the guided edits, most of the evaluation's time, at a coarser flip rate). Each training run holds
# /tmp/facegen-ray.lock; --force retrains and re-evaluates everything. Budget on 2 quiet CPU cores: 1.7 h, 78 min
# of training and 23 of evaluation (README "The full table", measured 2026-12-04).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=out/quality
DATA=out/demo
# ae_synth64 (the perceptual AE's network without the perceptual term: 14 min, superseded by it) is left out;
# --configs adds it back.
CONFIGS="classifier_synth64 guide16k_synth64 ae_perceptual_synth64 vae_synth64 vae_named_synth64 betavae_synth64 cvae_synth64 cvae_edit_synth64 infogan_digits fairface_synth64 cvae_digits began_synth64 infogan_synth64"
FORCE=0
FRESH=()
EDIT_N=64
SETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --configs) CONFIGS=$2; shift 2 ;;
    --gpu) SETS+=(train.use_gpu=true train.num_workers=1 train.cpus_per_worker=4); shift ;;
    --set) SETS+=("$2"); shift 2 ;;
    --edit-n) EDIT_N=$2; shift 2 ;;
    --force) FORCE=1; FRESH=(--fresh); shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
PY=.venv/bin/python
LOCK=/tmp/facegen-ray.lock
mkdir -p "$OUT"

# The demo's data (same renderer seed and size as `make demo`), made here when missing.
[ -f "$DATA/shards64/manifest.json" ] || {
  [ -f "$DATA/synth-celeba/list_attr_celeba.txt" ] ||
    $PY -m facegen.cli synth --n 3000 --seed 0 --out "$DATA/synth-celeba" --no-progress
  $PY -m facegen.cli prepare --dataset celeba --src "$DATA/synth-celeba" --out "$DATA/shards64" --no-progress
}
# The other datasets only when a chosen config learns from them
needs() { case " $CONFIGS " in *"$1"*) return 0 ;; *) return 1 ;; esac; }
needs fairface && [ ! -f "$DATA/fairface64/manifest.json" ] && {
  # 20,000 faces: the age head needs them (configs/fairface_synth64.yaml's comment)
  [ -d "$DATA/synth-fairface" ] ||
    $PY -m facegen.cli synth --layout fairface --n 20000 --seed 5 --out "$DATA/synth-fairface" --no-progress
  $PY -m facegen.cli prepare --dataset fairface --src "$DATA/synth-fairface" --out "$DATA/fairface64" --no-progress
}
needs digits && [ ! -f "$DATA/digits32/manifest.json" ] &&
  $PY -m facegen.cli prepare --dataset digits --out "$DATA/digits32" --no-progress
# The judge's own faces: more of them than any model sees, none of them the demo's (configs/judge_synth64.yaml).
[ -f "$DATA/judge64/manifest.json" ] || {
  [ -f "$DATA/synth-judge/list_attr_celeba.txt" ] ||
    $PY -m facegen.cli synth --n 20000 --seed 11 --out "$DATA/synth-judge" --no-progress
  $PY -m facegen.cli prepare --dataset celeba --src "$DATA/synth-judge" --out "$DATA/judge64" --no-progress
}

for name in judge_synth64 $CONFIGS; do
  bundle="$OUT/runs/$name/bundle/meta.json"
  if [ "$FORCE" = 0 ] && [ -f "$bundle" ] && [ "$bundle" -nt "configs/$name.yaml" ]; then
    echo "==> $name: bundle up to date, skipped"; continue
  fi
  echo "==> $name ($(date +%T))"
  start=$(date +%s)
  # The configs name out/demo/... shards and out/quality/... classifier bundles: point them at DATA and OUT.
  paths=()
  shards=$(sed -n 's/^  shards: //p' "configs/$name.yaml")
  [ -n "$shards" ] && paths+=("data.shards=${shards/#out\/demo/$DATA}")
  classifier=$(sed -n 's/^    classifier: //p' "configs/$name.yaml")
  [ -n "$classifier" ] && paths+=("model.constraint.classifier=${classifier/#out\/quality/$OUT}")
  perceptual=$(sed -n 's/^    path: //p' "configs/$name.yaml")
  [ -n "$perceptual" ] && paths+=("model.perceptual.path=${perceptual/#out\/quality/$OUT}")
  flock "$LOCK" $PY -m facegen.cli train --config "configs/$name.yaml" train.storage_path="$OUT/runs" \
      ${paths[@]+"${paths[@]}"} ${SETS[@]+"${SETS[@]}"} --metrics-out "$OUT/$name.metrics.json" > "$OUT/$name.log" 2>&1 \
      || echo "    FAILED (see $OUT/$name.log)"
  echo "    $(( $(date +%s) - start )) s"
done

[ -d "$OUT/counterfactuals" ] || $PY -m facegen.cli synth --counterfactuals "$DATA/synth-celeba" --seed 0 \
    --out "$OUT/counterfactuals" --n 64 --no-progress
# The guide on the judge's faces steers the guided edits (never the judge: another recipe and initialisation)
$PY -m facegen.cli evaluate --runs "$OUT/runs" --judge "$OUT/runs/judge_synth64/bundle" \
    --guide "$OUT/runs/guide16k_synth64/bundle" --residual --counterfactuals "$OUT/counterfactuals" \
    --edit-n "$EDIT_N" --out "$OUT/evaluation" ${FRESH[@]+"${FRESH[@]}"}
$PY -m facegen.cli report "$OUT/runs" --out "$OUT/report"
