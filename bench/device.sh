#!/usr/bin/env bash
# The one entry point on a GPU machine: configure and build (cuDNN from PyTorch's venv or the CUDA
# toolkit), run the GPU tests, run the benchmarks, and print a short table last.
#
#   bash bench/device.sh [full|quick|tests|bench|vae|vae-encode|release-official|release-comfyui|
#                         release-i2v|release-ti2v|release-limit|release-fp8|compare|offload|
#                         vae-cache|fp8|hunyuan15|hunyuan15-dit|hunyuan15-rest|
#                         hunyuan15-release|latency|fp8-attention|overlap|ti2v-small|graphs]
#                                                          (default: full)
#
# compare: tests, then the DiT benchmarks of the README (A14B 480p and 720p, TI2V-5B 704p,
# Wan2.1-1.3B 480p) for this tree and for the source tree in $FISDIT_BASELINE (another commit:
# `git archive REF CMakeLists.txt include src tools/fisdit | tar -x -C DIR`, built without its
# tests), each configuration run by both binaries back to back, and a table of both and their
# ratio last (COMPARE_SETS picks the configurations; a14b-480p-fp8 and ti2v-512-fp8 run
# --precision fp8 at A14B 480p and TI2V-5B 512x512x17).
# vae: tests + VAE decode benchmarks (fisdit bench --vae, random weights of the real shapes; Wan
# 2.1 480p / 720p, Wan 2.2 1280x704x121, HunyuanVideo 1.5 848x480x121 tiled, each in bf16 and
# fp32, and an op profile);
# vae-encode: tests + VAE encode benchmarks (81 frames at 480p/720p, Wan 2.2 121 frames at 704p).
# release-official / release-comfyui / release-i2v / release-ti2v: tests, then
# bench/make_random_release.py writes a full-size Wan2.2-T2V-A14B (release-i2v: I2V-A14B,
# release-ti2v: TI2V-5B, official layout, with a first-frame PNG) release of random weights
# (+ rank-64 LoRAs) in that file layout and `fisdit generate` runs it end to end on the GPU (t2v:
# 480p with --compare-dense, 720p; comfyui: 480p; i2v: 480p, 720p; ti2v: 1280x704, 121 frames,
# from the image in 4 steps with --compare-dense, and text-only with the official 50-step recipe;
# RELEASE_QUICK=1: the 4-step image run alone, twice, the second with the VAE's tuning cache).
# release-fp8: tests, `fisdit quality` of the bundled model on the GPU (bf16 dense, balanced, fp8,
# fp8 + balanced), then the official T2V release at 480p with --precision fp8 (dense and balanced,
# each with --compare-dense against bf16 dense) and 720p fp8 + balanced.
# release-limit: tests, then the official T2V release at 480p resident and at 480p and 720p with
# --gpu-memory-limit 24 (generate end to end, FIS balanced).
# vae-cache: the Wan 2.1 720p decode cold (no warm-up) in two processes sharing a fresh tuning
# cache, then with the cache off.
# offload: the block-offload tests with and without FISDIT_CUDA_SYNC, then A14B 480p and 720p
# resident and with --gpu-memory-limit 24 (bench, back to back) and their ratio
# (OFFLOAD_LIMIT=GiB, OFFLOAD_PRECISION=fp8 and OFFLOAD_SIZES="832x480" change the limit, the
# precision and the sizes).
# fp8: tests, `fisdit bench --attention` (A14B heads, 720p and 480p, bf16 and fp8), then A14B
# 480p (loops, --compare-dense; bf16, fp8-gemm, fp8; FIS off/balanced with MagCache-force off/on)
# and 720p (per step type; bf16, fp8; FIS off/balanced) in one process each, `fisdit quality` of
# the bundled model (dense, balanced, fp8-gemm, fp8, fp8-balanced), and an op profile of a 480p
# forward in bf16 and fp8.
# hunyuan15: tests, HunyuanVideo 1.5 480p I2V step-distilled DiT benchmarks (121 and 81 frames,
# dense / balanced / fast per step type), the official PyTorch forward timed beside them when
# ref/HunyuanVideo-1.5 (a checkout holding hyvideo/) is carried, and the tiled VAE decode.
# hunyuan15-dit and hunyuan15-rest split hunyuan15 in two for a per-call time limit too short for
# all of it: the build, the tests and the DiT benchmarks; then the official forward and the VAE
# decode, reusing the build of the first on the same machine.
# hunyuan15-release: tests, then a full-size HunyuanVideo 1.5 release of random weights
# (bench/make_random_hunyuan15_release.py, official layout) generated end to end at 480p from a
# first frame (121 and 81 frames, 8 steps, dense and FIS balanced), and the text encoder on a
# prompt past its 1000-token limit (HY15_QUICK=1: only 121 frames with FIS balanced, twice: the
# first process searches the VAE's cuDNN algorithms, the second reads them from the tuning cache).
# latency: tests, the Wan VAE decode at several latent frames per chunk (FISDIT_VAE_DECODE_CHUNK;
# Wan 2.1 480p (CHUNKS_480P, default "1 auto 3") and 720p (CHUNKS_720P, "1 2"), Wan 2.2 1280x704x121
# (CHUNKS_704P, "1 2") and 512x512x17 (1 and auto)), then random TI2V-5B and T2V-A14B
# releases generated with --repeat (models loaded once; the later runs are the warm latency):
# TI2V-5B 1280x704x121 and 512x512x17 from an image in 4 steps (FIS balanced; 512x512 also fp8),
# A14B 81 frames in 4 steps at 480p (bf16 and fp8, FIS balanced) and 720p (fp8 + balanced).
# LATENCY_PARTS="vae ti2v a14b" picks parts, A14B_FP8=0 drops the A14B fp8 runs; SKIP_TESTS=1 skips the GPU tests (any mode).
# fp8-attention: tests, the fp8 self-attention kernels side by side (`bench --attention`: the own
# kernel's variants, cuDNN's) at A14B 720p and 480p (81, 17 and 5 frames) and TI2V-5B 512x512x17
# (FA8_SHAPES picks among a14b-720p a14b-480p a14b-480p-17f a14b-480p-5f ti2v-512), then A14B
# 480p loops in fp8 with the own kernel and with cuDNN's, TI2V-5B 512x512x17 loops and A14B 720p.
# overlap: a random T2V-A14B release (its experts' files shared) generated one-shot at 480p from a
# cold page cache, with FISDIT_OVERLAP_LOAD=0, 1, and 1 with FISDIT_UPLOAD_FIRST_EXPERT=1, twice
# each: what preparing the first expert beside the text stage (and uploading it there too) and
# uploading the second beside the first one's steps save (the second expert's files are the
# first's, so it is read warm); the final latents compared byte for byte (OVERLAP_ROUNDS="1":
# one round).
# ti2v-small: a random TI2V-5B release generated at 512x512x17 from an image (4 steps, FIS
# balanced) with --repeat 4 in bf16 and fp8, one process each, twice alternating (per-step times of
# the last run), an op profile of a generate run in each precision, and the bench loops of the
# same size (with the host's time to queue a forward).
# graphs: the recorded-forward tests (CudaGraphs*), then the 512x512x17 4-step loops of TI2V-5B
# and Wan2.1-1.3B op by op and as CUDA graphs side by side (bench --graphs off,on, bf16 and fp8,
# FIS off and balanced, --compare-dense: a recorded row's rel. L2 is 0 where it replays the same
# ops), and a random TI2V-5B release generated at 512x512x17 from an image (--repeat 4, bf16 and
# fp8) with FISDIT_CUDA_GRAPHS=0 and 1 (GRAPHS_BENCH=0 / GRAPHS_GENERATE=0 skip a part).
# TEST_FILTER=PATTERN runs only those GPU tests (a gtest filter), in any mode.
# quick: tests + small benchmarks (Wan2.1-1.3B 480p, A14B 480p); bench: benchmarks only.
# Logs go to $OUT (the device tool's folder) or /tmp/fisdit-device. Header-only dependencies and
# GoogleTest may travel in .deps/ (a CMake prefix) when the machine has no -dev packages.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-full}
OUT=${OUT:-/tmp/fisdit-device}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
say() { echo "$@" | tee -a "$SUMMARY"; }
# One `fisdit generate` on the GPU, logged to release.log and its summary to gen_LABEL.json; the
# log lines matching PATTERN (an extended regex of line starts) go to the summary.
gen_run() {  # label, pattern, then generate arguments
  local label=$1 pattern=$2; shift 2
  local t0=$(date +%s)
  echo "=== $label: fisdit generate $*" >>"$OUT/release.log"
  timeout "${GEN_LIMIT:-590}" ./build-device/fisdit generate --device cuda \
    --frames-dir "/tmp/fisdit-frames-$label" --summary-json "$OUT/gen_$label.json" "$@" \
    >>"$OUT/release.log" 2>&1 || { tail -8 "$OUT/release.log"; say "generate $label FAILED"; }
  sed -n "/^=== $label:/,\$p" "$OUT/release.log" | grep -E "^($pattern)" | sed "s/^/  $label: /" |
    tee -a "$SUMMARY"
  say "generate $label: $(( $(date +%s) - t0 )) s wall"
  rm -rf "/tmp/fisdit-frames-$label"
}
# One `fisdit bench --vae` run; its result table goes to the summary.
vbench() {  # label, limit in seconds, then fisdit bench --vae arguments
  local label=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" ./build-device/fisdit bench --device cuda --label "$label" --vae "$@" \
    >"$OUT/vae_$label.log" 2>&1 || { tail -5 "$OUT/vae_$label.log"; say "vae bench $label FAILED"; }
  grep -A2 "^fisdit bench --vae" "$OUT/vae_$label.log" | tee -a "$SUMMARY"
  say "vae bench $label: $(( $(date +%s) - t0 )) s"
}

