#!/bin/sh
# scripts/demo.sh <anyref binary> — `make demo`: the embedded end-to-end demo.
#  1. `anyref data shapes` writes the synthetic shapes world in the real file
#     formats into runs/shapes-data (about 1 s; regenerated every time, it is
#     a pure function of the seed);
#  2. `anyref train configs/shapes-tiny.cfg` trains a tiny AnyRef from scratch
#     on text, box, image-crop and audio references and region captions, read
#     live through the real loaders (progress bar; runs/shapes-tiny);
#  3. `anyref eval` (every suite: answers generated, masks from the generated
#     [SEG]s) prints gIoU / cIoU per set, split and reference type beside the
#     empty-mask and whole-image baselines, AVSBench J / F per video, and the
#     region captions' METEOR (approx.), CIDEr-D, BLEU and exact match; writes
#     runs/shapes-tiny/summary.json, results.jsonl, examples.png (2 examples
#     per set and split: image and reference, prediction, ground truth,
#     answer) and overlays/ (the first 2 samples of each set and split);
#  4. `anyref plot` draws the loss curves into runs/shapes-tiny/loss.png.
# About 4 minutes on 2 cores (242 s measured). DEMO_STEPS=N trains N steps instead (quicker
# look, worse masks).
set -eu
bin=${1:-build/anyref}
run=runs/shapes-tiny
over=""
[ -n "${DEMO_STEPS:-}" ] && over="train.steps=$DEMO_STEPS"
start=$(date +%s)
echo "== 1/4 the shapes world (anyref data shapes)"
"$bin" data shapes --out runs/shapes-data
echo "== 2/4 training (anyref train configs/shapes-tiny.cfg $over)"
# shellcheck disable=SC2086
"$bin" train configs/shapes-tiny.cfg $over
echo "== 3/4 evaluation (anyref eval)"
# shellcheck disable=SC2086
"$bin" eval configs/shapes-tiny.cfg $over --examples 2 --overlays 2
echo "== 4/4 loss curves (anyref plot)"
"$bin" plot "$run"
end=$(date +%s)
echo
echo "demo done in $((end - start)) s: $run/metrics.jsonl, $run/loss.png, $run/examples.png, $run/summary.json, $run/overlays/"
echo "try: $bin infer --checkpoint $run --image runs/shapes-data/refer_seg/images/mscoco/images/train2014/\$(ls runs/shapes-data/refer_seg/images/mscoco/images/train2014 | head -1) --text \"red circle\""
