#!/usr/bin/env bash
# The whole ltnb test suite (what CI runs). Run from anywhere; uses the active Python environment.
#  1. the notebooks are clean and ltnb/ equals what nbdev_export writes
#  2. nbdev_test: every notebook's inline tests, slow cells included (gpu cells skipped without CUDA)
#  3. pytest tests/
#  4. every nbs/repro_*.ipynb executed by papermill at its default parameters
set -euo pipefail
cd "$(dirname "$0")/.."
export MPLBACKEND=Agg PYTHONHASHSEED=0
start=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - start ))s)"; }

step "1. notebooks clean, library in step with the notebooks"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  before=$(git status --porcelain -- nbs ltnb)
  nbdev_clean
  nbdev_export
  after=$(git status --porcelain -- nbs ltnb)
  if [ "$before" != "$after" ]; then
    echo "FAIL: nbdev_clean / nbdev_export changed files: commit clean notebooks and the exported library"
    git status --porcelain -- nbs ltnb
    git --no-pager diff --stat -- nbs ltnb
    exit 1
  fi
  echo "ok: notebooks clean, ltnb/ equals nbdev_export output"
else
  echo "not a git checkout: skipped"
fi

step "2. nbdev_test (notebook tests, slow cells included)"
flags="slow"
python -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" && flags="slow gpu"
nbdev_test --flags "$flags" --n_workers 2 --timing

step "3. pytest"
log=$(mktemp)
python -m pytest tests/ -q -p no:cacheprovider 2>&1 | tee "$log"
count() { grep -Eo "[0-9]+ $1" "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0; }
py_passed=$(count passed); py_skipped=$(count skipped)

step "4. reproduction notebooks through papermill (default parameters)"
out=$(mktemp -d)
export out
pm_one() {   # tiny default runs: one thread each is faster, two notebooks at a time on 2 cores
  local nb=$1 t0; t0=$(date +%s)
  OMP_NUM_THREADS=1 papermill "$nb" "$out/$(basename "$nb")" --cwd nbs --log-level WARNING > "$out/$(basename "$nb").log" 2>&1 \
    || { echo "FAIL: $nb"; tail -40 "$out/$(basename "$nb").log"; return 1; }
  echo "ok: $nb ($(( $(date +%s) - t0 ))s)"
}
export -f pm_one
ls nbs/repro_*.ipynb | xargs -P 2 -I{} bash -c 'pm_one {}'
pm_passed=$(ls nbs/repro_*.ipynb | wc -l)

step "done"
# every step above stops the script on its first failure, so reaching here means nothing failed
nb_passed=$(ls nbs/*.ipynb | wc -l)
echo "notebooks (nbdev_test): $nb_passed, pytest: $py_passed (+$py_skipped skipped), papermill: $pm_passed"
echo "ltnb: $((nb_passed + py_passed + pm_passed)) passed, 0 failed, $py_skipped skipped"
