"""NCL and BBN through the whole run path (config, cache, model choice) on digits_lt smoke, alone and under +ikl / +ltrl."""
import math
import pytest
import torch
import ltnb  # noqa: F401  registers ncl, bbn and the wrappers
from ltnb.experiments import run_config, run
from ltnb.losses import create_method


@pytest.mark.parametrize("method", ["ncl", "bbn", "ncl+ikl", "bbn+ikl", "ncl+ltrl", "bbn+ltrl"])
def test_trains_on_digits_smoke(method, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = run_config("digits_lt", method, "smoke", 0, **{"model.widths": [8, 8, 16]})
    assert cfg["model"]["name"] == ("ncl_cnn8" if method.startswith("ncl") else "bbn_cnn8")
    r = run(cfg, tmp_path, device="cpu")
    assert r.complete and math.isfinite(r.history[-1]["loss"]) and 0 <= r.last["top1"] <= 100
    if method.startswith("ncl"): assert {"loss_ce", "loss_hcm", "loss_nbod", "loss_nbod_hcm"} <= set(r.history[-1]) or "+" in method
    r2 = run(cfg, tmp_path, device="cpu")            # loads from the cache: the model rebuilds from the config
    assert r2.from_cache and r2.last["top1"] == r.last["top1"]


def test_wrapped_methods_expose_the_lead_hooks():
    counts = [100, 50, 20, 10]
    for name in ("ncl", "bbn"):
        m = create_method(name, counts)
        assert m.ltrl_code is None and callable(m.expert_adjusted_logits)
        w = create_method(name + "+ikl", counts)
        assert w.base.name == name


def test_bbn_refuses_a_plain_model():
    from ltnb.data import get_dataset
    from ltnb.models import create_model
    d = get_dataset("digits_lt")
    with pytest.raises(ValueError, match="BBN model"):
        create_method("bbn+ikl", d.class_counts).setup(create_model("cnn8", d.num_classes, in_chans=1), d)