[ -d /usr/local/cuda/bin ] && export PATH=/usr/local/cuda/bin:$PATH
CUDNN_ROOT=${FISDIT_CUDNN_ROOT:-$(python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2>/dev/null || true)}
[ -n "$CUDNN_ROOT" ] && export LD_LIBRARY_PATH=$CUDNN_ROOT/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee -a "$SUMMARY"
say "cuDNN root: ${CUDNN_ROOT:-<toolkit>}; nvcc: $(nvcc --version | tail -1)"

# ---- build
if { [ "$MODE" != "bench" ] && [ "$MODE" != "hunyuan15-rest" ]; } || [ ! -x build-device/fisdit ]; then
  t0=$(date +%s)
  gen=""; command -v ninja >/dev/null && gen="-G Ninja"
  prefix=""; [ -d .deps ] && prefix="-DCMAKE_PREFIX_PATH=$PWD/.deps"
  # The pipeline (tokenizer, media, generate) where its -dev packages are, figures where cairo is.
  figures=OFF
  pkg-config --exists cairo 2>/dev/null && figures=ON
  configure() {  # source tree, build directory, extra flags
    local src=$1 dir=$2; shift 2
    cmake -S "$src" -B "$dir" $gen -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a -DFISDIT_MP4=OFF -DFISDIT_SERVE=AUTO \
      -DFISDIT_FIGURES=$figures ${CUDNN_ROOT:+-DFISDIT_CUDNN_ROOT=$CUDNN_ROOT} $prefix "$@" >"$OUT/cmake.log" 2>&1
  }
  build_tree() {  # source tree, build directory, extra cmake flags (one word), targets
    local src=$1 dir=$2 flags=$3; shift 3
    configure "$src" "$dir" $flags -DFISDIT_PIPELINE=ON ||
      { rm -rf "$dir"; configure "$src" "$dir" $flags -DFISDIT_PIPELINE=OFF; } ||
      { tail -30 "$OUT/cmake.log"; say "CONFIGURE FAILED ($src)"; exit 1; }
    grep "fisdit:" "$OUT/cmake.log" | tee -a "$SUMMARY"
    cmake --build "$dir" --target "$@" -j "$(nproc)" >"$OUT/build.log" 2>&1 ||
      { grep -B2 -A12 -m5 "error" "$OUT/build.log" | head -80; say "BUILD FAILED ($src)"; exit 1; }
  }
  build_tree . build-device "" fisdit fisdit_cuda_tests
  if [ "$MODE" = "compare" ]; then
    [ -d "${FISDIT_BASELINE:-}" ] || { say "compare needs FISDIT_BASELINE=DIR (a source tree)"; exit 1; }
    build_tree "$FISDIT_BASELINE" "$FISDIT_BASELINE/build-device" -DFISDIT_TESTS=OFF fisdit
  fi
  say "build: $(( $(date +%s) - t0 )) s"
fi

# ---- GPU tests
if [ "$MODE" != "bench" ] && [ "$MODE" != "offload" ] && [ "$MODE" != "vae-cache" ] && [ "$MODE" != "hunyuan15-rest" ] &&
  [ "${SKIP_TESTS:-0}" != 1 ]; then
  t0=$(date +%s)
  FISDIT_CUDA_SYNC=1 timeout "${TEST_LIMIT:-590}" ./build-device/fisdit_cuda_tests --gtest_color=no ${TEST_FILTER:+--gtest_filter="$TEST_FILTER"} \
    >"$OUT/tests.log" 2>&1
  rc=$?
  grep -E "rel L2|declined|tensor-memory" "$OUT/tests.log" | sort -u | head -40
  grep -E "^\[  FAILED  \]|Failure|Expected|Which is|actual|error" "$OUT/tests.log" | head -40
  say "tests: $(grep -E '^\[  PASSED  \]' "$OUT/tests.log" || echo 'not all passed') $(grep -E '^\[  FAILED  \] [0-9]+ test' "$OUT/tests.log") (rc $rc, $(( $(date +%s) - t0 )) s)"
fi
[ "$MODE" = "tests" ] && { cat "$SUMMARY"; exit 0; }

