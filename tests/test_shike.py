"""SHIKE beyond the notebook's inline tests: training through the trainer and the run cache.

* `shike` trains on a SHIKE model and on a plain single-head model (where it is CE, then balanced-softmax re-training);
* `shike+ikl` composes like every method;
* the parent-run form (`shike_stage1` -> `shike_rt`) gives the same final weights as the one-run `shike`;
* a row's `model.*` keys reach the model through the plain `reproduce`; `Shike.run_overrides` picks the SHIKE backbone.
"""
import math

import pytest
import torch

import ltnb.ikl  # noqa: F401  registers the wrappers
import ltnb.shike as shike
from ltnb.data import get_dataset
from ltnb.engine import Trainer, TrainConfig
from ltnb.experiments import run_config, run, run_rows
from ltnb.reproduce import reproduce, TABLES
from ltnb.losses import create_method
from ltnb.models import create_model

CFG = dict(epochs=1, batch_size=64, lr=0.05, warmup_epochs=0, device="cpu", amp=False, channels_last=False,
           progress=False, seed=0)


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    return get_dataset("digits_lt", n_max=40, test_per_class=10)


def fit(name, data, model_name="shike_cnn8", **model_kw):
    method = create_method(name, data.class_counts, stage2_epochs=1)
    torch.manual_seed(0)
    model = create_model(model_name, data.num_classes, in_chans=1, **model_kw)
    res = Trainer(model, method, data, TrainConfig(**CFG)).fit()
    assert [s for s, _ in res.stages] == ["train", "retrain"]
    for row in res.history: assert math.isfinite(row["loss"]), row
    return res, model


def test_shike_trains_on_its_model(digits):
    res, model = fit("shike", digits, widths=(8, 8, 16))
    stage1 = res.history[0]
    assert {"loss_ce", "loss_nt", "loss_mu"} <= set(stage1) and stage1["loss_nt"] > 0 and stage1["loss_mu"] > 0
    assert set(k for k in res.history[1] if k.startswith("loss_")) == {"loss_bsce"}
    assert res.outputs["test"]["logits"].shape == (len(digits.test), digits.num_classes)


def test_shike_on_a_single_head_model(digits):
    res, _ = fit("shike", digits, "cnn8", widths=(8, 8, 16))
    assert "loss_nt" not in res.history[0] and "loss_mu" not in res.history[0]


def test_shike_composes_with_ikl(digits):
    res, _ = fit("shike+ikl", digits, widths=(8, 8, 16))
    assert any(k not in ("loss_ce", "loss_nt", "loss_mu") for k in res.history[0] if k.startswith("loss_"))


def test_parent_form_equals_one_run(tmp_path, digits):
    kw = {"model.name": "shike_cnn8", "model.widths": [8, 8, 16], "train.epochs": 2}
    one = run(run_config("digits_lt", "shike", "smoke", 0, **kw), tmp_path, device="cpu")
    two = run(run_config("digits_lt", "shike_rt", "smoke", 0, **kw), tmp_path, device="cpu")
    assert two.parent is not None and two.parent.config["method_name"] == "shike_stage1"
    a, b = one.state_dict(), two.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert one.last["top1"] == two.last["top1"]


def test_table_rows_with_model_overrides(tmp_path, monkeypatch):
    "A row's dotted keys reach the model; `Shike.run_overrides` picks the SHIKE backbone; the plain `reproduce` runs it."
    monkeypatch.setenv("LTNB_FIGURES", str(tmp_path / "figs"))
    rep = reproduce("shike_table4", "digits_lt", "smoke", [0], methods=["plain ResNet-32", "MoE"], device="cpu",
                    runs_dir=tmp_path)
    models = {r.label: r.config["model"] for r in rep.runs}
    assert models["plain ResNet-32"] == {"name": "shike_cnn8", "num_experts": 1, "dkf": False, "widths": [8, 8, 16]}
    assert models["MoE"]["dkf"] is False and "num_experts" not in models["MoE"]
    assert rep.runs[1].config["method"]["alpha"] == 0.0 and "model.dkf" not in rep.runs[1].config["method"]
    assert rep.runs[0].model().num_experts == 1 and rep.runs[1].model().num_experts == 3
    t = rep.compact()
    assert set(t.row) == {"plain ResNet-32", "MoE"} and (t["all (paper)"] != "").all()
    cost = shike.shike_cost(rep.runs, steps=1).set_index("row")
    assert cost.loc["MoE", "params"] > cost.loc["plain ResNet-32", "params"] > 0
    assert (cost.s_per_epoch > 0).all() and (cost.epochs_timed == 2).all()


def test_model_choice_in_run_rows(monkeypatch):
    "Which configs the SHIKE rows get (no training: `run` is a stub returning the config)."
    import ltnb.experiments as ex
    class Ran:
        def __init__(self, cfg): self.config = cfg
    monkeypatch.setattr(ex, "run", lambda cfg, *a, **k: Ran(cfg))
    monkeypatch.setattr(ex, "_all_finished", lambda cfg, runs_dir=None: True)    # no data is loaded
    shike_table5 = {k: v for k, v in TABLES["shike_table5"].rows.items() if k in ("A B", "A C", "A B C A")}
    runs, missing = run_rows(shike_table5, "digits_lt", "smoke", [0])
    assert [r.label for r in runs] == ["A B"] and missing == ["A C", "A B C A"]    # C: no third shared stage on cnn8
    assert runs[0].config["model"] == {"name": "shike_cnn8", "num_experts": 2, "fuse": [0, 1], "widths": [8, 8, 16]}
    runs, missing = run_rows(shike_table5, "imagenet_lt", "smoke", [0])           # ResNet-50: three shared stages
    assert not missing and {r.config["model"]["name"] for r in runs} == {"shike_resnet50"}
    # the backbone sweep's model.name becomes its SHIKE version; the paper budget adds SHIKE's CIFAR batch, a user's wins
    (r,), _ = run_rows({"s": "shike"}, "imagenet_lt", "smoke", [0], **{"model.name": "resnext50_32x4d"})
    assert r.config["model"]["name"] == "shike_resnext50_32x4d"
    (r,), _ = run_rows({"s": "shike_rt"}, "cifar100_lt", "paper", [0])
    assert r.config["train"]["batch_size"] == 128 and r.config["parent"]["model"]["name"] == "shike_resnet32"
    assert r.config["parent"]["train"]["batch_size"] == 128
    (r,), _ = run_rows({"s": "shike"}, "cifar100_lt", "paper", [0], **{"train.batch_size": 64})
    assert r.config["train"]["batch_size"] == 64
    # baselines keep the recipe's model
    (r,), _ = run_rows({"ce": "ce"}, "digits_lt", "smoke", [0])
    assert r.config["model"] == {"name": "cnn8"}


def test_run_config_applies_the_methods_model_choice():
    "A direct run_config gets the same model as a table row: SHIKE's multi-expert version of the recipe's backbone."
    import ltnb.shike  # noqa: F401  (registers SHIKE)
    from ltnb.experiments import run_config
    assert run_config("digits_lt", "shike", "smoke")["model"]["name"].startswith("shike_")
    assert run_config("digits_lt", "ce", "smoke")["model"]["name"] == "cnn8"
