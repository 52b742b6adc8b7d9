#!/usr/bin/env bash
# English -> German transfer study (Kunze et al. 2017, and beyond) on the synthetic corpora.
#
# Trains German models from scratch and from an English checkpoint with the first k layers
# frozen (k = 0, 4, 8, all_but_head), each on 100% and 10% of the German training data, all
# with the same step budget and a validation every VAL_EVERY steps, then writes a results
# table and a plot of dev CER against steps (scripts/transfer_report.py).
#
#   scripts/transfer_study.sh                          # trains the English source first
#   SOURCE_CKPT=logs/quickstart/runs/<date>/checkpoints/best-....ckpt scripts/transfer_study.sh
#   STEPS=20 VAL_EVERY=10 SOURCE_STEPS=20 N_TRAIN=40 scripts/transfer_study.sh model.channels=[32,32,32,32,32,32,32,32,64,64]
#
# Arguments are Hydra overrides added to every run (source, scratch and transfer).
# Environment (defaults in brackets):
#   STEPS [3000]          optimizer steps of every German run
#   VAL_EVERY [250]       validate on the German dev set every this many steps
#   SOURCE_CKPT []        English checkpoint to start from; empty trains one first
#   SOURCE_STEPS [4000]   steps of that English run
#   N_TRAIN [3000]        utterances of the synthetic train split (English and German)
#   N_DEV [100]           utterances of the dev split (test splits are not used)
#   FRACTIONS [1.0,0.1]   data.train_fraction values
#   FREEZE [0,4,8,all_but_head]   transfer.freeze_first values
#   OUT [logs/transfer_study/<date>]   where everything goes
set -euo pipefail

STEPS=${STEPS:-3000}
VAL_EVERY=${VAL_EVERY:-250}
SOURCE_CKPT=${SOURCE_CKPT:-}
SOURCE_STEPS=${SOURCE_STEPS:-4000}
N_TRAIN=${N_TRAIN:-3000}
N_DEV=${N_DEV:-100}
FRACTIONS=${FRACTIONS:-1.0,0.1}
FREEZE=${FREEZE:-0,4,8,all_but_head}
OUT=${OUT:-logs/transfer_study/$(date +%Y-%m-%d_%H-%M-%S)}
SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Every run: the small model, a CSV log of dev CER against steps, a fixed step budget, no test.
COMMON=(
  model=small logger=csv test=false seed=0
  "data.source.n_utterances={train:${N_TRAIN},dev:${N_DEV},test:1,test_unseen:1}"
  ++trainer.max_epochs=-1 ++trainer.check_val_every_n_epoch=null
  "$@"
)

if [[ -z "$SOURCE_CKPT" ]]; then
  echo "== English source model: ${SOURCE_STEPS} steps"
  tmaps-train data=synth_en task_name=transfer_study_source hydra.run.dir="$OUT/source" \
    ++trainer.max_steps="$SOURCE_STEPS" ++trainer.val_check_interval="$VAL_EVERY" "${COMMON[@]}"
  SOURCE_CKPT=$(ls "$OUT"/source/checkpoints/best-*.ckpt | head -n 1)
fi
SOURCE_CKPT=$(realpath "$SOURCE_CKPT")
echo "== source checkpoint: $SOURCE_CKPT"

GERMAN=(data=synth_de ++trainer.max_steps="$STEPS" ++trainer.val_check_interval="$VAL_EVERY" "data.train_fraction=$FRACTIONS")

echo "== German from scratch, train fractions $FRACTIONS"
tmaps-train --multirun task_name=transfer_study transfer=none hydra.sweep.dir="$OUT/scratch" "${GERMAN[@]}" "${COMMON[@]}"

echo "== German from the English model, freeze_first in $FREEZE"
tmaps-train --multirun task_name=transfer_study transfer=freeze transfer.init_from="$SOURCE_CKPT" \
  "transfer.freeze_first=$FREEZE" hydra.sweep.dir="$OUT/transfer" "${GERMAN[@]}" "${COMMON[@]}"

python "$SCRIPTS/transfer_report.py" "$OUT"
