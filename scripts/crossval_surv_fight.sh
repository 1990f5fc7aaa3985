#!/usr/bin/env bash
# Group-wise 5-fold cross-validation on the surv-fight clips, as quoted in the README.
# Usage: scripts/crossval_surv_fight.sh [DATA] [OUT]
set -euo pipefail
DATA=${1:-../shared/data/surv-fight}
OUT=${2:-runs}
XVAD=${XVAD:-.venv/bin/xvad}
# EfficientNet-Lite0 with its bundled ImageNet weights (works offline).
$XVAD train "$DATA" --backbone efficientnet_lite0 --weights imagenet --folds 5 --frames 16 --size 224 \
    --hidden 128 --out "$OUT/surv-fight-lite0"
# The paper's VGG19, without ImageNet weights: they cannot be downloaded on an offline machine.
$XVAD train "$DATA" --backbone vgg19 --weights none --folds 5 --frames 16 --size 224 \
    --hidden 128 --out "$OUT/surv-fight-vgg19-random"