# ---- this tree against a baseline tree: the same benchmarks, back to back per configuration
if [ "$MODE" = "compare" ]; then
  : >"$OUT/compare.txt"
  pair() {  # label, then fisdit bench arguments
    local label=$1; shift
    for side in baseline current; do
      local bin=./build-device/fisdit
      [ "$side" = baseline ] && bin=$FISDIT_BASELINE/build-device/fisdit
      local t0=$(date +%s)
      "$bin" bench --device cuda --random-weights --label "$label" "$@" >"$OUT/compare_${label}_$side.log" 2>&1 ||
        { tail -5 "$OUT/compare_${label}_$side.log"; say "bench $label ($side) FAILED"; }
      grep "^RESULT" "$OUT/compare_${label}_$side.log" | sed "s/^RESULT|/$side|/" >>"$OUT/compare.txt"
      say "bench $label ($side): $(( $(date +%s) - t0 )) s"
    done
  }
  # COMPARE_SETS picks the configurations, in order (a name given twice runs twice).
  for set in ${COMPARE_SETS:-a14b-480p a14b-720p ti2v-5b-704p wan21-1.3b-480p}; do
    case $set in
      a14b-480p) pair a14b-480p --model-config wan2.2-t2v-a14b --size 832x480 --frames 81 --steps 4 \
        --warmup 1 --repeats 1 ;;
      a14b-720p) pair a14b-720p --model-config wan2.2-t2v-a14b --size 1280x720 --frames 81 --steps 4 \
        --fis off,balanced --warmup 1 --repeats 1 --mode per-step-type ;;
      ti2v-5b-704p) pair ti2v-5b-704p --model-config wan2.2-ti2v-5b --size 1280x704 --frames 121 \
        --steps 4 --warmup 1 --repeats 2 ;;
      wan21-1.3b-480p) pair wan21-1.3b-480p --model-config wan2.1-t2v-1.3b --size 832x480 --frames 81 \
        --steps 4 --warmup 1 --repeats 3 ;;
      a14b-480p-fp8) pair a14b-480p-fp8 --model-config wan2.2-t2v-a14b --size 832x480 --frames 81 \
        --steps 4 --fis off,balanced --precision fp8 --warmup 1 --repeats 1 ;;
      ti2v-512-fp8) pair ti2v-512-fp8 --model-config wan2.2-ti2v-5b --size 512x512 --frames 17 \
        --steps 4 --fis off,balanced --precision fp8 --warmup 2 --repeats 5 ;;
      *) say "compare: unknown set '$set'" ;;
    esac
  done
  # label | setting | baseline ms/step | current ms/step | current / baseline
  {
    echo
    printf "%-16s %-9s %14s %14s %9s\n" model fis "baseline ms" "current ms" "ratio"
    awk -F'|' '$1 == "baseline" { base[$2 "|" $5] = $6 }
               $1 == "current" && ($2 "|" $5) in base {
                 printf "%-16s %-9s %14.1f %14.1f %9.3f\n", $2, $5, base[$2 "|" $5], $6, $6 / base[$2 "|" $5] }' \
      "$OUT/compare.txt"
  } | tee -a "$SUMMARY"
  exit 0
fi

# ---- block offload: the streaming tests, also with copies overlapping compute (no FISDIT_CUDA_SYNC),
# then A14B 480p and 720p resident and under --gpu-memory-limit 24, back to back per size
if [ "$MODE" = "offload" ]; then
  for sync in 1 0; do
    FISDIT_CUDA_SYNC=$sync ./build-device/fisdit_cuda_tests --gtest_color=no --gtest_filter='CudaOffload*' \
      >"$OUT/offload_tests_sync$sync.log" 2>&1
    grep -E "^offload:|OK \]|FAILED|Failure|Which is" "$OUT/offload_tests_sync$sync.log" | head -20 |
      sed "s/^/FISDIT_CUDA_SYNC=$sync: /" | tee -a "$SUMMARY"
  done
  : >"$OUT/offload.txt"
  side() {  # label, side name, then fisdit bench arguments
    local label=$1 name=$2; shift 2
    local t0=$(date +%s)
    ./build-device/fisdit bench --device cuda --random-weights --label "$label" "$@" \
      >"$OUT/offload_${label}_$name.log" 2>&1 || { tail -5 "$OUT/offload_${label}_$name.log"; say "bench $label ($name) FAILED"; }
    grep -E "gpu-memory-limit|^bench " "$OUT/offload_${label}_$name.log" | tee -a "$SUMMARY"
    grep "^RESULT" "$OUT/offload_${label}_$name.log" | sed "s/^RESULT|/$name|/" >>"$OUT/offload.txt"
    say "bench $label ($name): $(( $(date +%s) - t0 )) s"
  }
  limit=${OFFLOAD_LIMIT:-24}
  for size in ${OFFLOAD_SIZES:-832x480 1280x720}; do
    args=(--model-config wan2.2-t2v-a14b --size "$size" --frames 81 --steps 4 --fis off,balanced
      --precision "${OFFLOAD_PRECISION:-bf16}" --warmup 1 --repeats 1 --mode per-step-type)
    side "a14b-$size" resident "${args[@]}"
    side "a14b-$size" limited "${args[@]}" --gpu-memory-limit "$limit"
  done
  {
    echo
    printf "%-16s %-13s %13s %13s %9s %11s\n" model fis "resident ms" "limit-$limit ms" "ratio" "peak GiB"
    awk -F'|' '$1 == "resident" { base[$2 "|" $5] = $6 }
               $1 == "limited" && ($2 "|" $5) in base {
                 printf "%-16s %-13s %13.1f %13.1f %9.3f %11s\n", $2, $5, base[$2 "|" $5], $6, $6 / base[$2 "|" $5], $11 }' \
      "$OUT/offload.txt"
  } | tee -a "$SUMMARY"
  exit 0
fi

# ---- HunyuanVideo 1.5: a full-size release of random weights in the official download layout
# (bench/make_random_hunyuan15_release.py), generated end to end from a first frame: 480p I2V
# step-distilled, 8 steps, 121 and 81 frames, dense and FIS balanced; then the text encoder alone
# on a prompt past the 1000-token limit, streamed and resident.
if [ "$MODE" = "hunyuan15-release" ]; then
  REL=${FISDIT_RELEASE_DIR:-/tmp/fisdit-release}/hunyuan15
  rm -rf "${FISDIT_RELEASE_DIR:-/tmp/fisdit-release}"
  t0=$(date +%s)
  python3 bench/make_random_hunyuan15_release.py "$REL" >>"$OUT/release.log" 2>&1 ||
    { tail -20 "$OUT/release.log"; say "make_random_hunyuan15_release FAILED"; exit 1; }
  say "random HunyuanVideo 1.5 release: $(( $(date +%s) - t0 )) s, $(du -shL "$REL" | cut -f1)"
  gen() {  # label, then generate arguments
    local label=$1; shift
    gen_run "$label" "settings|loaded|times|GPU memory|fidelity" --model "$REL" \
      --image "$REL/first_frame.png" --seed 7 \
      --prompt 'a shop window at dusk, a neon sign reads "OPEN", people walk past' "$@"
  }
  if [ "${HY15_QUICK:-0}" = 1 ]; then  # FIS balanced at 121 frames only: cold, then warm
    gen 480p-121f-balanced-cold --frames 121 --fis balanced
    gen 480p-121f-balanced --frames 121 --fis balanced
    exit 0
  fi
  gen 480p-121f-dense --frames 121 --fis off
  gen 480p-121f-balanced --frames 121 --fis balanced
  gen 480p-81f-dense --frames 81 --fis off
  gen 480p-81f-balanced --frames 81 --fis balanced --compare-dense
  long=$(for i in $(seq 600); do printf 'cat piano '; done)
  for mode in "" --resident; do
    ./build-device/fisdit text-encode --device cuda --text-encoder "$REL/text_encoder/llm" \
      --prompt "$long" --repeats 3 $mode --output /tmp/fisdit-text.safetensors >"$OUT/text$mode.log" 2>&1 ||
      { tail -5 "$OUT/text$mode.log"; say "text-encode $mode FAILED"; }
    grep -vE "^\s*$" "$OUT/text$mode.log" | tail -4 | sed "s/^/  text-encode${mode:- streamed}: /" | tee -a "$SUMMARY"
  done
  exit 0
