"""Images/s of the ImageNet-LT input pipeline alone (no model): a DataLoader over `ImageListDataset` with the ImageNet-LT
training transform, batch 128, workers 0/1/2, pinned memory (when CUDA is there), persistent workers, on a synthetic
JPEG tree in the ImageNet-LT split-file format, reading the original images and then their pre-resized cache (short
side 256). Also: the one-off cache build, single-image decode costs, and the bytes-only loader of the GPU-decoding path.
From the measured per-worker rate it computes how many workers keep a GPU fed at an assumed training rate.
Prints the figures and writes figures/input_pipeline.csv; asserts nothing.

    flock /tmp/ltnb-bench.lock python bench/input_pipeline.py [--n 2000] [--workers 0 1 2] [--epochs 2]
"""
import argparse, math, os, platform, tempfile, time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")   # one core per process: a worker's rate is a core's rate
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ltnb.data import (EncodedImageList, build_dataset_cache, encoded_collate, get_dataset, imagenet_transforms,
                       resized_cache_dir)

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--n", type=int, default=2000, help="training images (ImageNet-LT-like long tail over --classes)")
p.add_argument("--classes", type=int, default=100)
p.add_argument("--batch", type=int, default=128)
p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
p.add_argument("--epochs", type=int, default=2, help="timed epochs per setting (after --warm batches)")
p.add_argument("--warm", type=int, default=2, help="batches not timed (worker start-up, first reads)")
p.add_argument("--gpu-rate", type=float, nargs="+", default=[2500, 3000],
               help="ASSUMED training images/s of the GPU to feed (default: ResNet-50 on one H100 with AMP + channels_last; "
                    "not measured here)")
p.add_argument("--dir", default=None, help="where to build the tree (default: a temporary folder, removed at the end)")
p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "figures" / "input_pipeline.csv"))
a = p.parse_args()
torch.set_num_threads(1)

def make_tree(root: Path, n: int, C: int, seed: int = 0):
    "ImageNet-LT layout: train/<wnid>/<wnid>_<k>.JPEG (long-tailed counts), val/<wnid>/ILSVRC2012_val_*.JPEG (1 per class)."
    rs = np.random.RandomState(seed)
    prof = 0.02 ** (np.arange(C) / (C - 1))                                        # exponential long tail, IF 50
    counts = np.maximum(np.round(prof / prof.sum() * n), 2).astype(int)            # about n in all
    lines = {"train": [], "test": []}
    def one(p):
        w, h = int(np.clip(rs.normal(500, 80), 300, 800)), int(np.clip(rs.normal(400, 60), 250, 650))
        if rs.rand() < 0.25: w, h = h, w                                             # some portrait images
        lo = Image.fromarray(rs.randint(0, 256, (rs.randint(4, 12), rs.randint(4, 12), 3)).astype(np.uint8))
        x = np.asarray(lo.resize((w, h), Image.Resampling.BICUBIC), np.float32) + rs.normal(0, 10, (h, w, 3))
        (root / "imagenet" / p).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(root / "imagenet" / p, "JPEG", quality=90)
    for c, k_c in enumerate(counts):
        wnid = f"n{c:08d}"
        for k in range(k_c): q = f"train/{wnid}/{wnid}_{k}.JPEG"; one(q); lines["train"].append(f"{q} {c}\n")
        q = f"val/{wnid}/ILSVRC2012_val_{c:08d}.JPEG"; one(q); lines["test"].append(f"{q} {c}\n")
    (root / "ImageNet_LT").mkdir(parents=True, exist_ok=True)
    for s, l in lines.items(): (root / "ImageNet_LT" / f"ImageNet_LT_{s}.txt").write_text("".join(l))

def du(d: Path) -> tuple[int, float]:
    fs = [f for f in d.rglob("*") if f.is_file() and f.suffix == ".JPEG"]
    return len(fs), sum(f.stat().st_size for f in fs)

