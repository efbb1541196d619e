"""ltnb.data loaders on tiny files written here in the real on-disk formats, plus the error cases."""
import gzip, pickle, struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ltnb.data import DATASETS, get_dataset, read_idx, read_split_file, read_cifar_batch
from ltnb.sampling import img_num_per_cls, select_lt_indices

# --------------------------------------------------------------------------------------------- helpers

def _cifar_rows(labels, start):
    "N x 3072 uint8 rows (R plane, G plane, B plane): R = label, G = global index // 256, B = global index % 256."
    n = len(labels)
    x = np.zeros((n, 3, 1024), np.uint8)
    gi = np.arange(start, start + n)
    x[:, 0] = np.asarray(labels)[:, None]
    x[:, 1] = (gi // 256)[:, None]
    x[:, 2] = (gi % 256)[:, None]
    return x.reshape(n, 3072)

def _dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f: pickle.dump(obj, f)

def _decode_index(data):
    "Global training index stored in the G/B planes of `_cifar_rows`."
    return data[:, 1, 0, 0].long() * 256 + data[:, 2, 0, 0].long()

def _write_idx(path, arr, gz=True):
    arr = np.asarray(arr, np.uint8)
    head = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open if gz else open)(path, "wb") as f: f.write(head + arr.tobytes())

def _idx_set(d, n_per_class=6, n_test=3, gz=True, shuffle_seed=0):
    "Write the four (Fashion-)MNIST IDX files; pixel [0, 0] holds the label, [0, 1] the index."
    rng = np.random.RandomState(shuffle_seed)
    y = rng.permutation(np.repeat(np.arange(10), n_per_class)).astype(np.uint8)
    x = np.zeros((len(y), 28, 28), np.uint8); x[:, 0, 0] = y; x[:, 0, 1] = np.arange(len(y))
    yt = np.repeat(np.arange(10), n_test).astype(np.uint8)
    xt = np.zeros((len(yt), 28, 28), np.uint8); xt[:, 0, 0] = yt
    sfx = ".gz" if gz else ""
    _write_idx(d / f"train-images-idx3-ubyte{sfx}", x, gz); _write_idx(d / f"train-labels-idx1-ubyte{sfx}", y, gz)
    _write_idx(d / f"t10k-images-idx3-ubyte{sfx}", xt, gz); _write_idx(d / f"t10k-labels-idx1-ubyte{sfx}", yt, gz)
    return y

def _jpeg(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), colour).save(path, "JPEG")