fi

# ---- latency with the models loaded: the Wan VAE decode at several latent frames per chunk, then
# random TI2V-5B and T2V-A14B releases generated with --repeat (the models load once and stay;
# the second run is the warm latency, its prompt still encoded)
# ---- one-shot generate with the first DiT expert read beside the text stage or after it, each
# from a cold page cache (dropped before every run; said when it cannot be)
if [ "$MODE" = "overlap" ]; then
  ROOT=${FISDIT_RELEASE_DIR:-/tmp/fisdit-release}
  rm -rf "$ROOT"; REL=$ROOT/official; t0=$(date +%s)
  python3 bench/make_random_release.py "$REL" --task t2v --lora --same-experts >>"$OUT/release.log" 2>&1 ||
    { tail -20 "$OUT/release.log"; say "make_random_release FAILED"; exit 1; }
  say "random t2v release: $(( $(date +%s) - t0 )) s, $(du -shL "$REL" | cut -f1)"
  for round in ${OVERLAP_ROUNDS:-1 2}; do
    for overlap in 0 1 2; do  # 2: FISDIT_OVERLAP_LOAD=1 and FISDIT_UPLOAD_FIRST_EXPERT=1
      sync
      echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || say "the page cache could not be dropped: a warm-cache run"
      FISDIT_OVERLAP_LOAD=$(( overlap > 0 )) FISDIT_UPLOAD_FIRST_EXPERT=$(( overlap > 1 )) \
        gen_run "overlap$overlap-round$round" "times|loaded|preparing" \
        --model "$REL" --lora-high "$REL/lora_high.safetensors" --lora-low "$REL/lora_low.safetensors" \
        --prompt "a red ball rolls across a wooden table, soft window light" --seed 7 --steps 4 \
        --frames 81 --size 832x480 --fis balanced --save-latent "/tmp/fisdit-latent-$overlap-$round.safetensors"
    done
  done
  # The weights put on the GPU ahead are the ones a plain load makes: the same latent (bit for bit
  # where the processes chose the same GEMM algorithms; else the rel. L2 says how near).
  for f in 1-1 2-1 0-2 1-2 2-2; do
    [ -f "/tmp/fisdit-latent-$f.safetensors" ] || continue
    python3 - /tmp/fisdit-latent-0-1.safetensors "/tmp/fisdit-latent-$f.safetensors" <<'PY' | tee -a "$SUMMARY"
import json, math, struct, sys
from array import array
def latent(path):
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        a, b = json.loads(fh.read(n))["x"]["data_offsets"]
        fh.seek(8 + n + a)
        return array("f", fh.read(b - a))
x, y = latent(sys.argv[1]), latent(sys.argv[2])
label = f"latent {sys.argv[2][-15:-12]} (overlap-round): "
if x == y:
    print(label + "identical to 0-1")
else:
    d = math.sqrt(sum((p - q) ** 2 for p, q in zip(x, y))) / math.sqrt(sum(p * p for p in x))
    print(label + f"rel L2 {d:.3g} against 0-1")
PY
  done
  rm -f /tmp/fisdit-latent-*
  rm -rf "$ROOT"
  exit 0
fi

if [ "$MODE" = "graphs" ]; then
  FISDIT_CUDA_SYNC=1 ./build-device/fisdit_cuda_tests --gtest_color=no --gtest_filter='CudaGraphs*' \
    >"$OUT/graph_tests.log" 2>&1
  grep -E "OK \]|FAILED|Failure|Which is|rel L2|recorded as a graph" "$OUT/graph_tests.log" | head -30 |
    tee -a "$SUMMARY"
  for m in $([ "${GRAPHS_BENCH:-1}" = 1 ] && echo "ti2v:wan2.2-ti2v-5b wan21:wan2.1-t2v-1.3b"); do
    m=${m/:/ }
    set -- $m
    timeout 400 ./build-device/fisdit bench --device cuda --random-weights --label "$1-512-graphs" \
      --model-config "$2" --size 512x512 --frames 17 --steps 4 --fis off,balanced --precision bf16,fp8 \
      --graphs off,on --compare-dense --warmup 2 --repeats 5 >"$OUT/bench_$1-512-graphs.log" 2>&1 ||
      say "bench $1-512-graphs FAILED"
    grep -E "to queue a forward|recorded as a graph" "$OUT/bench_$1-512-graphs.log" | tee -a "$SUMMARY"
    grep -A12 "^fisdit bench:" "$OUT/bench_$1-512-graphs.log" | grep -v RESULT | tee -a "$SUMMARY"
  done
  if [ "${GRAPHS_GENERATE:-1}" = 1 ]; then
    ROOT=${FISDIT_RELEASE_DIR:-/tmp/fisdit-release}
    rm -rf "$ROOT"; REL=$ROOT/ti2v; t0=$(date +%s)
    python3 bench/make_random_release.py "$REL" --task ti2v --lora >>"$OUT/release.log" 2>&1 ||
      { tail -20 "$OUT/release.log"; say "make_random_release FAILED"; exit 1; }
    say "random ti2v release: $(( $(date +%s) - t0 )) s, $(du -shL "$REL" | cut -f1)"
    for p in bf16 fp8; do
      for g in 0 1; do
        FISDIT_CUDA_GRAPHS=$g gen_run "small-$p-graphs$g" "models loaded|run [0-9]|fisdit: a DiT" \
          --model "$REL" --lora-high "$REL/lora.safetensors" --image "$REL/first_frame.png" --steps 4 \
          --guidance 1 --size 512x512 --frames 17 --fis balanced --quiet --precision $p --repeat 4 \
          --prompt "a red ball rolls across a wooden table, soft window light" --seed 7
        python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('  steps, last run (ms):', [round(1000*s['seconds'],1) for s in d['steps']])" \
          "$OUT/gen_small-$p-graphs$g.json" | tee -a "$SUMMARY"
      done
    done
    rm -rf "$ROOT"
  fi
  exit 0
fi

