#!/usr/bin/env bash
# One lease of a GPU, every measurement the open issues ask for, most valuable first; each phase has its own time
# limit so that a slow one costs only itself. Output: $OUT/log (all of it) and one folder of tables per phase.
#
#   bash bench/gpu_session.sh            # on the device machine (the diffusers wheel carried in .whl/)
#   bash bench/gpu_session.sh second     # the follow-up set: the compiled attention layout, 1 brush, sync checks
#   bash bench/gpu_session.sh third      # still unmeasured (2026-11-25): SDXL / SD3 / Irworobongdo compiled, SD1.5
#                                        # 1 and 16 brushes with the attention layout compiled (about 9 minutes)
#   bash bench/gpu_session.sh fourth     # issue 10 on a GPU: the 4096x2048 one-shot under an 8 GiB cap, an injected
#                                        # out-of-memory, users sharing calls (eager) (about 6 minutes)
#   bash bench/gpu_session.sh fifth      # what changed on 2026-12-01, most valuable first (about 10 minutes): steady
#                                        # frames (slots in flight only, kept layouts) against painting frames, eager
#                                        # and compiled; the 4096x2048 memory rows; SDXL attention compiled
#   bash bench/gpu_session.sh sixth      # run this one first (2026-12-01 evening; about 7 minutes): compiled dynamic
#                                        # shapes (the new default), SD1.5 3 brushes, steady and painting frames,
#                                        # cold; then warm in new processes (time to first frame from process start,
#                                        # the model loaded from a folder), 3 and 1, 8 brushes; what an edit
#                                        # costs an SDXL stream at 1024 (bench/edits.py)
#   bash bench/gpu_session.sh seventh    # then (about 7 minutes): the same 3 brushes with static shapes, for the side
#                                        # by side; 8 brushes in the attention layout; Irworobongdo compiled
#   bash bench/gpu_session.sh eighth     # first in line (2026-12-02; about 9 minutes): the attention layout's
#                                        # batched processors, eager and compiled (one compile for every brush
#                                        # count), SD1.5 1/3/8/16 brushes, SDXL 3, SD3 3 (its prompts 78 tokens)
#   bash bench/gpu_session.sh ninth      # right after eighth, on the same warm machine (about 5 minutes): SD1.5
#                                        # 3 brushes compiled ahead of time (compile_ahead), cold with eager rows
#                                        # beside it, then a new process on the programs' folder: time to the first
#                                        # frame from process start, and the frame rate without CUDA graphs
#
#   DRY_RUN=1 bash bench/gpu_session.sh eighth   # the same phases here, on a CPU: each command with the tiny
#                                        # preset of its family, 3 frames, 1 repeat, caches and models under $OUT;
#                                        # a check that a session's commands run before a GPU lease is spent on them
#                                        # (tests/test_bench.py runs the next sessions in line that way)
#
# The exit status is the number of phases that failed (each is still run). Budget (H100): about 9 minutes. Phases: compiled vs eager SD1.5 headline (3 brushes), the same again on the warm
# cache folder (time to first frames from process start), the region layouts side by side on SD1.5 / SDXL / SD3
# (eager), the host-sync check.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
LOG=$OUT/log
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -z "${DRY_RUN:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
CACHE=/tmp/sd-compile-cache
MODELS=/tmp/sd-models            # full-size random weights saved once, then loaded as a user's folder
DRY=${DRY_RUN:-}
INDUCTOR=/tmp/inductor-cache     # shared by a session's phases
if [ -n "$DRY" ]; then           # nothing shared with a real session's folders
    CACHE=$OUT/compile-cache MODELS=$OUT/models INDUCTOR=$OUT/inductor-cache
    export TORCHINDUCTOR_CACHE_DIR=$INDUCTOR
