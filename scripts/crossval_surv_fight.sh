#!/usr/bin/env bash
# Group-wise 5-fold cross-validation on the surv-fight clips, as quoted in the README and MODEL_CARD.md.
# Usage: scripts/crossval_surv_fight.sh [DATA] [OUT]
# The first three runs are the shipped model's recipe on three fold splits; then
#   python scripts/ship_model.py OUT/crop-motion-s0 OUT/crop-motion-s1 OUT/crop-motion-s2 --data DATA
# and `python scripts/crop_summary.py OUT` compares them with the centre crop's runs (the next three).
set -euo pipefail
DATA=${1:-../shared/data/surv-fight}
OUT=${2:-runs}
XVAD=${XVAD:-.venv/bin/xvad}
LITE0="--backbone efficientnet_lite0 --weights imagenet --folds 5 --frames 16 --size 224 --shrink last"
# Shipped: the defaults of `xvad train` (xvad/config.py): EfficientNet-Lite0 (bundled ImageNet
# weights, offline) at 192 px on two streams, frame differences and optical flow made from each frame's
# square around what moved in its last 16 frames (the motion crop), shrunk to the input first,
# max-pooled; per stream mean and max over time and a linear head, probabilities averaged; each
# training clip also seen mirrored and as a random sub-window (--augment 3); group 5-fold
# cross-validation, the held-out clips also scored as a stream at 8 fps (--stream-fps 8). Then the same
# with the centre crop, the model shipped before.
for SEED in 0 1 2; do
    for CROP in motion center; do
        $XVAD train "$DATA" --crop "$CROP" --seed "$SEED" --out "$OUT/crop-$CROP-s$SEED"
    done
done
# The runs below were measured with the centre crop, before the motion crop shipped.
CENTER="--crop center --stream-fps none"
# The same at other input sizes (the service's speed goal: a backbone pass costs roughly in
# proportion to its pixels), and the model shipped before: 224 px, streams made at the frame's own
# resolution and resized last.
for SEED in 0 1 2; do
    SUFFIX=$([ "$SEED" = 0 ] && echo "" || echo "-s$SEED")
    for SIZE in 160 224; do
        $XVAD train "$DATA" $CENTER --size "$SIZE" --seed "$SEED" --out "$OUT/surv-fight-lite0-motionflow-$SIZE$SUFFIX"
    done
    $XVAD train "$DATA" $CENTER --size 224 --shrink last --seed "$SEED" --out "$OUT/surv-fight-lite0-motionflow-last$SUFFIX"
done
# The shipped recipe with DIS optical flow at its "fast" preset (about five times cheaper than
# medium; the service's speed goal).
for SEED in 0 1 2; do
    SUFFIX=$([ "$SEED" = 0 ] && echo "" || echo "-s$SEED")
    $XVAD train "$DATA" $CENTER --flow fast --seed "$SEED" --out "$OUT/surv-fight-lite0-motionflow-fast$SUFFIX"
done
# The model shipped before that: frame differences only.
for SEED in 0 1 2; do
    SUFFIX=$([ "$SEED" = 0 ] && echo "" || echo "-s$SEED")
    $XVAD train "$DATA" $CENTER --input motion --size 224 --shrink last --seed "$SEED" --out "$OUT/surv-fight-lite0-motion$SUFFIX"
done
# Variants of the recipe shipped before (research/variants.md): the frames as a third stream; a variance
# floor of 0.1 in the heads' batch norm; the standardised features clamped to +-3.
for SEED in 0 1 2; do
    SUFFIX=$([ "$SEED" = 0 ] && echo "" || echo "-s$SEED")
    OLD="$CENTER --size 224 --shrink last --seed $SEED"
    $XVAD train "$DATA" --input motion+flow+rgb $OLD --out "$OUT/surv-fight-lite0-mfr$SUFFIX"
    $XVAD train "$DATA" --norm-eps 0.1 $OLD --out "$OUT/surv-fight-lite0-motionflow-floor$SUFFIX"
    $XVAD train "$DATA" --norm-clamp 3 $OLD --out "$OUT/surv-fight-lite0-motionflow-clamp$SUFFIX"
done
# The paper's layout on the same backbone: frames, average-pooled, GRU(128) + MLP.
$XVAD train "$DATA" --preset paper $LITE0 --hidden 128 --out "$OUT/surv-fight-lite0"
# The paper's VGG19, without ImageNet weights: they cannot be downloaded on an offline machine.
$XVAD train "$DATA" --preset paper --shrink last --weights none --folds 5 --hidden 128 --out "$OUT/surv-fight-vgg19-random"
