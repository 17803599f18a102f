#!/usr/bin/env bash
# Example data preparation for lakd: a synthetic corpus, plus every real corpus whose root is given.
#
#   shards/prepare.sh [OUT]                      OUT defaults to data/shards
#   IEMOCAP_ROOT=... FESC_ROOT=... CAFE_ROOT=... RAVDESS_ROOT=... CREMAD_ROOT=... EMODB_ROOT=... \
#   MANIFEST_ROOT=... shards/prepare.sh OUT
#
# LABELS (default anger,happiness,neutral,sadness) and SYNTH_LANGUAGES (default en,fi,fr) can be set too.
# See docs/corpora.md for the layout each importer expects and docs/synthetic-corpus.md for the synthesizer.
set -euo pipefail

OUT=${1:-data/shards}
LAKD=${LAKD:-lakd}
LABELS=${LABELS:-anger,happiness,neutral,sadness}

if [ ! -e "$OUT/synth/train/index.json" ]; then
  $LAKD shards synth --out "$OUT/synth" --languages "${SYNTH_LANGUAGES:-en,fi,fr}" --labels "$LABELS"
else
  echo "keeping existing $OUT/synth"
fi

for corpus in iemocap fesc cafe ravdess cremad emodb manifest; do
  var="$(echo "$corpus" | tr '[:lower:]' '[:upper:]')_ROOT"
  root="${!var:-}"
  if [ -n "$root" ]; then
    echo "importing $corpus from $root"
    $LAKD shards import --corpus "$corpus" --root "$root" --out "$OUT/real" --labels "$LABELS"
  fi
done

echo "done: $OUT"
