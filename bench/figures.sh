#!/usr/bin/env bash
# Every figure quoted in the issues' closing notes, in one run, on an otherwise idle machine.
#   bench/figures.sh [OUT]          (default OUT=runs/figures; each step's log is OUT/NAME.log)
# Steps whose output already exists are skipped, so an interrupted run resumes.
# Set STEPS="demo small quant serve" to run a subset.
set -euo pipefail
OUT=${1:-runs/figures}
STEPS=${STEPS:-"demo small quant serve"}
EDGEVLM=${EDGEVLM:-.venv/bin/edgevlm}
mkdir -p "$OUT"

step() {  # step NAME MARKER COMMAND...: run COMMAND unless MARKER exists, log to OUT/NAME.log
    local name=$1 marker=$2
    shift 2
    if [[ -e $marker ]]; then echo "== $name: done before ($marker)"; return; fi
    echo "== $name: $*"
    local start=$SECONDS
    "$@" 2>&1 | tee "$OUT/$name.log"
    echo "== $name: $((SECONDS - start)) s"
}

if [[ $STEPS == *demo* ]]; then
    # The demo model: runtime vs HF transformers on one workload (issue 4's demo-model target).
    step export-demo "$OUT/demo-fp32/manifest.json" \
        "$EDGEVLM" export --model demo/model --out "$OUT/demo-fp32" --max-seq-len 2048
    step engine-demo "$OUT/engine-demo/bench_engine.json" \
        "$EDGEVLM" bench engine --model demo/model --bundle "$OUT/demo-fp32" --out "$OUT/engine-demo"
fi

if [[ $STEPS == *small* ]]; then
    # `small` (~0.5 B, random weights): bandwidth floor, batching, TTFT (issue 4).
    step make-small "$OUT/small/config.json" "$EDGEVLM" bench make-model small --out "$OUT/small"
    step export-small "$OUT/small-fp32/manifest.json" \
        "$EDGEVLM" export --model "$OUT/small" --out "$OUT/small-fp32" --max-batch 16 --max-seq-len 1024
    step engine-small "$OUT/engine-small-fp32/bench_engine.json" \
        "$EDGEVLM" bench engine --model "$OUT/small" --bundle "$OUT/small-fp32" --out "$OUT/engine-small-fp32" \
        --decode-tokens 32 --repeats 2  # HF at 16 concurrent x 64 tokens alone would take ~4 min
fi

if [[ $STEPS == *quant* ]]; then
    # int8 / int4 of `small` against its fp32 bundle (issue 7). Random weights answer nothing, so
    # the accuracy gate (scored on the demo model in the test suite) is recorded, not enforced.
    for mode in int8 int4; do
        step "quantize-small-$mode" "$OUT/small-$mode/manifest.json" \
            "$EDGEVLM" quantize --bundle "$OUT/small-fp32" --out "$OUT/small-$mode" --mode "$mode" \
            --samples 8 --eval-limit 5 --allow-accuracy-drop
        step "engine-small-$mode" "$OUT/engine-small-$mode/bench_engine.json" \
            "$EDGEVLM" bench engine --bundle "$OUT/small-$mode" --out "$OUT/engine-small-$mode" \
            --decode-tokens 32 --repeats 2
    done
    step compare-small "$OUT/compare-small/bench_compare.json" \
        "$EDGEVLM" bench compare "$OUT"/engine-small-{fp32,int8,int4}/bench_engine.json --out "$OUT/compare-small"
    # The same three bundles in one process, repeats interleaved: ratios that machine drift between
    # the runs above cannot skew (issue 7's figures).
    step interleaved-small "$OUT/interleaved-small/bench_compare.json" \
        "$EDGEVLM" bench compare --bundles "$OUT"/small-{fp32,int8,int4} --repeats 5 --out "$OUT/interleaved-small"
    # The demo model's accuracy through each quantized bundle (the gate's own figures).
    for mode in int8 int4; do
        step "quantize-demo-$mode" "$OUT/demo-$mode/manifest.json" \
            "$EDGEVLM" quantize --bundle "$OUT/demo-fp32" --out "$OUT/demo-$mode" --mode "$mode"
    done
fi

if [[ $STEPS == *serve* ]]; then
    # The reference article's load table (issue 5): the runtime up to 64 concurrent requests, then the
    # naive design (HF generate, one request at a time) up to 16 (beyond, it only queues longer).
    # Every level gets new images (bench/serve_workload.py): `upload` one question per image,
    # `chat` four questions per image (the image cache serves the follow-ups).
    step serve "$OUT/serve/bench-serve.json" \
        "$EDGEVLM" bench serve --bundle "$OUT/demo-fp32" --concurrency 1,4,8,16,32,64 --max-queue 256 \
        --out "$OUT/serve"
    step serve-chat "$OUT/serve-chat/bench-serve.json" \
        "$EDGEVLM" bench serve --bundle "$OUT/demo-fp32" --concurrency 1,4,8,16,32,64 --max-queue 256 \
        --workload chat --out "$OUT/serve-chat"
    # Fixed 48-token answers (vLLM-style min_tokens), so decoding, which batching speeds up, dominates.
    step serve-chat48 "$OUT/serve-chat48/bench-serve.json" \
        "$EDGEVLM" bench serve --bundle "$OUT/demo-fp32" --concurrency 1,4,8,16,32,64 --max-queue 256 \
        --workload chat --max-tokens 48 --min-tokens 48 --out "$OUT/serve-chat48"
    # Issue 5's scaling target (tokens/s at 16 vs 1), measured in rounds that alternate the two levels
    # (medians of 3), with answers of 48 and of 256 tokens.
    for tokens in 48 256; do
        step "serve-scaling-$tokens" "$OUT/serve-scaling-$tokens/bench-serve.json" \
            "$EDGEVLM" bench serve --bundle "$OUT/demo-fp32" --concurrency 1,16 --requests 32 --repeats 3 \
            --max-queue 256 --workload chat --max-tokens "$tokens" --min-tokens "$tokens" --out "$OUT/serve-scaling-$tokens"
    done
    # The same with a new image for every request (no image cache, no shared prefill): each answer
    # also pays its own vision call and prefill, which batching cannot share on a CPU.
    step serve-scaling-upload-256 "$OUT/serve-scaling-upload-256/bench-serve.json" \
        "$EDGEVLM" bench serve --bundle "$OUT/demo-fp32" --concurrency 1,16 --requests 32 --repeats 3 \
        --max-queue 256 --workload upload --max-tokens 256 --min-tokens 256 --out "$OUT/serve-scaling-upload-256"
    step serve-hf "$OUT/serve-hf/bench-serve.json" \
        "$EDGEVLM" bench serve --bundle "$OUT/demo-fp32" --concurrency 1,4,8,16 --baseline hf \
        --out "$OUT/serve-hf"
fi
echo "figures in $OUT"
