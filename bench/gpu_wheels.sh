#!/usr/bin/env bash
# Prepare, on the development machine, the wheels bench/gpu_check.sh needs on the GPU machine (its image has torch,
# torchvision, pandas, seaborn, scikit-learn, pytest, but not nbdev / fastcore / execnb / ipython): into .whl/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "nbdev==2.4.14" "fastcore>=1.12.3,<2" "execnb>=0.1.12,<0.2" "papermill>=2.4"
# keep only what the GPU image lacks (its own numpy, torch, packaging, pyyaml, ... stay in charge)
cd .whl
for w in *.whl; do
  n=$(echo "$w" | cut -d- -f1 | tr '[:upper:]' '[:lower:]' | tr '_' '-')
  case "$n" in
    nbdev|fastcore|execnb|astunparse|ghapi|fastgit|fastspec|watchdog|ipython|ipython-pygments-lexers|jedi|parso|\
    prompt-toolkit|stack-data|pure-eval|executing|asttokens|traitlets|matplotlib-inline|pexpect|ptyprocess|wcwidth|\
    papermill|nbclient|nbformat|jupyter-client|jupyter-core|ipykernel|entrypoints|ansicolors|fastjsonschema|comm|\
    debugpy|nest-asyncio2|nest-asyncio|pyzmq|tornado|platformdirs|jsonschema|jsonschema-specifications|referencing|rpds-py|tenacity) ;;
    *) rm -f "$w" ;;
  esac
done
cd ..; du -sh .whl; ls .whl | wc -l
