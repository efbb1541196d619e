"The Trainer's `decode` data path (JPEG bytes from the DataLoader, decoded and augmented per batch): resume, workers, config."
import numpy as np
import pytest
import torch
from torch import nn

from ltnb.bench import write_jpeg_tree
from ltnb.core import Method
from ltnb.data import get_dataset, INAT_STD
from ltnb.engine import TrainConfig, Trainer, load_checkpoint


class Tiny(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.num_classes, self.feature_dim = num_classes, 8
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                  nn.Flatten(), nn.Linear(16, 8))
        self.classifier = nn.Linear(8, num_classes)
    def head(self, f): return self.classifier(f)
    def reset_classifier(self): self.classifier.reset_parameters()
    def forward(self, x):
        f = self.body(x); return dict(logits=self.head(f), features=f)


def model(seed=0):
    torch.manual_seed(seed); return Tiny()


def cfg(**kw):
    return TrainConfig(**{**dict(epochs=2, batch_size=8, eval_batch_size=16, lr=0.05, schedule="cosine", milestones=(),
                                 gamma=0.1, warmup_epochs=0, device="cpu", progress=False, data_path="decode"), **kw})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = write_jpeg_tree(tmp_path_factory.mktemp("jpeg"), n_train=40, num_classes=4, size=(80, 60))
    return get_dataset("inat18", root=root, image_size=32)


def test_resume_exact_with_a_worker(data, tmp_path):
    "The batch transform draws from the re-seeded global RNG in the main process: a resumed run is bit-identical."
    c = cfg(num_workers=1)
    ref_m = model(); ref = Trainer(ref_m, Method(data.class_counts), data, c).fit()
    part = Trainer(model(), Method(data.class_counts), data, c, ckpt_dir=tmp_path).fit(max_epochs_this_call=1)
    assert not part.complete and load_checkpoint(tmp_path / "last.pt")["epoch"] == 0
    m = model(seed=5); r = Trainer(m, Method(data.class_counts), data, c, ckpt_dir=tmp_path).fit()
    assert r.resumed_from == 0 and r.complete
    for k, v in ref_m.state_dict().items(): assert torch.equal(m.state_dict()[k], v), k
    assert [h["loss"] for h in r.history] == [h["loss"] for h in ref.history]
    assert torch.equal(r.outputs["test"]["logits"], ref.outputs["test"]["logits"])


def test_workers_change_nothing_but_speed(data):
    "Workers only read bytes: labels, indices and pixels are those of the main-process loader, batch for batch."
    t0, t2 = (Trainer(model(), Method(data.class_counts), data, cfg(num_workers=w)) for w in (0, 2))
    for train in (True, False):
        torch.manual_seed(1); a = list(t0._loader(data.train if train else data.test, None, train=train))
        torch.manual_seed(1); b = list(t2._loader(data.train if train else data.test, None, train=train))
        assert len(a) == len(b)
        for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
            assert torch.equal(ya, yb) and torch.equal(ia, ib) and torch.equal(xa, xb)


def test_evaluation_matches_the_pil_path(data):
    "The same weights give the same test predictions on both paths (test transform within one pixel level)."
    m = model()
    tl = Trainer(m, Method(data.class_counts), data, cfg(data_path="loader"))
    td = Trainer(m, Method(data.class_counts), data, cfg())
    el, ed = tl.evaluate()["test"][1], td.evaluate()["test"][1]
    assert torch.equal(el["targets"], ed["targets"])
    assert (el["logits"] - ed["logits"]).abs().max() < 0.05
    assert (el["logits"].argmax(1) == ed["logits"].argmax(1)).float().mean() >= 0.75


def test_paths_per_dataset(data):
    "auto keeps the PIL loader on the CPU; decode needs a translatable file-list set; CIFAR-style sets refuse it."
    assert Trainer(model(), Method(data.class_counts), data, cfg(data_path="auto")).data_path == "loader"
    d2 = get_dataset("inat18", root=data.info["image_root"].rsplit("/", 1)[0], image_size=32, augment=False)
    assert Trainer(model(), Method(d2.class_counts), d2, cfg()).data_path == "decode"      # test transform for training too
    arr = get_dataset("digits_lt")
    with pytest.raises(ValueError, match="JPEG file-list"):
        Trainer(model(), Method(arr.class_counts), arr, cfg())
    with pytest.raises(ValueError, match="data_path must be one of"):
        TrainConfig(data_path="gpu")


def test_config_key_and_hash():
    "train.data_path='decode' validates; a config that does not set data_path has no such key, so its hash is unchanged."
    from ltnb.experiments import run_config, config_hash
    from ltnb.config import validate_config, ConfigError
    c = run_config("digits_lt", "ce", "smoke")
    assert "data_path" not in c["train"]
    h = config_hash(c)
    validate_config({**c, "train": {**c["train"], "data_path": "decode"}})
    with pytest.raises(ConfigError, match="'decode'"):
        validate_config({**c, "train": {**c["train"], "data_path": "nvjpeg"}})
    assert config_hash(run_config("digits_lt", "ce", "smoke")) == h