if [ "$MODE" = "ti2v-small" ]; then
  ROOT=${FISDIT_RELEASE_DIR:-/tmp/fisdit-release}
  rm -rf "$ROOT"; REL=$ROOT/ti2v; t0=$(date +%s)
  python3 bench/make_random_release.py "$REL" --task ti2v --lora >>"$OUT/release.log" 2>&1 ||
    { tail -20 "$OUT/release.log"; say "make_random_release FAILED"; exit 1; }
  say "random ti2v release: $(( $(date +%s) - t0 )) s, $(du -shL "$REL" | cut -f1)"
  small=(--model "$REL" --lora-high "$REL/lora.safetensors" --image "$REL/first_frame.png" --steps 4
    --guidance 1 --size 512x512 --frames 17 --fis balanced --quiet
    --prompt "a red ball rolls across a wooden table, soft window light" --seed 7)
  # One process per row, the precisions alternating, 4 runs each (the first pays the tuning).
  for round in 1 2; do
    for p in bf16 fp8; do
      gen_run "small-$p-$round" "models loaded|run [0-9]" "${small[@]}" --precision $p --repeat 4
      python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('  steps, last run (ms):', [round(1000*s['seconds'],1) for s in d['steps']])" \
        "$OUT/gen_small-$p-$round.json" | tee -a "$SUMMARY"
    done
  done
  # Where a run's GPU time goes in each precision (ops synchronized: a breakdown, not a timing),
  # in generate (its second run) and in the bench loop of the same request.
  for p in bf16 fp8; do
    FISDIT_CUDA_PROFILE=1 gen_run "profile-$p" "NONE" "${small[@]}" --precision $p --repeat 2
    sed -n "/^=== profile-$p:/,\$p" "$OUT/release.log" | sed -n '/^run 2 op profile/,/^[^ ]/p' |
      head -24 | cut -c1-100 | tee -a "$SUMMARY"
  done
  timeout 300 ./build-device/fisdit bench --device cuda --random-weights --label ti2v-512-loop \
    --model-config wan2.2-ti2v-5b --size 512x512 --frames 17 --steps 4 --fis off,balanced \
    --precision bf16,fp8 --warmup 2 --repeats 5 >"$OUT/bench_ti2v-512-loop.log" 2>&1 ||
    say "bench ti2v-512-loop FAILED"
  grep "to queue a forward" "$OUT/bench_ti2v-512-loop.log" | tee -a "$SUMMARY"
  grep -A8 "^fisdit bench:" "$OUT/bench_ti2v-512-loop.log" | grep -v RESULT | tee -a "$SUMMARY"
  rm -rf "$ROOT" /tmp/fisdit-frames-*
  exit 0
fi

if [ "$MODE" = "latency" ]; then
  part() { [ -z "${LATENCY_PARTS:-}" ] || [[ " $LATENCY_PARTS " == *" $1 "* ]]; }
  lvae() {  # label, chunk (N or auto), then fisdit bench --vae arguments
    local label=$1 chunk=$2; shift 2
    FISDIT_VAE_DECODE_CHUNK=$chunk vbench "$label-chunk$chunk" 120 "$@"
  }
  if part vae; then
    for c in ${CHUNKS_480P:-1 auto 3}; do lvae wan21-480p $c wan2.1 --size 832x480 --frames 81 --warmup 1 --repeats 2; done
    for c in ${CHUNKS_720P:-1 2}; do lvae wan21-720p $c wan2.1 --size 1280x720 --frames 81 --warmup 1 --repeats 1; done
    for c in ${CHUNKS_704P:-1 2}; do lvae wan22-704p $c wan2.2 --size 1280x704 --frames 121 --warmup 1 --repeats 1; done
    for c in 1 auto; do lvae wan22-512p $c wan2.2 --size 512x512 --frames 17 --warmup 1 --repeats 5; done
  fi
  lgen() {  # label, then generate arguments
    local label=$1; shift
    gen_run "$label" "models loaded|both DiT|run [0-9]|GPU memory|[0-9.]+ GiB of GPU" --quiet \
      --prompt "a red ball rolls across a wooden table, soft window light" --seed 7 "$@"
  }
  ROOT=${FISDIT_RELEASE_DIR:-/tmp/fisdit-release}
  if part ti2v; then
    rm -rf "$ROOT"; REL=$ROOT/ti2v; t0=$(date +%s)
    python3 bench/make_random_release.py "$REL" --task ti2v --lora >>"$OUT/release.log" 2>&1 ||
      { tail -20 "$OUT/release.log"; say "make_random_release FAILED"; exit 1; }
    say "random ti2v release: $(( $(date +%s) - t0 )) s, $(du -shL "$REL" | cut -f1)"
    ti2v=(--model "$REL" --lora-high "$REL/lora.safetensors" --image "$REL/first_frame.png" --steps 4 --guidance 1)
    lgen ti2v-704p-balanced "${ti2v[@]}" --size 1280x704 --frames 121 --fis balanced --repeat 2
    lgen ti2v-512p-17f-balanced "${ti2v[@]}" --size 512x512 --frames 17 --fis balanced --repeat 3
    lgen ti2v-512p-17f-fp8-balanced "${ti2v[@]}" --size 512x512 --frames 17 --fis balanced --precision fp8 --repeat 3
  fi
  if part a14b; then
    rm -rf "$ROOT"; REL=$ROOT/official; t0=$(date +%s)
    python3 bench/make_random_release.py "$REL" --task t2v --lora --same-experts >>"$OUT/release.log" 2>&1 ||
      { tail -20 "$OUT/release.log"; say "make_random_release FAILED"; exit 1; }
    say "random t2v release: $(( $(date +%s) - t0 )) s, $(du -shL "$REL" | cut -f1)"
    a14b=(--model "$REL" --lora-high "$REL/lora_high.safetensors" --lora-low "$REL/lora_low.safetensors" --steps 4 --frames 81)
    lgen a14b-480p-balanced "${a14b[@]}" --size 832x480 --fis balanced --repeat 2
    if [ "${A14B_FP8:-1}" = 1 ]; then
      lgen a14b-480p-fp8-balanced "${a14b[@]}" --size 832x480 --fis balanced --precision fp8 --repeat 2
      lgen a14b-720p-fp8-balanced "${a14b[@]}" --size 1280x720 --fis balanced --precision fp8 --repeat 2
    fi
  fi
  rm -rf "$ROOT" /tmp/fisdit-frames-*
  exit 0
fi

