"""SHIKE beyond the notebook's inline tests: training through the trainer and the run cache.

* `shike` trains on a SHIKE model and on a plain single-head model (where it is CE, then balanced-softmax re-training);
* `shike+ikl` composes like every method;
* the parent-run form (`shike_stage1` -> `shike_rt`) gives the same final weights as the one-run `shike`;
* a row's `model.*` keys reach the model through `reproduce_shike`.
"""
import math

import pytest
import torch

import ltnb.ikl  # noqa: F401  registers the wrappers
import ltnb.shike as shike
from ltnb.data import get_dataset
from ltnb.engine import Trainer, TrainConfig
from ltnb.experiments import run_config, run
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


def test_reproduce_shike_model_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("LTNB_FIGURES", str(tmp_path / "figs"))
    rep = shike.reproduce_shike("shike_table4", "digits_lt", "smoke", [0], methods=["plain ResNet-32", "MoE"],
                                device="cpu", runs_dir=tmp_path, overrides={"model.widths": [8, 8, 16]})
    models = {r.label: r.config["model"] for r in rep.runs}
    assert models["plain ResNet-32"]["name"] == "shike_cnn8" and models["plain ResNet-32"]["num_experts"] == 1
    assert models["MoE"]["dkf"] is False and rep.runs[1].config["method"]["alpha"] == 0.0
    t = rep.compact()
    assert set(t.row) == {"plain ResNet-32", "MoE"} and (t["all (paper)"] != "").all()
    cost = shike.shike_cost(rep.runs, steps=1).set_index("row")
    assert cost.loc["MoE", "params"] > cost.loc["plain ResNet-32", "params"] > 0
    assert (cost.s_per_epoch > 0).all() and (cost.epochs_timed == 2).all()


def test_table5_rows_the_backbone_cannot_build_are_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("LTNB_FIGURES", str(tmp_path / "figs"))
    rep = shike.reproduce_shike("shike_table5", "digits_lt", "smoke", [0], methods=["C", "A B"], device="cpu",
                                runs_dir=tmp_path, overrides={"model.widths": [8, 8, 16]})
    assert [r.label for r in rep.runs] == ["A B"]
    t = rep.table.set_index("method")
    assert t.loc["C", "status"] == "missing" and t.loc["C", "all_paper"] == pytest.approx(55.84)
