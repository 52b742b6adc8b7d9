#!/usr/bin/env bash
# The GPU path in one table, at most 8 minutes on an H200 (see benchmarks/gpu_check.py):
# paper-size Wav2Letter bf16 training throughput and MFU with and without torch.compile, the
# data loader with all cores against the step rate, NAP and GradNAP on CUDA, trainer=ddp with
# devices=1. Needs torch and tmaps (Lightning and Hydra for the ddp row, soundfile and
# torchaudio for the loader row); no network, no corpus.
#
#   bash benchmarks/gpu_check.sh                      # CUDA: paper-size model
#   bash benchmarks/gpu_check.sh --small --no-compile # anywhere, in seconds (the tests run this on the CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python benchmarks/gpu_check.py "$@"
