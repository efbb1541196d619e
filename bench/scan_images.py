"""Time the pre-training existence scan of `ltnb.data.find_missing_images` on a synthetic iNat-2018-sized tree
(437,513 empty files in 8,142 class folders), first without and then with its cache. Prints the figures; asserts nothing.

    python bench/scan_images.py [/tmp/inat-tree]
"""
import os, sys, time
from pathlib import Path
from ltnb.data import find_missing_images

root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/inat-tree")
N, C = 437_513, 8_142
paths = [f"train_val2018/c{i % C:05d}/{i:07d}.jpg" for i in range(N)]
if not (root / paths[-1]).exists():
    t0 = time.time()
    for c in range(C): (root / f"train_val2018/c{c:05d}").mkdir(parents=True, exist_ok=True)
    for p in paths: open(root / p, "wb").close()
    print(f"built the tree: {N:,} files in {time.time() - t0:.1f} s")
split = root / "iNaturalist18_train.txt"; split.write_text("".join(f"{p} {i % C}\n" for i, p in enumerate(paths)))
Path(str(split) + ".ltnb-checked").unlink(missing_ok=True)
os.system("sync")
t0 = time.time(); miss = find_missing_images(root, paths, split, progress=False); t1 = time.time()
again = find_missing_images(root, paths, split, progress=False); t2 = time.time()
print(f"scan of {N:,} images: {t1 - t0:.1f} s ({N / (t1 - t0):,.0f} files/s, {len(miss)} missing); cached re-check: {t2 - t1:.2f} s")
