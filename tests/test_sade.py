"""SADE beyond the notebook's inline tests: composition with IKL / LTRL, the run cache, the post-hoc aggregation.

* `sade+ikl` and `sade+ltrl` train on digits_lt (smoke-sized) with the generic wrappers, on SADE's multi-expert model;
* `sade_tta` on a finished `sade` run: learned per split, `split=` names the split, the weights are kept in method.pt;
* the test-agnostic report on the forward / uniform / backward test sets.
"""
import math

import numpy as np
import pytest
import torch

import ltnb  # noqa: F401  registers sade, sade_tta and the wrappers
import ltnb.sade as sade
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


def fit(name, data):
    method = create_method(name, data.class_counts)
    torch.manual_seed(0)
    model = create_model("multi_expert_cnn8", data.num_classes, in_chans=1, reduce_dimension=True, widths=(8, 8, 16))
    res = Trainer(model, method, data, TrainConfig(**CFG)).fit()
    for row in res.history: assert math.isfinite(row["loss"]), row
    return res, method


@pytest.mark.parametrize("name", ["sade+ikl", "sade+ltrl"])
def test_sade_composes(digits, name):
    res, method = fit(name, digits)
    assert method.base.name == "sade" and hasattr(method.base, "expert_adjusted_logits")
    assert res.outputs["test"]["logits"].shape == (len(digits.test), digits.num_classes)
    keys = {k for k in res.history[0] if k.startswith("loss_")}
    assert len(keys) > 1, keys                                   # the wrapper's terms beside SADE's


def test_sade_terms(digits):
    res, _ = fit("sade", digits)
    assert {"loss_forward", "loss_uniform", "loss_backward"} <= set(res.history[0])


def test_composite_configs_use_sade_model():
    for name in ("sade+ikl", "sade+ltrl"):
        cfg = run_config("digits_lt", name, "smoke")
        assert cfg["model"]["name"] == "multi_expert_cnn8" and cfg["model"]["reduce_dimension"] is True


def test_posthoc_aggregation(tmp_path):
    torch.set_num_threads(1)
    kw = {"tta_epochs": 1}
    parent = run(run_config("digits_lt", "sade", "smoke"), tmp_path, device="cpu")
    child = run(run_config("digits_lt", "sade_tta", "smoke", method_kw=kw), tmp_path, device="cpu")
    assert child.is_posthoc and child.parent.path == parent.path
    learned = torch.load(child.path / "method.pt", weights_only=True)["_extra_state"]["learned"]
    assert set(learned) == {"test"} and abs(sum(learned["test"]["weights"]) - 1) < 1e-5
    # split= names the split directly and gives the same weights as finding it from the targets
    m = create_method("sade_tta", parent.class_counts, tta_epochs=1)
    a = m.posthoc_logits(parent.outputs("test"), parent)
    b = m.posthoc_logits({"targets": np.zeros(1)}, parent, split="test")
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="split="):
        m.posthoc_logits({"targets": np.zeros(3)}, parent)


def test_report_distribution_sizes(tmp_path):
    torch.set_num_threads(1)
    r = run(run_config("digits_lt", "sade", "smoke"), tmp_path, device="cpu")
    rep = sade.test_agnostic_report(r, ("forward10", "uniform", "backward10"), tta=False, experts=False)
    n = dict(zip(rep.distribution, rep.n))
    per_class = len(r.outputs("test")["targets"]) // 10
    want = sum(int(per_class * 0.1 ** (c / 9)) for c in range(10))
    assert n == {"forward10": want, "uniform": 10 * per_class, "backward10": want}