# ---- a full-size A14B release of random weights in a user's file layout, generated end to end
if [ "${MODE#release-}" != "$MODE" ]; then
  layout=${MODE#release-}
  task=t2v
  limited=0 fp8=0
  case "$layout" in
    i2v | ti2v) task=$layout; layout=official ;;
    limit) layout=official; limited=1 ;;
    fp8) layout=official; fp8=1 ;;
  esac
  if [ "$fp8" = 1 ]; then
    ./build-device/fisdit quality --device cuda --variants dense,balanced,fp8,fp8-balanced \
      --no-figures --quiet --output-dir "$OUT/quality-fp8" >"$OUT/quality-fp8.log" 2>&1 ||
      { tail -5 "$OUT/quality-fp8.log"; say "quality fp8 FAILED"; }
    grep -A8 "^| variant" "$OUT/quality-fp8/quality.md" | tee -a "$SUMMARY"
  fi
  REL=${FISDIT_RELEASE_DIR:-/tmp/fisdit-release}/$layout
  rm -rf "${FISDIT_RELEASE_DIR:-/tmp/fisdit-release}"
  t0=$(date +%s)
  python3 bench/make_random_release.py "$REL" --layout "$layout" --task "$task" --lora --same-experts \
    >>"$OUT/release.log" 2>&1 || { tail -20 "$OUT/release.log"; say "make_random_release FAILED"; exit 1; }
  say "random $layout $task release: $(( $(date +%s) - t0 )) s, $(du -shL "$REL" | cut -f1)"
  if [ "$task" = ti2v ]; then
    model=(--model "$REL" --lora-high "$REL/lora.safetensors")
  elif [ "$layout" = official ]; then
    model=(--model "$REL" --lora-high "$REL/lora_high.safetensors" --lora-low "$REL/lora_low.safetensors")
  else
    model=(--model "$REL/wan2.2_${task}_high_noise_14B_fp8_scaled.safetensors"
      --model-low "$REL/wan2.2_${task}_low_noise_14B_fp8_scaled.safetensors"
      --text-encoder "$REL/umt5_xxl_fp8_e4m3fn_scaled.safetensors"
      --vae "$REL/wan_2.1_vae.safetensors" --tokenizer "$REL/tokenizer"
      --lora-high "$REL/lora_high.safetensors" --lora-low "$REL/lora_low.safetensors")
  fi
  gen() {  # label, then generate arguments
    local label=$1; shift
    gen_run "$label" "loaded|times|GPU memory|fidelity" "${model[@]}" \
      --prompt "a red ball rolls across a wooden table, soft window light" --seed 7 "$@"
  }
  [ "$task" = i2v ] && model+=(--image "$REL/first_frame.png")
  if [ "$task" = ti2v ] && [ "${RELEASE_QUICK:-0}" = 1 ]; then  # the 4-step image run: cold, warm
    for run in cold warm; do
      gen ti2v-704p-image-4step-$run --size 1280x704 --frames 121 --steps 4 --guidance 1 \
        --fis balanced --image "$REL/first_frame.png"
    done
  elif [ "$task" = ti2v ]; then
    gen ti2v-704p-image-4step --size 1280x704 --frames 121 --steps 4 --guidance 1 --fis balanced \
      --image "$REL/first_frame.png" --compare-dense
    gen ti2v-704p-50step --size 1280x704 --frames 121 --steps 50 --guidance 5 --fis balanced
  elif [ "$fp8" = 1 ]; then
    gen 480p-fp8 --size 832x480 --frames 81 --steps 4 --fis off --precision fp8 --compare-dense
    gen 480p-fp8-balanced --size 832x480 --frames 81 --steps 4 --fis balanced --precision fp8 --compare-dense
    gen 720p-fp8-balanced --size 1280x720 --frames 81 --steps 4 --fis balanced --precision fp8
  elif [ "$limited" = 1 ]; then
    gen 480p-balanced --size 832x480 --frames 81 --steps 4 --fis balanced
    gen 480p-balanced-limit24 --size 832x480 --frames 81 --steps 4 --fis balanced --gpu-memory-limit 24
    gen 720p-balanced-limit24 --size 1280x720 --frames 81 --steps 4 --fis balanced --gpu-memory-limit 24
    gen 720p-balanced --size 1280x720 --frames 81 --steps 4 --fis balanced
    # The full-size umT5 per pass, streamed per block and resident (a kept-loaded generator).
    for mode in "" --resident; do
      ./build-device/fisdit text-encode --device cuda --text-encoder "$REL/models_t5_umt5-xxl-enc-bf16.pth" \
        --tokenizer "$REL/google/umt5-xxl" --prompt "a red ball rolls across a wooden table, soft window light" \
        --repeats 3 $mode --output /tmp/fisdit-context.safetensors 2>&1 | grep -E "^(encoded|loaded|resident)" |
        sed "s/^/  text-encode ${mode:-streamed}: /" | tee -a "$SUMMARY"
    done
  elif [ "$task" = i2v ]; then
    gen i2v-480p-balanced --size 832x480 --frames 81 --steps 4 --fis balanced
    gen i2v-720p-balanced --size 1280x720 --frames 81 --steps 4 --fis balanced
  elif [ "$layout" = official ]; then
    gen 480p-balanced --size 832x480 --frames 81 --steps 4 --fis balanced --compare-dense
    gen 720p-balanced --size 1280x720 --frames 81 --steps 4 --fis balanced
  else
    gen comfy-480p-balanced --size 832x480 --frames 81 --steps 4 --fis balanced
  fi
  rm -rf "${FISDIT_RELEASE_DIR:-/tmp/fisdit-release}" /tmp/fisdit-frames-*
  cat "$SUMMARY"
  exit 0
fi

# A second process reads the cuDNN choices of the first from the tuning cache: the same cold
# decode (no warm-up) in two processes on an empty FISDIT_CACHE_DIR, then with the cache off.
if [ "$MODE" = "vae-cache" ]; then
  export FISDIT_CACHE_DIR=/tmp/fisdit-tuning-cache
  rm -rf "$FISDIT_CACHE_DIR"
  for run in first second; do
    vbench "wan21-720p-cold-$run" 120 wan2.1 --size 1280x720 --frames 81 --warmup 0 --repeats 1
  done
  say "tuning cache: $(ls "$FISDIT_CACHE_DIR") $(wc -l <"$FISDIT_CACHE_DIR"/*.txt) lines"
  FISDIT_CACHE_DIR=off vbench wan21-720p-cold-nocache 120 wan2.1 --size 1280x720 --frames 81 --warmup 0 --repeats 1
  exit 0
fi

if [ "$MODE" = "vae-encode" ]; then
  vbench wan21-encode-480p "${VAE_LIMIT:-60}" wan2.1 --vae-op encode --size 832x480 --frames 81 --warmup 1 --repeats 1
  vbench wan21-encode-720p "${VAE_LIMIT:-100}" wan2.1 --vae-op encode --size 1280x720 --frames 81 --warmup 1 --repeats 1
  vbench wan22-encode-704p "${VAE_LIMIT:-100}" wan2.2 --vae-op encode --size 1280x704 --frames 121 --warmup 1 --repeats 1
  exit 0
fi

if [ "$MODE" = "vae" ]; then
  # Where the time goes (every op synchronized; 3 latent frames, bf16), and each F32 conv's layout.
  FISDIT_CUDA_PROFILE=1 timeout 60 ./build-device/fisdit bench --device cuda \
    --label profile --vae wan2.1 --size 1280x720 --frames 9 --warmup 1 --repeats 1 \
    >"$OUT/vae_profile.log" 2>&1 || say "vae profile FAILED"
  grep -A14 "op profile" "$OUT/vae_profile.log" | cut -c1-110
  # Each decode in bf16 (the default) and fp32 (TF32 convs), one process each; VAE_APIS="legacy
  # auto" also runs each with cuDNN's legacy convolution API only (FISDIT_VAE_CONV_API).
  for api in ${VAE_APIS:-auto}; do
    for p in ${VAE_PRECISIONS:-bf16 fp32}; do
      export FISDIT_VAE_CONV_API=$api
      vbench wan21-480p-$p-$api "${VAE_LIMIT:-60}" wan2.1 --size 832x480 --frames 81 --warmup 1 --repeats 1 --vae-precision $p
      vbench wan21-720p-$p-$api "${VAE_LIMIT:-100}" wan2.1 --size 1280x720 --frames 81 --warmup 1 --repeats 1 --vae-precision $p
      vbench wan22-704p-$p-$api "${VAE_LIMIT:-100}" wan2.2 --size 1280x704 --frames 121 --warmup 1 --repeats 1 --vae-precision $p
      vbench hy15-480p-$p-$api "${VAE_LIMIT:-100}" hunyuan15 --size 848x480 --frames 121 --warmup 1 --repeats 1 --vae-precision $p
    done
  done
  unset FISDIT_VAE_CONV_API
  vbench wan21-encode-720p-bf16 "${VAE_LIMIT:-100}" wan2.1 --vae-op encode --size 1280x720 --frames 81 --warmup 1 --repeats 1
  exit 0
fi