fi
FAILED=0
dry() {     # a phase's command made small for a CPU: tiny presets, 3 frames, 1 repeat (0 stays 0), 2 s a user
    CMD=()
    while [ $# -gt 0 ]; do
        case $1 in
            --full-size) ;;
            --preset) CMD+=(--preset "tiny-${2%%-*}"); shift ;;   # sd15-hyper: tiny-sd15
            --frames) CMD+=(--frames 3); shift ;;
            --repeats|--oneshot-repeats|--warmup) CMD+=("$1" "$(( $2 > 0 ? 1 : 0 ))"); shift ;;
            --seconds) CMD+=(--seconds 2); shift ;;
            *) CMD+=("$1") ;;
        esac
        shift
    done
}
phase() {   # phase NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    if [ -n "$DRY" ]; then
        dry "$@"
        set -- "${CMD[@]}"
        limit=$(( limit * 3 ))   # a CPU compiles more slowly than the GPU's host
    fi
    local start=$(date +%s)
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    timeout "$limit" "$@" 2>&1 | grep --line-buffered -v -E "Warning|warn\(|^\s*$" | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || FAILED=$(( FAILED + 1 ))
    echo "=== $name: exit $rc after $(( $(date +%s) - start )) s" | tee -a "$LOG"
}
trap 'echo "=== $FAILED phase(s) failed" | tee -a "$LOG"; exit $FAILED' EXIT
{ [ -n "$DRY" ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee -a "$LOG"

if [ "${1:-first}" = second ]; then
    export TORCHINDUCTOR_CACHE_DIR=$INDUCTOR     # shared by the phases: the sync check reuses the graphs
    phase sd15-attention-compiled 190 python3 bench/stream.py --full-size --preset sd15 --layers 3,8 \
        --regions attention --frames 20 --oneshot-repeats 0 --compile
    phase sync-check-eager 30 python3 bench/sync_check.py --full-size --preset sd15 --layers 3
    phase sync-check-compiled 45 python3 bench/sync_check.py --full-size --preset sd15 --layers 3 --regions attention \
        --compile
    phase sd15-one-brush-compiled 95 python3 bench/stream.py --full-size --preset sd15 --layers 1 --regions latent \
        --frames 30 --oneshot-repeats 0 --compile
    exit
fi
if [ "${1:-first}" = sixth ]; then
    export TORCHINDUCTOR_CACHE_DIR=$INDUCTOR
    phase sd15-latent-3-dynamic-cold 200 python3 bench/stream.py --full-size --preset sd15 --layers 3 \
        --regions latent --frames 20 --oneshot-repeats 2 --compile --compile-shapes dynamic --painting \
        --compile-cache "$CACHE" --model-dir "$MODELS"
    phase sd15-latent-3-dynamic-warm 60 python3 bench/stream.py --full-size --preset sd15 --layers 3 \
        --regions latent --frames 20 --oneshot-repeats 2 --compile --compiled-only --compile-shapes dynamic \
        --compile-cache "$CACHE" --model-dir "$MODELS"
    phase sd15-latent-1-8-dynamic-warm 90 python3 bench/stream.py --full-size --preset sd15 --layers 1,8 \
        --regions latent --frames 20 --oneshot-repeats 1 --compile --compiled-only --compile-shapes dynamic \
        --compile-cache "$CACHE" --model-dir "$MODELS"
    phase edits-sdxl-1024 90 python3 bench/edits.py --full-size --preset sdxl --sizes 1024 --brushes 3,8 --edits 10
    exit
fi
if [ "${1:-first}" = seventh ]; then
    export TORCHINDUCTOR_CACHE_DIR=$INDUCTOR
    phase sd15-latent-3-static-cold 160 python3 bench/stream.py --full-size --preset sd15 --layers 3 \
        --regions latent --frames 20 --oneshot-repeats 0 --compile --compiled-only --compile-shapes static \
        --model-dir "$MODELS"
    phase sd15-attention-8-dynamic 120 python3 bench/stream.py --full-size --preset sd15 --layers 8 \
        --regions attention --frames 20 --oneshot-repeats 0 --compile --compiled-only --compile-shapes dynamic \
        --painting --model-dir "$MODELS"
    phase irworobongdo-compiled-dynamic 150 python3 bench/methods.py --full-size --preset sd15 \
        --methods semanticdraw --regions latent,attention --repeats 3 --compile --model-dir "$MODELS"
    exit
fi
if [ "${1:-first}" = eighth ]; then
    export TORCHINDUCTOR_CACHE_DIR=$INDUCTOR
    # the phase limits add up to 490 s: one device command, and with ninth inside one lease's 15 minutes
    phase sd15-attention-1-3-8-16 210 python3 bench/stream.py --full-size --preset sd15 --layers 1,3,8,16 \
        --regions attention --frames 15 --oneshot-repeats 1 --compile --compile-shapes dynamic --painting
    phase sdxl-attention-3 150 python3 bench/stream.py --full-size --preset sdxl --layers 3 \
        --regions attention --frames 10 --oneshot-repeats 1 --compile --compile-shapes dynamic
    phase sd3-attention-3 130 python3 bench/stream.py --full-size --preset sd3 --layers 3 \
        --regions attention --frames 10 --oneshot-repeats 1 --compile --compile-shapes dynamic
    exit
fi
if [ "${1:-first}" = ninth ]; then
    export TORCHINDUCTOR_CACHE_DIR=$INDUCTOR
    # the phase limits add up to 300 s: with eighth, inside one lease's 15 minutes
    phase sd15-ahead-cold 240 python3 bench/stream.py --full-size --preset sd15 --layers 3 --regions latent \
        --frames 20 --oneshot-repeats 1 --compile-ahead --compile-cache "$CACHE-ahead" --model-dir "$MODELS"
    phase sd15-ahead-warm 60 python3 bench/stream.py --full-size --preset sd15 --layers 3 --regions latent \
        --frames 20 --oneshot-repeats 1 --compile-ahead --compiled-only --compile-cache "$CACHE-ahead" \
        --model-dir "$MODELS"
    exit
fi
if [ "${1:-first}" = fifth ]; then
    export TORCHINDUCTOR_CACHE_DIR=$INDUCTOR
    phase sd15-latent-3-compiled-painting 230 python3 bench/stream.py --full-size --preset sd15 --layers 3 \
        --regions latent --frames 20 --oneshot-repeats 2 --compile --painting
    phase sd15-attention-8-compiled-painting 160 python3 bench/stream.py --full-size --preset sd15 --layers 8 \
        --regions attention --frames 20 --oneshot-repeats 0 --compile --painting
    phase memory-4096x2048 120 python3 bench/memory.py --full-size --preset sd15 --cap-gib 8 --inject-oom
    phase sdxl-attention-3-compiled-painting 200 python3 bench/stream.py --full-size --preset sdxl --layers 3 \
        --regions attention --frames 10 --oneshot-repeats 0 --compile --painting
    exit
fi
if [ "${1:-first}" = fourth ]; then
    phase memory-4096x2048 240 python3 bench/memory.py --full-size --preset sd15 --cap-gib 8 --inject-oom
    phase sharing-eager 130 python3 bench/sharing.py --full-size --preset sd15 --users 1,2,4 --seconds 8
    phase sharing-eager-attention 100 python3 bench/sharing.py --full-size --preset sd15 --users 2,4 --layers 3 \
        --regions attention --seconds 8
    exit
fi
if [ "${1:-first}" = third ]; then
    export TORCHINDUCTOR_CACHE_DIR=$INDUCTOR
    phase sdxl-attention-compiled 200 python3 bench/stream.py --full-size --preset sdxl --layers 3 --regions attention \
        --frames 10 --oneshot-repeats 2 --compile
    phase sd3-attention-compiled 150 python3 bench/stream.py --full-size --preset sd3 --layers 3 --regions attention \
        --frames 10 --oneshot-repeats 2 --compile
    phase irworobongdo-compiled 120 python3 bench/methods.py --full-size --preset sd15 --methods semanticdraw \
        --repeats 3 --compile
    phase sd15-attention-1-16-compiled 110 python3 bench/stream.py --full-size --preset sd15 --layers 1,16 \
        --regions attention --frames 20 --oneshot-repeats 0 --compile
    exit
fi
phase sd15-compiled 235 python3 bench/stream.py --full-size --preset sd15 --layers 3 --regions latent --frames 30 \
    --compile --compile-cache "$CACHE"
phase sd15-compiled-warm 75 python3 bench/stream.py --full-size --preset sd15 --layers 3 --regions latent --frames 30 \
    --compile --compiled-only --compile-cache "$CACHE"
phase sd15-regions 90 python3 bench/stream.py --full-size --preset sd15 --layers 3,8,16 --regions latent,attention \
    --frames 15 --oneshot-repeats 1
phase sdxl-regions 75 python3 bench/stream.py --full-size --preset sdxl --layers 3 --regions latent,attention \
    --frames 8 --oneshot-repeats 1
phase sd3-regions 75 python3 bench/stream.py --full-size --preset sd3 --layers 3 --regions latent,attention \
    --frames 8 --oneshot-repeats 1
phase sync-check 25 python3 bench/sync_check.py --full-size --preset sd15 --layers 3
exit