def time_loader(ds, workers, collate=None):
    "Images/s over `a.epochs` epochs after `a.warm` batches; one DataLoader, kept alive across epochs."
    pin = torch.cuda.is_available()
    dl = DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=workers, pin_memory=pin,
                    persistent_workers=workers > 0, drop_last=False, collate_fn=collate)
    it, seen = iter(dl), 0
    for _ in range(a.warm): next(it)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    for e in range(a.epochs):
        for b in it: seen += len(b[1])
        if e < a.epochs - 1: it = iter(dl)
    dt = time.perf_counter() - t0
    del it, dl
    return dict(images=seen, seconds=round(dt, 2), images_per_s=round(seen / dt, 1), pin_memory=pin,
                persistent_workers=workers > 0, loadavg_1min=round(load0, 2))

def per_image(paths, root, fn, k=200, repeats=3):
    "ms per image over the first `k` images, the best of `repeats` passes (the least disturbed by other processes)."
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for q in paths[:k]: fn(root / q)
        best = min(best, time.perf_counter() - t0)
    return best / min(k, len(paths)) * 1e3

tmp = tempfile.TemporaryDirectory(prefix="ltnb-bench-") if a.dir is None else None
root = Path(a.dir or tmp.name)
print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
      f"CUDA {'yes' if torch.cuda.is_available() else 'no'}; load average {os.getloadavg()[0]:.2f}")
if not (root / "ImageNet_LT" / "ImageNet_LT_train.txt").exists():
    t0 = time.perf_counter(); make_tree(root, a.n, a.classes)
    print(f"built a synthetic ImageNet-LT tree in {root} ({time.perf_counter() - t0:.0f} s)")
d = get_dataset("imagenet_lt", root=root)
n_orig, b_orig = du(root / "imagenet")
sizes = [Image.open(root / "imagenet" / q).size for q in d.train.paths[:300]]
print(f"train {len(d.train):,} images over {d.num_classes} classes (n_max {d.class_counts.max()}, n_min {d.class_counts.min()}); "
      f"mean size {np.mean([s[0] for s in sizes]):.0f}x{np.mean([s[1] for s in sizes]):.0f}, "
      f"mean file {b_orig / n_orig / 1024:.0f} KiB (ILSVRC-2012 train, commonly cited, not measured here: about 110 KiB, i.e. 138 GB / 1.28 M files, and about 470x390)")

# the one-off cache build (every CPU), then a second call that finds everything in place
cd = resized_cache_dir(root / "imagenet", 256, root / "resized")
if cd.exists():
    import shutil; shutil.rmtree(cd)
t0 = time.perf_counter(); r = build_dataset_cache("imagenet_lt", root=root, progress=False); t_build = time.perf_counter() - t0
t0 = time.perf_counter(); r2 = build_dataset_cache("imagenet_lt", root=root, progress=False); t_again = time.perf_counter() - t0
n_c, b_c = du(cd)
print(f"cache build: {r['listed']:,} images ({r['resized']:,} resized, {r['copied']:,} copied) in {t_build:.1f} s = "
      f"{r['listed'] / t_build:,.0f} images/s with {os.cpu_count()} processes; second call: {r2['already']:,} already there, "
      f"{t_again:.2f} s; size {b_orig / 2**20:.0f} MiB -> {b_c / 2**20:.0f} MiB ({b_c / b_orig:.0%})")
c = get_dataset("imagenet_lt", root=root, resized_cache=True)

# where the time goes, one image at a time in this process (ms per image)
train_tf = imagenet_transforms(True)[0]
from torchvision.io import decode_jpeg
rd = lambda f: torch.frombuffer(bytearray(open(f, "rb").read()), dtype=torch.uint8)
costs = {}
for label, ds in [("original", d.train), ("cache256", c.train)]:
    costs[label] = dict(
        pil_decode_ms=per_image(ds.paths, ds.image_root, lambda f: Image.open(f).convert("RGB")),
        pil_decode_transform_ms=per_image(ds.paths, ds.image_root, lambda f: train_tf(Image.open(f).convert("RGB"))),
        torchvision_decode_cpu_ms=per_image(ds.paths, ds.image_root, lambda f: decode_jpeg(rd(f))),
        read_bytes_ms=per_image(ds.paths, ds.image_root, rd))