# ---- benchmarks (random bf16 weights of the real shapes; A14B = one expert's weights)
bench() {  # label, then fisdit bench arguments
  local label=$1; shift
  local t0=$(date +%s)
  timeout "${BENCH_LIMIT:-590}" ./build-device/fisdit bench --device cuda --random-weights --label "$label" "$@" \
    >"$OUT/bench_$label.log" 2>&1 || { tail -5 "$OUT/bench_$label.log"; say "bench $label FAILED"; }
  grep -A10 "^fisdit bench:" "$OUT/bench_$label.log" | grep -v RESULT
  grep "^RESULT" "$OUT/bench_$label.log" >>"$OUT/results.txt"
  say "bench $label: $(( $(date +%s) - t0 )) s"
}
: >"$OUT/results.txt"
table() {
  {
    echo
    echo "model|size|frames|fis|ms/step|ms/DiT|PFLOP|TFLOP/s|speedup|peak GiB|exec PFLOP|skipped|rel L2"
    sed 's/^RESULT|//' "$OUT/results.txt"
  } | awk -F'|' '{printf "%-16s %-9s %-6s %-21s %9s %9s %8s %8s %8s %9s %10s %4s %9s\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13}' |
    tee -a "$SUMMARY"
}
if [ "$MODE" = "hunyuan15" ] || [ "$MODE" = "hunyuan15-dit" ]; then
  # HunyuanVideo 1.5, 480p step-distilled I2V (8 steps, shift 7, MeanFlow): the DiT per step type
  # at 121 and 81 frames (dense, balanced, fast; a 1000-token prompt and 729 vision tokens), the
  # official PyTorch forward on the same GPU (bench/hunyuan15_official_forward.py, the official
  # code from ref/HunyuanVideo-1.5 when it was carried), and the VAE decode in the pipeline's tiles.
  bench hy15-480p-121 --model-config hunyuanvideo-1.5-480p-i2v-step-distilled --size 848x480 --frames 121 --steps 8 --shift 7 --fis off,balanced,fast --precision bf16,fp8 --mode per-step-type --warmup 1 --repeats 3
  bench hy15-480p-81 --model-config hunyuanvideo-1.5-480p-i2v-step-distilled --size 848x480 --frames 81 --steps 8 --shift 7 --fis off,balanced,fast --mode per-step-type --warmup 1 --repeats 3
  table
  [ "$MODE" = "hunyuan15-dit" ] && exit 0
fi
if [ "$MODE" = "hunyuan15" ] || [ "$MODE" = "hunyuan15-rest" ]; then
  if [ -d ref/HunyuanVideo-1.5/hyvideo ]; then
    for frames in 121 81; do
      timeout 240 python3 bench/hunyuan15_official_forward.py --repo ref/HunyuanVideo-1.5 \
        --size 848x480 --frames $frames >"$OUT/official_$frames.log" 2>&1 ||
        { tail -8 "$OUT/official_$frames.log"; say "official forward $frames FAILED"; }
      grep "^official" "$OUT/official_$frames.log" | tee -a "$SUMMARY"
    done
  fi
  vbench hy15-vae-480p-121 "${VAE_LIMIT:-150}" hunyuan15 --size 848x480 --frames 121 --warmup 1 --repeats 1
  exit 0
fi
if [ "$MODE" = "fp8-attention" ]; then
  # The fp8 self-attention kernels side by side (the own Hopper kernel's variants: block-synchronous
  # or warp-specialized, half of the softmax's exponentials by a polynomial or all on the
  # special-function unit; cuDNN's fp8 graph; bf16 cuDNN first) at the A14B heads (720p, 480p) and the TI2V-5B 512x512x17 tokens;
  # then A14B 480p loops (bf16; fp8 dense and + balanced) with the own kernel (FA8_KERNEL, a value
  # of FISDIT_FP8_ATTENTION; default: the fastest own variant at 720p) and with cuDNN's, in
  # one process each (FA8_DIT=0 skips them), TI2V-5B 512x512x17 loops in bf16, fp8-gemm and fp8 (auto), and
  # A14B 720p per step type with either fp8 attention (FA8_720P=0 skips it, FA8_720P_CUDNN=0 the
  # cuDNN side).
  attn() {  # label, then fisdit bench --attention arguments (no --precision)
    local label=$1; shift
    timeout 90 ./build-device/fisdit bench --attention --device cuda "$@" --precision bf16,fp8 --warmup 2 \
      --repeats 5 >"$OUT/attention_$label.log" 2>&1 || { tail -5 "$OUT/attention_$label.log"; say "attention $label FAILED"; }
    grep -E "^(\||fisdit bench|fisdit: )" "$OUT/attention_$label.log" | grep -v "fp8 with a bf16 output declined" |
      tee -a "$SUMMARY"
  }
  # which to time; the 17- and 5-frame 480p calls (1.2 and 0.2 TFLOP) lie between the sizes where
  # bf16 (1,280 tokens) and fp8 (32,760) were measured faster: where auto's choice turns
  export FISDIT_CACHE_DIR=$OUT/tuning-cache  # the choices of FISDIT_FP8_ATTENTION=auto come back
  shapes=" ${FA8_SHAPES:-a14b-720p a14b-480p a14b-480p-17f a14b-480p-5f ti2v-512} "
  [[ $shapes == *" a14b-720p "* ]] && attn a14b-720p --model-config wan2.2-t2v-a14b --size 1280x720 --frames 81
  [[ $shapes == *" a14b-480p "* ]] && attn a14b-480p --model-config wan2.2-t2v-a14b --size 832x480 --frames 81
  [[ $shapes == *" a14b-480p-17f "* ]] && attn a14b-480p-17f --model-config wan2.2-t2v-a14b --size 832x480 --frames 17
  [[ $shapes == *" a14b-480p-5f "* ]] && attn a14b-480p-5f --model-config wan2.2-t2v-a14b --size 832x480 --frames 5
  [[ $shapes == *" ti2v-512 "* ]] && attn ti2v-512 --model-config wan2.2-ti2v-5b --size 512x512 --frames 17
  if [ "${FA8_DIT:-1}" = 1 ]; then
    if [ "${FA8_KERNEL:-best}" = best ]; then  # the fastest own variant at 720p
      FA8_KERNEL=$(awk -F'|' '$1 == "ATTENTION" && $3 ~ /^fp8 own/ {print $8, $3}' "$OUT/attention_a14b-720p.log" |
        sort -gr | head -1 | awk '{print $3}')
    fi
    say "own fp8 attention in the loops: FISDIT_FP8_ATTENTION=${FA8_KERNEL:-auto}"
    export FISDIT_FP8_ATTENTION=${FA8_KERNEL:-auto}
    bench a14b-480p-own --model-config wan2.2-t2v-a14b --size 832x480 --frames 81 --steps 4 --fis off,balanced \
      --precision bf16,fp8 --compare-dense --warmup 1 --repeats 1
    (export FISDIT_FP8_ATTENTION=cudnn; bench a14b-480p-cudnn --model-config wan2.2-t2v-a14b --size 832x480 \
      --frames 81 --steps 4 --fis off,balanced --precision fp8 --warmup 1 --repeats 1)
    (export FISDIT_FP8_ATTENTION=auto; bench ti2v-512 --model-config wan2.2-ti2v-5b --size 512x512 --frames 17 \
      --steps 4 --fis off,balanced --precision bf16,fp8-gemm,fp8 --warmup 2 --repeats 5)
    # Where a small video's step goes, bf16 and fp8 (ops synchronized: a breakdown, not a timing)
    FISDIT_FP8_ATTENTION=auto FISDIT_CUDA_PROFILE=1 timeout 120 ./build-device/fisdit bench --device cuda \
      --random-weights --label profile-ti2v-512 \
      --model-config wan2.2-ti2v-5b --size 512x512 --frames 17 --steps 4 --fis off --precision bf16,fp8 \
      --warmup 1 --repeats 1 --mode per-step-type >"$OUT/profile_ti2v-512.log" 2>&1
    grep -A16 "op profile" "$OUT/profile_ti2v-512.log" | cut -c1-110
    if [ "${FA8_720P:-1}" = 1 ]; then
      bench a14b-720p-own --model-config wan2.2-t2v-a14b --size 1280x720 --frames 81 --steps 4 --fis off,balanced \
        --precision bf16,fp8 --warmup 1 --repeats 1 --mode per-step-type
      [ "${FA8_720P_CUDNN:-1}" = 1 ] && (export FISDIT_FP8_ATTENTION=cudnn; bench a14b-720p-cudnn --model-config wan2.2-t2v-a14b --size 1280x720 \
        --frames 81 --steps 4 --fis off,balanced --precision fp8 --warmup 1 --repeats 1 --mode per-step-type)
    fi
    unset FISDIT_FP8_ATTENTION
    table
  fi
  say "auto's choices (shape, choice, ms of each):"
  cat "$FISDIT_CACHE_DIR"/fp8-attention-*.txt 2>/dev/null | tail -n +2 | tee -a "$SUMMARY"
  exit 0