def _split(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{p} {l}\n" for p, l in lines))

# --------------------------------------------------------------------------------------------- CIFAR

@pytest.fixture
def cifar10_root(tmp_path):
    rng = np.random.RandomState(1)
    labels = rng.permutation(np.repeat(np.arange(10), 20))       # 20 per class, shuffled file order
    d = tmp_path / "cifar-10-batches-py"
    for b in range(5):
        lab = labels[b * 40:(b + 1) * 40]
        _dump(d / f"data_batch_{b + 1}", {b"data": _cifar_rows(lab, b * 40), b"labels": lab.tolist(), b"batch_label": b"x"})
    tl = np.repeat(np.arange(10), 3)
    _dump(d / "test_batch", {b"data": _cifar_rows(tl, 0), b"labels": tl.tolist()})
    _dump(d / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return tmp_path, labels

def test_cifar10_lt_layout(cifar10_root):
    root, labels = cifar10_root
    d = get_dataset("cifar10_lt", root=root, imb_factor=0.1, augment=False)
    counts = img_num_per_cls(20, 10, 0.1)                            # n_max defaults to len(train) / C = 20
    assert d.class_counts.tolist() == counts and d.info["n_max"] == 20
    assert (d.num_classes, len(d.test), d.input_shape, d.classes[3]) == (10, 30, (3, 32, 32), "c3")
    # the images are the LDAM-convention ones, class-major, and each keeps its label
    sel = select_lt_indices(labels, counts, "ldam", seed=0)
    assert _decode_index(d.train.data).tolist() == sel.tolist()
    assert d.train.data[:, 0, 0, 0].tolist() == d.train.targets.tolist() == labels[sel].tolist()
    x, y, i = d.train[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and (y, i) == (int(d.train.targets[5]), 5)
    gi = int(sel[5])                                                   # its index in the CIFAR files
    assert torch.allclose(x[:, 0, 0], (torch.tensor([y, gi // 256, gi % 256]) / 255 - torch.tensor([0.4914, 0.4822, 0.4465])) / torch.tensor([0.2023, 0.1994, 0.2010]))
    f = get_dataset("cifar10_lt", root=root, imb_factor=0.1, subset="first_n")
    first = np.concatenate([np.where(labels == c)[0][:n] for c, n in enumerate(counts)])
    assert _decode_index(f.train.data).tolist() == first.tolist()
    a = get_dataset("cifar10_lt", root=root, augment="autoaugment")
    assert a.train[0][0].shape == (3, 32, 32) and "Cutout" in repr(a.train.transform)

def test_cifar10_val_carve(cifar10_root):
    root, _ = cifar10_root
    d = get_dataset("cifar10_lt", root=root, imb_factor=1, val_fraction=0.2)
    assert d.class_counts.tolist() == [16] * 10 and len(d.val) == 40      # 20 per class, round(0.2 * 20) = 4 to val
    assert d.val[3][2] == 3 and len(d.train_eval) == 160
    tr, va = _decode_index(d.train.data), _decode_index(d.val.data)
    assert not set(tr.tolist()) & set(va.tolist())

def test_cifar100_lt_layout(tmp_path):
    labels = np.random.RandomState(2).permutation(np.repeat(np.arange(100), 5))
    d = tmp_path / "cifar-100-python"
    _dump(d / "train", {b"data": _cifar_rows(labels, 0), b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist()})
    tl = np.arange(100)
    _dump(d / "test", {b"data": _cifar_rows(tl, 0), b"fine_labels": tl.tolist(), b"coarse_labels": (tl // 5).tolist()})
    _dump(d / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
    ds = get_dataset("cifar100_lt", root=tmp_path, imb_factor=0.4)
    counts = img_num_per_cls(5, 100, 0.4)
    assert ds.class_counts.tolist() == counts and counts[0] == 5 and counts[-1] == 2   # int(5 * 0.4) = 2
    assert _decode_index(ds.train.data).tolist() == select_lt_indices(labels, counts, "ldam", 0).tolist()
    assert (ds.num_classes, len(ds.test), ds.classes[99]) == (100, 100, "f99")
    assert ds.test[7][1:] == (7, 7)

def test_cifar_missing_and_tampered(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True") as e: get_dataset("cifar10_lt", root=tmp_path)
    assert "data_batch_1" in str(e.value) and "cifar-10-batches-py" in str(e.value)
    with pytest.raises(FileNotFoundError, match="cifar-100-python"): get_dataset("cifar100_lt", root=tmp_path)
    class Evil:
        def __reduce__(self): return (print, ("pwned",))
    _dump(tmp_path / "evil", {b"data": Evil()})
    with pytest.raises(pickle.UnpicklingError, match="refusing"): read_cifar_batch(tmp_path / "evil")

# --------------------------------------------------------------------------------------------- IDX

def test_read_idx_header(tmp_path):
    _write_idx(tmp_path / "a.gz", np.arange(24).reshape(2, 3, 4))
    assert read_idx(tmp_path / "a.gz").tolist() == np.arange(24).reshape(2, 3, 4).tolist()
    raw = struct.pack(">BBBBII", 0, 0, 8, 2, 2, 3) + bytes(5)        # header says 6 bytes, 5 follow
    (tmp_path / "short").write_bytes(raw)
    with pytest.raises(ValueError, match="header"): read_idx(tmp_path / "short")

def test_mnist_lt_idx(tmp_path):
    y = _idx_set(tmp_path / "mnist")
    d = get_dataset("mnist_lt", root=tmp_path, n_max=6, imb_factor=0.5)
    counts = img_num_per_cls(6, 10, 0.5)
    assert d.class_counts.tolist() == counts and counts[-1] == 3
    assert d.train.data[:, 0, 0, 0].tolist() == d.train.targets.tolist()
    assert d.train.data[:, 0, 0, 1].tolist() == select_lt_indices(y, counts, "ldam", 0).tolist()
    assert (len(d.test), d.input_shape) == (30, (1, 28, 28))
    x, lab, i = d.test[4]
    assert x.shape == (1, 28, 28) and (lab, i) == (1, 4)

def test_mnist_lt_torchvision_raw_layout(tmp_path):
    _idx_set(tmp_path / "MNIST" / "raw", gz=False)
    assert len(get_dataset("mnist_lt", root=tmp_path, n_max=6, imb_factor=1).train) == 60

def test_fmnist_lt_idx_dir(tmp_path):
    _idx_set(tmp_path / "fm", n_per_class=4)
    d = get_dataset("fmnist_lt", idx_dir=tmp_path / "fm", n_max=4, imb_factor=0.25, augment=True)
    assert d.class_counts.tolist() == img_num_per_cls(4, 10, 0.25) and d.classes[9] == "Ankle boot"
    assert d.train[0][0].shape == (1, 28, 28)
    with pytest.raises(ValueError, match="fewer"): get_dataset("fmnist_lt", idx_dir=tmp_path / "fm", n_max=5)

def test_idx_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        get_dataset("fmnist_lt", idx_dir=tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match=r"mnist.*download=True"): get_dataset("mnist_lt", root=tmp_path)

FMNIST = Path("/usr/share/datasets/fashion-mnist")

@pytest.mark.skipif(not (FMNIST / "train-labels-idx1-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_fmnist_lt_debian_files():
    y = read_idx(FMNIST / "train-labels-idx1-ubyte.gz")
    assert np.bincount(y).tolist() == [6000] * 10                   # datasets.md §6
    d = get_dataset("fmnist_lt")
    assert d.class_counts.tolist() == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]   # datasets.md §6, n_max 500, IF 100
    assert len(d.train) == 1236 and len(d.test) == 10000 and np.bincount(d.test.targets).tolist() == [1000] * 10
    assert d.shot_groups().sizes == (4, 3, 3)
    assert d.info["source"] == str(FMNIST)

# --------------------------------------------------------------------------------------------- split files

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]

def _imagenet_tree(root):
    ir, lines = root / "imagenet", {"train": [], "val": [], "test": []}
    for c, wnid in enumerate(["n01440764", "n01443537", "n01484850"]):
        for k in range(3 - c + 1):                                     # 4, 3, 2 training images
            p = f"train/{wnid}/{wnid}_{k}.JPEG"; _jpeg(ir / p, COLOURS[c]); lines["train"].append((p, c))
        p = f"train/{wnid}/{wnid}_v.JPEG"; _jpeg(ir / p, COLOURS[c]); lines["val"].append((p, c))
        p = f"val/{wnid}/ILSVRC2012_val_{c:08d}.JPEG"; _jpeg(ir / p, COLOURS[c]); lines["test"].append((p, c))
    for k, v in lines.items(): _split(root / "ImageNet_LT" / f"ImageNet_LT_{k}.txt", v)
    return lines

def test_imagenet_lt(tmp_path):
    _imagenet_tree(tmp_path)
    d = get_dataset("imagenet_lt", root=tmp_path, image_size=32)
    assert d.class_counts.tolist() == [4, 3, 2] and d.num_classes == 3 and d.classes == ["n01440764", "n01443537", "n01484850"]
    assert len(d.val) == 3 and len(d.test) == 3 and d.input_shape == (3, 32, 32)
    x, y, i = d.test[2]
    assert x.shape == (3, 32, 32) and (y, i) == (2, 2)
    assert x[2].mean() > x[0].mean()                                   # the blue image of class 2
    x, y, i = d.train[8]
    assert x.shape == (3, 32, 32) and (y, i) == (2, 8)
    c = get_dataset("imagenet_lt", root=tmp_path, image_size=32, val_fraction=0.5)
    assert c.class_counts.tolist() == [2, 1, 1] and len(c.val) == 5   # 2.0, 1.5, 1.0 rounded half up go to val and c.info["val_source"] == "carved"

def test_places_lt_both_styles(tmp_path):
    ir = tmp_path / "places365"
    old, v2 = [], []
    for c, (cls, letter) in enumerate([("airfield", "a"), ("apartment_building-outdoor", "a"), ("zen_garden", "z")]):
        for k in range(2):
            name = f"{c * 10 + k:08d}.jpg"
            _jpeg(ir / "train" / cls / name, COLOURS[c]); old.append((f"train/{cls}/{name}", c))
            v2cls = cls.replace("-", "/")
            _jpeg(ir / "data_256" / letter / v2cls / name, COLOURS[c]); v2.append((f"data_256/{letter}/{v2cls}/{name}", c))
    _split(tmp_path / "Places_LT" / "Places_LT_train.txt", old)
    _split(tmp_path / "Places_LT_v2" / "Places_LT_train.txt", v2)
    _jpeg(ir / "val" / "airfield" / "Places365_val_00000001.jpg", COLOURS[0])
    _jpeg(ir / "val_256" / "Places365_val_00000001.jpg", COLOURS[0])
    _split(tmp_path / "Places_LT" / "Places_LT_test.txt", [("val/airfield/Places365_val_00000001.jpg", 0)])
    _split(tmp_path / "Places_LT_v2" / "Places_LT_test.txt", [("val_256/Places365_val_00000001.jpg", 0)])
    a = get_dataset("places_lt", root=tmp_path, style="old", image_size=16, augment=False)
    b = get_dataset("places_lt", root=tmp_path, style="v2", image_size=16, augment=False)
    assert a.class_counts.tolist() == b.class_counts.tolist() == [2, 2, 2] and a.val is None
    assert a.classes == ["airfield", "apartment_building-outdoor", "zen_garden"]
    assert b.classes == ["airfield", "apartment_building/outdoor", "zen_garden"]
    assert torch.allclose(a.train[3][0], b.train[3][0]) and a.train[3][1:] == b.train[3][1:] == (1, 3)
    assert a.test[0][0].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="'old'"): get_dataset("places_lt", root=tmp_path, style="new")

def test_inat18(tmp_path):
    ir, tr, va = tmp_path / "inat2018", [], []
    for c, sup in enumerate(["Plantae", "Aves", "Insecta", "Fungi"]):
        for k in range(c + 1):
            p = f"train_val2018/{sup}/{c}/{c}{k:031x}.jpg"; _jpeg(ir / p, COLOURS[c % 3]); tr.append((p, c))
        p = f"train_val2018/{sup}/{c}/v{c:031x}.jpg"; _jpeg(ir / p, COLOURS[c % 3]); va.append((p, c))
    _split(tmp_path / "iNaturalist18" / "iNaturalist18_train.txt", tr)
    _split(tmp_path / "iNaturalist18" / "iNaturalist18_val.txt", va)
    d = get_dataset("inat18", root=tmp_path, image_size=16)
    assert d.class_counts.tolist() == [1, 2, 3, 4] and d.val is None and len(d.test) == 4
    assert d.mean == (0.466, 0.471, 0.380) and "ColorJitter" not in repr(d.train.transform)
    assert d.classes == ["Plantae/0", "Aves/1", "Insecta/2", "Fungi/3"]
    assert d.train[9][1:] == (3, 9) and d.test[1][0].shape == (3, 16, 16)

def test_split_file_errors(tmp_path):
    _imagenet_tree(tmp_path)
    f = tmp_path / "ImageNet_LT" / "ImageNet_LT_train.txt"
    good = f.read_text()
    f.write_text(good + "train/n01440764/x.JPEG\n")                    # no label on line 10
    with pytest.raises(ValueError, match=r"ImageNet_LT_train\.txt:10"): get_dataset("imagenet_lt", root=tmp_path)
    f.write_text(good + "train/n01440764/x.JPEG seven\n")
    with pytest.raises(ValueError, match=r"ImageNet_LT_train\.txt:10"): get_dataset("imagenet_lt", root=tmp_path)
    for bad in ("../../etc/passwd 0", "/etc/passwd 0", "train/../../secret.JPEG 1"):
        f.write_text(bad + "\n" + good)
        with pytest.raises(ValueError, match="escapes"): get_dataset("imagenet_lt", root=tmp_path)
    f.write_text(good)
    with pytest.raises(FileNotFoundError, match="ILSVRC-2012"): get_dataset("imagenet_lt", root=tmp_path, image_root=tmp_path / "nowhere")
    assert read_split_file(f)[1].tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2]

def test_split_file_checked_before_training(tmp_path):
    "A missing image, a BOM, a Latin-1 file, a label gap, a duplicate: found when the dataset is built, named with file:line."
    lines = _imagenet_tree(tmp_path)
    f = tmp_path / "ImageNet_LT" / "ImageNet_LT_test.txt"
    (tmp_path / "imagenet" / lines["test"][1][0]).unlink()               # a test image that training would only reach later
    with pytest.raises(FileNotFoundError, match=r"1 of 3 images listed in .*ImageNet_LT_test\.txt are missing"):
        get_dataset("imagenet_lt", root=tmp_path)
    _imagenet_tree(tmp_path)
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())                      # BOM: read as UTF-8, not "data not found"
    assert get_dataset("imagenet_lt", root=tmp_path, image_size=32).num_classes == 3
    f.write_bytes(f.read_bytes()[3:] + "val/caf\xe9.JPEG 0\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"ImageNet_LT_test\.txt:4: not UTF-8"): get_dataset("imagenet_lt", root=tmp_path)
    _imagenet_tree(tmp_path)
    t = tmp_path / "ImageNet_LT" / "ImageNet_LT_train.txt"
    t.write_text("".join(l for l in t.read_text().splitlines(True) if " 1" not in l))   # class 1 has no training image
    with pytest.raises(ValueError, match="contiguous range 0..2; classes \\[1\\]"): get_dataset("imagenet_lt", root=tmp_path)
    _imagenet_tree(tmp_path)
    t.write_text(t.read_text() + t.read_text().splitlines(True)[0])
    with pytest.raises(ValueError, match="listed twice"): get_dataset("imagenet_lt", root=tmp_path)

def test_corrupt_image_names_its_path(tmp_path):
    lines = _imagenet_tree(tmp_path)
    d = get_dataset("imagenet_lt", root=tmp_path, image_size=32)
    (tmp_path / "imagenet" / lines["train"][2][0]).write_bytes(b"not a jpeg")
    with pytest.raises(OSError, match=r"cannot read image .*n01440764_2\.JPEG \(sample index 2\)"): d.train[2]

def test_split_files_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="classifier-balancing") as e: get_dataset("imagenet_lt", root=tmp_path)
    assert str(tmp_path / "ImageNet_LT" / "ImageNet_LT_train.txt") in str(e.value)
    with pytest.raises(FileNotFoundError, match="256x256"): get_dataset("places_lt", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="OLTR"): get_dataset("places_lt", root=tmp_path, style="old")
    with pytest.raises(FileNotFoundError, match="AWS"): get_dataset("inat18", root=tmp_path)

# --------------------------------------------------------------------------------------------- registry

def test_registry_and_items():
    assert set(DATASETS.names()) == {"digits_lt", "fmnist_lt", "mnist_lt", "cifar10_lt", "cifar100_lt", "imagenet_lt",
                                     "places_lt", "inat18"}
    with pytest.raises(KeyError, match="Valid datasets: cifar100_lt"): get_dataset("cifar1000_lt")
    d = get_dataset("digits_lt", val_fraction=0.2)
    for split in (d.train, d.val, d.test, d.train_eval):
        x, y, i = split[len(split) - 1]
        assert x.dtype == torch.float32 and x.shape == (1, 8, 8) and isinstance(y, int) and i == len(split) - 1
    assert isinstance(d.train.targets, np.ndarray) and d.train.targets.dtype == np.int64
    many, medium, few = d.shot_groups()
    assert len(many) + len(medium) + len(few) == 10

def test_uniform_kwargs(tmp_path):
    "Callers may pass the LT keywords to every dataset: None means the default; list datasets refuse real values."
    assert get_dataset("digits_lt", imb_factor=None, n_max=None).class_counts.tolist() == get_dataset("digits_lt").class_counts.tolist()
    _imagenet_tree(tmp_path)
    assert len(get_dataset("imagenet_lt", root=tmp_path, imb_factor=None, subset=None, n_max=None).train) == 9
    with pytest.raises(ValueError, match="fixed by the split files"): get_dataset("imagenet_lt", root=tmp_path, imb_factor=0.01)