print("\nper image, one process, best of 3 passes over 200 images (ms):")
print(pd.DataFrame(costs).round(2).to_string())

# the DataLoader: PIL decode + ImageNet-LT training transform, and the bytes-only loader of the GPU-decoding path
rows = []
for label, ds in [("original", d.train), ("cache256", c.train)]:
    for w in a.workers:
        rows.append(dict(pipeline="PIL + train transform", images_from=label, workers=w, batch=a.batch, **time_loader(ds, w)))
        print(rows[-1], flush=True)
for w in a.workers[:2]:
    rows.append(dict(pipeline="file bytes only (GPU decode)", images_from="original", workers=w, batch=a.batch,
                     **time_loader(EncodedImageList(d.train), w, encoded_collate)))
    print(rows[-1], flush=True)
df = pd.DataFrame(rows)
df["images_per_s_per_worker"] = (df.images_per_s / df.workers.clip(lower=1)).round(1)
Path(a.out).parent.mkdir(parents=True, exist_ok=True)
df.to_csv(a.out, index=False)
print("\n" + df[["pipeline", "images_from", "workers", "images", "seconds", "images_per_s", "images_per_s_per_worker",
                 "loadavg_1min"]].to_string(index=False))
print(f"(pin_memory={df.pin_memory.iloc[0]}: {'CUDA present' if df.pin_memory.iloc[0] else 'no CUDA here, so nothing to pin'}; "
      f"persistent_workers when workers > 0; wrote {a.out})")

# workers to keep a GPU fed: from the 1-worker rate (one core per worker)
print(f"\nload average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (above the CPU count, every rate here is a lower bound)")
print(f"Workers (CPU cores) needed to feed an ASSUMED {' / '.join(f'{g:,.0f}' for g in a.gpu_rate)} images/s "
      "(ResNet-50 on one H100, AMP + channels_last: an assumption, not measured here), from the 1-worker rates above:")
for (pipe, src), g in df[df.workers == 1].groupby(["pipeline", "images_from"]):
    r1 = float(g.images_per_s.iloc[0])
    need = ", ".join(f"{math.ceil(t / r1)} for {t:,.0f}/s" for t in a.gpu_rate)
    print(f"  DataLoader, 1 worker:  {pipe:28s} {src:9s} {r1:7.1f} images/s per worker -> workers needed: {need}")
for src, cst in costs.items():   # the same from the single-process cost per image (best of 3: less disturbed by other load)
    r1 = 1000 / cst["pil_decode_transform_ms"]
    need = ", ".join(f"{math.ceil(t / r1)} for {t:,.0f}/s" for t in a.gpu_rate)
    print(f"  per-image cost:        {'PIL + train transform':28s} {src:9s} {r1:7.1f} images/s per core   -> workers needed: {need}")
full = df[(df.workers == 1) & (df.pipeline == "PIL + train transform")].set_index("images_from").images_per_s
if {"original", "cache256"} <= set(full.index):
    print(f"  the cache multiplies the per-worker rate by {full['cache256'] / full['original']:.2f} (DataLoader, 1 worker) and "
          f"by {costs['original']['pil_decode_transform_ms'] / costs['cache256']['pil_decode_transform_ms']:.2f} (per-image cost); "
          f"of a cached image's {costs['cache256']['pil_decode_transform_ms']:.2f} ms, decoding is "
          f"{costs['cache256']['pil_decode_ms']:.2f} ms, the rest is RandomResizedCrop + flip + ColorJitter + ToTensor + Normalize")
print("  (rates are this machine's cores with the files in the page cache; on a shared machine they are lower bounds; a real"
      " ImageNet-LT epoch is 115,846 images, i.e. "
      + ", ".join(f"{115_846 / t:.0f} s at {t:,.0f}/s" for t in a.gpu_rate) + ")")
if tmp is not None: tmp.cleanup()