fi

if [ "$MODE" = "fp8" ]; then
  # The self-attention alone (A14B heads) in bf16 and fp8, then the loops: bf16, fp8-gemm (the
  # matrices only) and fp8 (matrices and attention), FIS and MagCache-force stacked, 480p whole
  # loops against bf16 dense; 720p per step type.
  for size in 1280x720 832x480; do
    ./build-device/fisdit bench --attention --device cuda --model-config wan2.2-t2v-a14b --size $size \
      --frames 81 --precision bf16,fp8 --warmup 2 --repeats 5 >"$OUT/attention_$size.log" 2>&1 ||
      { tail -5 "$OUT/attention_$size.log"; say "attention $size FAILED"; }
    grep -E "^(\||fisdit bench|fisdit: cuDNN)" "$OUT/attention_$size.log" | tee -a "$SUMMARY"
  done
  bench a14b-480p-fp8 --model-config wan2.2-t2v-a14b --size 832x480 --frames 81 --steps 4 --fis off,balanced --cache off,magcache --magcache-force --precision bf16,fp8-gemm,fp8 --compare-dense --warmup 1 --repeats 1
  table
  bench a14b-720p-fp8 --model-config wan2.2-t2v-a14b --size 1280x720 --frames 81 --steps 4 --fis off,balanced --precision bf16,fp8 --warmup 1 --repeats 1 --mode per-step-type
  ./build-device/fisdit quality --device cuda --variants dense,balanced,fp8-gemm,fp8,fp8-balanced \
    --no-figures --quiet --output-dir "$OUT/quality-fp8" >"$OUT/quality-fp8.log" 2>&1 ||
    { tail -5 "$OUT/quality-fp8.log"; say "quality fp8 FAILED"; }
  grep -A8 "^| variant" "$OUT/quality-fp8/quality.md" | tee -a "$SUMMARY"
  FISDIT_CUDA_PROFILE=1 ./build-device/fisdit bench --device cuda --random-weights --label profile \
    --model-config wan2.2-t2v-a14b --size 832x480 --frames 81 --steps 4 --fis off --precision bf16,fp8 \
    --warmup 1 --repeats 1 --mode per-step-type >"$OUT/profile.log" 2>&1
  grep -A18 "op profile" "$OUT/profile.log" | cut -c1-110
  grep -h "per-row scaled fp8\|cuDNN attention fp8\|no fp8 attention" "$OUT"/*.log | sort -u | head -5 | tee -a "$SUMMARY"
  table
  exit 0
fi
if [ "$MODE" = "quick" ]; then
  bench wan21-1.3b-480p --model-config wan2.1-t2v-1.3b --size 832x480 --frames 81 --steps 4 --warmup 1 --repeats 2
  bench a14b-480p --model-config wan2.2-t2v-a14b --size 832x480 --frames 81 --steps 4 --warmup 1 --repeats 1 --mode per-step-type
  # MagCache alone and with FIS (force: 4 steps -> computed, skipped, skipped, computed).
  bench wan21-1.3b-480p-mc --model-config wan2.1-t2v-1.3b --size 832x480 --frames 81 --steps 4 --fis off,balanced --cache off,magcache --magcache-force --compare-dense --warmup 1 --repeats 2
  bench a14b-480p-mc --model-config wan2.2-t2v-a14b --size 832x480 --frames 81 --steps 4 --fis off,balanced --cache off,magcache --magcache-force --compare-dense --warmup 1 --repeats 1
else
  bench a14b-720p --model-config wan2.2-t2v-a14b --size 1280x720 --frames 81 --steps 4 --warmup 1 --repeats 1
  bench a14b-480p --model-config wan2.2-t2v-a14b --size 832x480 --frames 81 --steps 4 --warmup 1 --repeats 1
  bench ti2v-5b-704p --model-config wan2.2-ti2v-5b --size 1280x704 --frames 121 --steps 4 --warmup 1 --repeats 2
  bench wan21-1.3b-480p --model-config wan2.1-t2v-1.3b --size 832x480 --frames 81 --steps 4 --warmup 1 --repeats 3
  # MagCache alone and with FIS: the few-step force setting, and ratios calibrated in-process.
  bench a14b-480p-mc --model-config wan2.2-t2v-a14b --size 832x480 --frames 81 --steps 4 --fis off,balanced --cache off,magcache --magcache-force --compare-dense --warmup 1 --repeats 1
  bench wan21-1.3b-480p-mc-cal --model-config wan2.1-t2v-1.3b --size 832x480 --frames 81 --steps 8 --fis off,balanced --cache off,magcache --magcache-thresh 0.1 --compare-dense --warmup 1 --repeats 2
  # Where the time goes: every op synchronized and summed (a breakdown, not a timing run).
  FISDIT_CUDA_PROFILE=1 ./build-device/fisdit bench --device cuda --random-weights --label profile \
    --model-config wan2.2-t2v-a14b --size 832x480 --frames 81 --steps 4 --fis off,balanced \
    --warmup 1 --repeats 1 --mode per-step-type >"$OUT/profile.log" 2>&1
  grep -A14 "op profile" "$OUT/profile.log" | cut -c1-100
  FISDIT_GEMM_AUTOTUNE=0 FISDIT_CUDA_PROFILE=1 ./build-device/fisdit bench --device cuda \
    --random-weights --label profile-noautotune --model-config wan2.2-t2v-a14b --size 832x480 \
    --frames 81 --steps 4 --fis off --warmup 1 --repeats 1 --mode per-step-type \
    >"$OUT/profile_noautotune.log" 2>&1
  echo "without GEMM autotuning:"; grep "linear N" "$OUT/profile_noautotune.log" | head -4 | cut -c1-100
fi

# ---- the table, last
{
  echo
  echo "model|size|frames|fis|ms/step|ms/DiT|PFLOP|TFLOP/s|speedup|peak GiB|exec PFLOP"
  sed 's/^RESULT|//' "$OUT/results.txt"
} | awk -F'|' '{printf "%-16s %-9s %-6s %-9s %9s %9s %8s %8s %8s %9s %10s\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11}' |
  tee -a "$SUMMARY"
