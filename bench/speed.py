"""Issue 13 §1: images/s of ltnb's training step (its `loader` and `device` paths, optionally `device+compile`)
against the reference loop built as the official repositories build it, alternated round by round; the median
per-round ratio. Synthetic CIFAR-100 in the real pickle format (500 images per class before the LT subset, IF 100).
The "resnet50 jpeg224" variant is the large-dataset step instead: ResNet-50 at 224 px on a synthetic JPEG tree in
iNaturalist 2018's layout, ltnb's `loader` and `decode` paths (--jpeg-paths) against the per-sample PIL reference loop.

    flock /tmp/ltnb-bench.lock python bench/speed.py --device cpu                  # this machine
    python bench/speed.py --device cuda --paths loader device device+compile      # a GPU (bench/gpu_check.sh)

    flock /tmp/ltnb-bench.lock python bench/speed.py --device cpu --variants "resnet50 jpeg224" \
        --batch-size 16 --batches 4 --rounds 3 --tag resnet50                     # ResNet-50 on this CPU: small batches

Prints one table per variant and writes figures/bench_<device>.csv (every round) and figures/bench_<device>_ratios.csv.
"""
import argparse, os, sys, tempfile, time
import pandas as pd, torch
import json
from ltnb.bench import write_cifar100, write_jpeg_tree, compare, compare_jpeg, ratios, epoch_times
from ltnb.experiments import figures_dir

VARIANTS = {   # name -> compare() keyword arguments
    "resnet32 crop+flip": dict(augment=True),
    "resnet32 autoaugment+cutout": dict(augment="autoaugment"),
    "resnet32 ce+ikl crop+flip": dict(augment=True, method="ce+ikl"),
    "shike_resnet32 crop+flip": dict(augment=True, model="shike_resnet32", method="shike"),
}
JPEG_VARIANTS = {   # name -> compare_jpeg() keyword arguments (a synthetic iNaturalist-layout JPEG tree, 100 classes)
    "resnet50 jpeg224": dict(model="resnet50", image_size=224),
}

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu"); p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=[*VARIANTS, *JPEG_VARIANTS],
                   help="default: the CIFAR variants; add 'resnet50 jpeg224' for the JPEG-tree one")
    p.add_argument("--paths", nargs="+", default=["loader", "device"])
    p.add_argument("--jpeg-paths", nargs="+", default=["loader", "decode"], help="ltnb paths of the JPEG variants")
    p.add_argument("--batches", type=int, default=20); p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2); p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--tag", default="", help="suffix of the output files")
    p.add_argument("--epochs", type=int, default=0, help="also time this many full epochs per path (first = compile/warm-up) "
                   "and project 200 epochs of CIFAR-100-LT ResNet-32")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows, summary = [], []
    with tempfile.TemporaryDirectory() as root:
        if any(v in VARIANTS for v in a.variants): write_cifar100(root)
        jroot = os.path.join(root, "jpeg")
        if any(v in JPEG_VARIANTS for v in a.variants):   # enough images for warm-up + timed batches, as an epoch would be
            t0 = time.time(); n = max(200, int(1.2 * a.batch_size * (a.batches + 1)))
            write_jpeg_tree(jroot, n_train=n, num_classes=100, imb_factor=0.1)
            print(f"wrote a synthetic iNaturalist-layout JPEG tree of about {n} training images in {time.time() - t0:.0f}s", flush=True)
        for v in a.variants:
            t0 = time.time()
            if v in JPEG_VARIANTS:
                df = compare_jpeg(jroot, paths=tuple(a.jpeg_paths), batch_size=a.batch_size, batches=a.batches, rounds=a.rounds,
                                  workers=a.workers, device=a.device, **JPEG_VARIANTS[v])
            else:
                df = compare(root, paths=tuple(a.paths), batch_size=a.batch_size, batches=a.batches, rounds=a.rounds,
                             workers=a.workers, device=a.device, **VARIANTS[v])
            df.insert(0, "variant", v); rows.append(df)
            r = ratios(df); r.insert(0, "variant", v); summary.append(r)
            print(f"\n{v} ({a.device}, {a.threads} threads, batch {a.batch_size}, {a.batches} batches x {a.rounds} rounds, "
                  f"{a.workers} workers; {time.time() - t0:.0f}s)")
            print(r.round(3).to_string(index=False), flush=True)
        if a.epochs:
            ep = []
            for path in a.paths:
                e = epoch_times(root, a.epochs, path, device=a.device, workers=a.workers, batch_size=a.batch_size)
                print(f"\n{a.epochs} full epochs, {path}: " + json.dumps(e), flush=True); ep.append(e)
    tag = f"_{a.tag}" if a.tag else ""
    if a.epochs:
        pd.DataFrame(ep).to_csv(figures_dir() / f"bench_{a.device.split(':')[0]}{tag}_epochs.csv", index=False)
    out = figures_dir() / f"bench_{a.device.split(':')[0]}{tag}.csv"
    pd.concat(rows).to_csv(out, index=False)
    pd.concat(summary).to_csv(out.with_name(out.stem + "_ratios.csv"), index=False)
    print(f"\nwrote {out} and {out.stem}_ratios.csv")

if __name__ == "__main__": main()
