#!/usr/bin/env bash
# final device run: generate latency with the new decode default, cross-kv side by side, GPU tests
cd "$(dirname "$0")/.."
CUDNN_ROOT=$(python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])')
SKIP_TESTS=1 LATENCY_PARTS="none" bash bench/device.sh latency 2>&1 | grep -E "build|FAIL" | tail -5
export LD_LIBRARY_PATH=$CUDNN_ROOT/lib:$LD_LIBRARY_PATH
# TI2V-5B release, warm latency with the default decode chunks
ROOT=/tmp/fisdit-release; REL=$ROOT/ti2v; rm -rf $ROOT
python3 bench/make_random_release.py "$REL" --task ti2v --lora > $OUT/release.log 2>&1 || tail -5 $OUT/release.log
g() { label=$1; shift; timeout 120 ./build-device/fisdit generate --device cuda --quiet --prompt "a red ball rolls across a wooden table, soft window light" --seed 7 --frames-dir /tmp/fr-$label --summary-json $OUT/gen_$label.json "$@" > $OUT/gen_$label.log 2>&1 || tail -5 $OUT/gen_$label.log; grep -E "models loaded|run [0-9]|GPU memory|both DiT" $OUT/gen_$label.log | sed "s/^/$label: /"; rm -rf /tmp/fr-$label; }
ti2v=(--model "$REL" --lora-high "$REL/lora.safetensors" --image "$REL/first_frame.png" --steps 4 --guidance 1 --fis balanced)
g ti2v-512p "${ti2v[@]}" --size 512x512 --frames 17 --repeat 3
g ti2v-704p "${ti2v[@]}" --size 1280x704 --frames 121 --repeat 2
# cross-attention text k/v once per prompt: this tree vs the commit before it, back to back
t0=$(date +%s)
gen=""; command -v ninja >/dev/null && gen="-G Ninja"
cmake -S ref/baseline -B ref/baseline/build $gen -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a -DFISDIT_MP4=OFF \
  -DFISDIT_TESTS=OFF -DFISDIT_PIPELINE=OFF -DFISDIT_CUDNN_ROOT=$CUDNN_ROOT -DCMAKE_PREFIX_PATH=$PWD/.deps > $OUT/base_cmake.log 2>&1 || tail -20 $OUT/base_cmake.log
cmake --build ref/baseline/build --target fisdit -j $(nproc) > $OUT/base_build.log 2>&1 || grep -m5 -A5 error $OUT/base_build.log
echo "baseline build $(( $(date +%s) - t0 )) s"
for round in 1 2; do
  for side in baseline current; do
    bin=./build-device/fisdit; [ $side = baseline ] && bin=ref/baseline/build/fisdit
    $bin bench --device cuda --random-weights --label ti2v-512p --model-config wan2.2-ti2v-5b --size 512x512 --frames 17 --steps 4 --fis off,balanced --warmup 2 --repeats 5 2>&1 | grep "^RESULT" | sed "s/^/$side round $round: /"
  done
done
# A14B 480p bf16 + balanced, warm, default decode chunks
rm -rf $ROOT; REL=$ROOT/official
python3 bench/make_random_release.py "$REL" --task t2v --lora --same-experts >> $OUT/release.log 2>&1 || tail -5 $OUT/release.log
g a14b-480p --model "$REL" --lora-high "$REL/lora_high.safetensors" --lora-low "$REL/lora_low.safetensors" --steps 4 --frames 81 --size 832x480 --fis balanced --repeat 2
rm -rf $ROOT
./build-device/fisdit_cuda_tests --gtest_color=no --gtest_filter='CudaVae.*:CudaDit*' > $OUT/tests_subset.log 2>&1
grep -E "auto chunks|^\[  PASSED|^\[  FAILED" $OUT/tests_subset.log | head -12
