#!/usr/bin/env bash
# The GPU check of issue 13 in one command (a few minutes on one H100/H200):
#   here, once:   bash bench/gpu_wheels.sh                      (nbdev & co. as wheels into .whl/, git-ignored)
#   device tool:  run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=570)
# 1. the `#| gpu` cells of the component notebooks (CUDA Trainer, fast data path on the GPU, AMP dtype, benchmarks)
# 2. ltnb's paths against the reference loop on CUDA (bench/speed.py) and whole epochs projected to 200 (the ≤ 2 min target);
#    ResNet-50 at 224 px on a JPEG tree (PIL reference vs ltnb's loader and decode paths)
# 3. many runs at once on one GPU (bench/jobs_wall.py), if present
# 5. torchrun -m ltnb.experiments (NCCL, one process) and RIDE/SADE/NCL/BBN/MDCS (+IKL/LTRL) smoke runs on CUDA
# Figures go to $OUT (the device tool brings them back) or ./gpu_check_out. `GPU_CHECK_DEVICE=cpu` dry-runs it here.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}; RAW="$OUT/raw"; mkdir -p "$RAW"
DEV=${GPU_CHECK_DEVICE:-cuda}
export PYTHONUNBUFFERED=1 LTNB_FIGURES="$RAW" LTNB_RUNS=$(mktemp -d)
if [ -d .whl ] && ! python3 -c "import nbdev" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
status=0
step() { echo; echo "=== $1 ($(date +%T))"; }
step "device"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$RAW/device.txt"
step "1. CUDA cells of the notebooks"
if [ "$DEV" = cuda ]; then FLAGS="gpu"; else FLAGS=""; fi
for nb in 01_data 05_engine 14_fastdata 15_bench; do
  nbdev_test --path nbs/$nb.ipynb ${FLAGS:+--flags $FLAGS} 2>&1 | tail -5 | tee -a "$RAW/cells.txt" || status=1
done
step "2. ltnb vs the reference loop"
if [ "$DEV" = cuda ]; then
  python3 bench/speed.py --device cuda --threads 16 --workers 8 --paths loader device device+compile --batches 60 --rounds 3 --epochs 3 \
    --variants "resnet32 crop+flip" "resnet32 autoaugment+cutout" "resnet32 ce+ikl crop+flip" "shike_resnet32 crop+flip" 2>&1 | tee "$RAW/speed.txt" || status=1
  # ResNet-50 at 224 px on a JPEG tree: the PIL reference loop vs ltnb's loader and decode (nvJPEG) paths
  python3 bench/speed.py --device cuda --threads 16 --workers 8 --variants "resnet50 jpeg224" --batch-size 128 --batches 15 --rounds 3 \
    --tag resnet50 2>&1 | tee "$RAW/speed_resnet50.txt" || status=1
else
  python3 bench/speed.py --device cpu --batches 2 --rounds 1 --batch-size 16 --epochs 0 --variants "resnet32 crop+flip" --tag dry 2>&1 | tee "$RAW/speed.txt" || status=1
  python3 bench/speed.py --device cpu --batches 1 --rounds 1 --batch-size 2 --variants "resnet50 jpeg224" --tag dry_resnet50 2>&1 | tee "$RAW/speed_resnet50.txt" || status=1
fi
step "3. input pipeline (JPEG tree, pre-resized cache, GPU decode) and IKL's memory on the device store"
if [ "$DEV" = cuda ]; then
  OMP_NUM_THREADS=1 python3 bench/input_pipeline.py --workers 0 4 8 --epochs 1 --out "$RAW/input_pipeline_gpu.csv" 2>&1 | tee "$RAW/input.txt" || status=1
  python3 bench/ikl_memory.py --stores host device --dtypes float32 bfloat16 --cap-gb 32 --batches 16 --out "$RAW/ikl_memory_gpu.csv" 2>&1 | tee "$RAW/memory.txt" || status=1
fi
step "4. many runs at once"
if [ "$DEV" = cuda ]; then   # several small runs on one GPU (device "auto" = cuda there)
  python3 bench/jobs_wall.py --table ikl_table7 --dataset digits_lt --budget cpu --seeds 0 1 --jobs 1 2 4 8 --out "$RAW/jobs_wall_gpu.csv" 2>&1 | tee "$RAW/jobs.txt" || status=1
fi
step "5. torchrun from the package entry point, and the multi-expert methods on the device"
DD=$([ "$DEV" = cuda ] && echo cuda || echo cpu)
python3 -m torch.distributed.run --standalone --nproc_per_node=1 -m ltnb.experiments --dataset digits_lt --method ce \
  --budget smoke --device $DD --runs-dir "$RAW/runs_torchrun" 2>&1 | tail -3 | tee "$RAW/torchrun.txt" || status=1
if [ "$DEV" = cuda ]; then
  python3 -m ltnb.experiments --dataset digits_lt --method ride sade ncl bbn mdcs ride+ikl sade+ltrl+code --budget smoke \
    --device cuda --runs-dir "$RAW/runs_methods" 2>&1 | tail -8 | tee "$RAW/methods.txt" || status=1
fi
rm -rf "$RAW/runs_torchrun" "$RAW/runs_methods"
step "done (status $status)"
tar czf "$OUT/gpu_check.tgz" -C "$RAW" . && rm -rf "$RAW"      # one file back (the device tool returns at most 8)
exit $status
