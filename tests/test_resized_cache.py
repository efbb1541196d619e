"""The pre-resized image cache (`build_dataset_cache`, `resized_cache=True`) and the encoded-bytes path, on tiny JPEG trees."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ltnb.data import (EncodedImageList, JpegBatchTransform, build_dataset_cache, build_resized_cache, encoded_collate,
                       get_dataset, resized_cache_dir, resized_size, split_encoded)

# (split, class, size) of each image; short sides 300, 260, 200 (kept), 512, 256 (kept), 384
IMAGES = [("train", 0, (400, 300)), ("train", 0, (260, 700)), ("train", 0, (200, 150)), ("train", 1, (512, 640)),
          ("val", 0, (256, 300)), ("val", 1, (500, 384)), ("test", 0, (640, 480)), ("test", 1, (300, 333))]

def _imagenet_lt(root, images=IMAGES):
    "ImageNet-LT split files and JPEGs; each image's top-left block holds its class colour."
    rs, lines = np.random.RandomState(0), {"train": [], "val": [], "test": []}
    for k, (split, c, (w, h)) in enumerate(images):
        folder = "val" if split == "test" else "train"
        p = f"{folder}/n{c:08d}/img_{k}.JPEG"
        a = np.repeat(np.repeat(rs.randint(0, 256, (8, 8, 3)), (h + 7) // 8, 0), (w + 7) // 8, 1)[:h, :w].astype(np.uint8)
        (root / "imagenet" / p).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / "imagenet" / p, "JPEG", quality=95)
        lines[split].append(f"{p} {c}\n")
    (root / "ImageNet_LT").mkdir(exist_ok=True)
    for s, l in lines.items(): (root / "ImageNet_LT" / f"ImageNet_LT_{s}.txt").write_text("".join(l))

def _expected(w, h):
    "Short side 256 by hand: the long side scaled by 256 / short and truncated; images with short side <= 256 kept."
    s = min(w, h)
    if s <= 256: return (w, h)
    return (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)

def test_cache_sizes_and_second_build(tmp_path):
    _imagenet_lt(tmp_path)
    r = build_dataset_cache("imagenet_lt", root=tmp_path, workers=2, progress=False)     # a process pool
    assert (r["listed"], r["resized"], r["copied"], r["already"]) == (8, 6, 2, 0)
    cd = resized_cache_dir(tmp_path / "imagenet", 256, tmp_path / "resized")
    assert Path(r["cache_dir"]) == cd and cd.is_relative_to(tmp_path / "resized")
    paths = sorted(p.relative_to(cd).as_posix() for p in cd.rglob("*.JPEG"))
    assert len(paths) == 8
    for k, (split, c, (w, h)) in enumerate(IMAGES):
        p = f"{'val' if split == 'test' else 'train'}/n{c:08d}/img_{k}.JPEG"
        with Image.open(cd / p) as im: assert im.size == _expected(w, h) == resized_size(w, h), (p, im.size)
        assert min(_expected(w, h)) == min(256, w, h)
    mtimes = {p: (cd / p).stat().st_mtime_ns for p in paths}
    r2 = build_dataset_cache("imagenet_lt", root=tmp_path, workers=2, progress=False)
    assert (r2["resized"], r2["copied"], r2["already"]) == (0, 0, 8)                    # writes nothing
    assert {p: (cd / p).stat().st_mtime_ns for p in paths} == mtimes
    # one file deleted, one source newer than its copy: only those two are written again
    (cd / paths[0]).unlink()
    src = tmp_path / "imagenet" / paths[1]
    os.utime(src, ns=(mtimes[paths[1]] + 10**9, mtimes[paths[1]] + 10**9))
    r3 = build_dataset_cache("imagenet_lt", root=tmp_path, workers=0, progress=False)
    assert r3["resized"] + r3["copied"] == 2 and r3["already"] == 6

def test_dataset_reads_the_cache(tmp_path):
    _imagenet_lt(tmp_path)
    with pytest.raises(FileNotFoundError, match="no pre-resized cache") as e:
        get_dataset("imagenet_lt", root=tmp_path, resized_cache=True)
    assert f"build_dataset_cache('imagenet_lt', root={str(tmp_path)!r}, short_side=256)" in str(e.value)
    build_dataset_cache("imagenet_lt", root=tmp_path, workers=0, progress=False)
    o = get_dataset("imagenet_lt", root=tmp_path, augment=False)
    c = get_dataset("imagenet_lt", root=tmp_path, resized_cache=True, augment=False)
    for a, b in [(o.train, c.train), (o.val, c.val), (o.test, c.test)]:
        assert a.paths == b.paths and a.targets.tolist() == b.targets.tolist()
        assert [x[1:] for x in a] == [x[1:] for x in b]                                   # labels and indices
    assert c.class_counts.tolist() == o.class_counts.tolist() == [3, 1]
    no_tf = c.train.subset(np.arange(len(c.train)), transform=None)                      # PIL images, as read
    assert [no_tf[i][0].size for i in range(4)] == [_expected(*s) for _, _, s in IMAGES[:4]]
    x = c.test[0][0]
    assert x.shape == (3, 224, 224) and (x - o.test[0][0]).abs().mean() < 0.05        # same crop, one more JPEG encoding
    a = get_dataset("imagenet_lt", root=tmp_path, resized_cache=True)                     # training transform unchanged
    assert a.train[0][0].shape == (3, 224, 224) and "RandomResizedCrop" in repr(a.train.transform)

def test_incomplete_cache_and_other_datasets(tmp_path):
    _imagenet_lt(tmp_path)
    build_dataset_cache("imagenet_lt", root=tmp_path, workers=0, progress=False)
    cd = resized_cache_dir(tmp_path / "imagenet", 256, tmp_path / "resized")
    next(cd.rglob("*.JPEG")).unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks 1 of the .* images[\s\S]*build_dataset_cache\('imagenet_lt'"):
        get_dataset("imagenet_lt", root=tmp_path, resized_cache=True)
    # a cache root of one's own; Places-LT's style travels into the build command
    with pytest.raises(FileNotFoundError, match=r"cache_root='.*elsewhere'"):
        get_dataset("imagenet_lt", root=tmp_path, resized_cache=tmp_path / "elsewhere")
    (tmp_path / "Places_LT").mkdir()
    (tmp_path / "places365" / "train" / "a").mkdir(parents=True)
    Image.new("RGB", (256, 256)).save(tmp_path / "places365" / "train" / "a" / "1.jpg")
    for s in ("train", "test"): (tmp_path / "Places_LT" / f"Places_LT_{s}.txt").write_text("train/a/1.jpg 0\n")
    with pytest.raises(FileNotFoundError, match="style='old'"):
        get_dataset("places_lt", root=tmp_path, style="old", resized_cache=True)
    r = build_dataset_cache("places_lt", root=tmp_path, style="old", workers=0, progress=False)
    assert (r["copied"], r["resized"]) == (1, 0)                                          # 256x256 already: a copy
    with pytest.raises(ValueError, match="nothing to pre-resize"): build_dataset_cache("digits_lt", workers=0)

def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    _imagenet_lt(tmp_path)
    def boom(self, fp, *a, **k):
        Path(fp).write_bytes(b"half a jpeg")                                              # a partial temp file ...
        raise KeyboardInterrupt
    monkeypatch.setattr(Image.Image, "save", boom)
    cd = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        build_resized_cache(tmp_path / "imagenet", ["train/n00000000/img_0.JPEG"], cd, workers=0, progress=False)
    assert not (cd / "train/n00000000/img_0.JPEG").exists() and not list(cd.rglob("*.tmp"))   # ... removed, never renamed

def test_encoded_bytes_match_pil(tmp_path):
    _imagenet_lt(tmp_path)
    d = get_dataset("imagenet_lt", root=tmp_path, augment=False)
    enc = EncodedImageList(d.train)
    data, y, i = enc[3]
    assert (y, i) == (1, 3) and data.numel() == (d.train.image_root / d.train.paths[3]).stat().st_size
    from torchvision.io import decode_jpeg
    ref = torch.as_tensor(np.array(Image.open(d.train.image_root / d.train.paths[3]).convert("RGB"))).permute(2, 0, 1)
    assert (decode_jpeg(data).int() - ref.int()).abs().float().mean() < 1
    xs, ys, idx = encoded_collate([enc[k] for k in range(4)])
    assert [t.tolist() for t in split_encoded(xs)] == [enc[k][0].tolist() for k in range(4)]   # one tensor, split back
    x = JpegBatchTransform(train=False, device="cpu")(xs)
    assert x.shape == (4, 3, 224, 224) and ys.tolist() == d.train.targets[:4].tolist() and idx.tolist() == [0, 1, 2, 3]
    ref = torch.stack([d.train_eval[k][0] for k in range(4)])                             # PIL: Resize(256) + CenterCrop(224)
    assert (x - ref).abs().mean() < 0.02
