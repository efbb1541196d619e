"""IWB and weight balancing through the run cache: stage 2 starts from a finished `ce_wd` run.

Checks beyond the notebook's inline tests (`nbs/30_iwb.ipynb`):
* one stage-1 run per seed feeds `wb`, `iwb` and `tau_norm_wd` (same parent directory), and the child's config holds it;
* the frozen encoder is bit-identical after stage 2 (parameters and BN statistics), the code form changes it;
* MaxNorm: after a `wb` run no classifier row is outside its ball, the bias is not projected;
* an interrupted `wb` run resumes onto the same MaxNorm ball (bit-identical to an uninterrupted one);
* the recipe values reach the methods (per dataset), and the paper's λ per dataset.
"""
import math

import pytest
import torch

import ltnb.ikl  # noqa: F401  the "+ltrl" wrapper
import ltnb.iwb  # noqa: F401  registers ce_wd, wb, iwb, tau_norm_wd
from ltnb.experiments import run, run_config, method_values
from ltnb.iwb import IWB, maxnorm_radius, number_coefficient, hardness_coefficient, weight_norm_kl


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("iwb-runs")


def _encoder(sd):
    return {k: v for k, v in sd.items() if not k.startswith("classifier.")}


def test_public_names_and_semantics():
    # N = 10: log2(10 / 9), log2(10 / 2)
    assert torch.allclose(number_coefficient([8, 1, 1]), torch.log2(torch.tensor([10 / 9, 10 / 2, 10 / 2])))
    assert torch.allclose(hardness_coefficient(torch.tensor([[0., 3.]]), torch.tensor([[0., 1.], [1., 0.]])),
                          torch.tensor([[0., 0.5]]))
    W, P = torch.randn(5, 3), torch.randn(4, 5)
    q = torch.softmax(W.norm(dim=1), 0)
    want = (q * (q.log() - torch.log_softmax(P, 1))).sum(1)      # KL(softmax|W| || softmax P_i) per sample
    assert torch.allclose(weight_norm_kl(W, P), want, atol=1e-6)
    assert weight_norm_kl(W, P).shape == (4,)


def test_one_stage1_run_feeds_every_stage2_row(runs):
    cfgs = {m: run_config("digits_lt", m, "smoke", 0) for m in ("wb", "iwb", "tau_norm_wd")}
    assert all(c["parent"]["method_name"] == "ce_wd" for c in cfgs.values())
    assert cfgs["wb"]["parent"] == cfgs["iwb"]["parent"] == cfgs["tau_norm_wd"]["parent"]
    rs = {m: run(c, runs, device="cpu") for m, c in cfgs.items()}
    parents = {str(r.parent.path) for r in rs.values()}
    assert len(parents) == 1, parents
    for r in rs.values(): assert math.isfinite(r.last["top1"])


def test_frozen_encoder_bit_identical(runs):
    r = run(run_config("digits_lt", "iwb", "smoke", 0), runs, device="cpu")
    before, after = _encoder(r.parent.state_dict()), _encoder(r.state_dict())
    assert before.keys() == after.keys() and any("running_mean" in k for k in before)   # BN statistics are checked too
    for k in before: assert torch.equal(before[k], after[k]), k
    # the classifier did move
    assert not torch.equal(r.parent.state_dict()["classifier.weight"], r.state_dict()["classifier.weight"])
    # the released code trains everything (BN in train mode): the encoder changes
    rc = run(run_config("digits_lt", "iwb", "smoke", 0, method_kw=dict(form="code")), runs, device="cpu")
    assert rc.parent.path == r.parent.path
    assert any(not torch.equal(before[k], v) for k, v in _encoder(rc.state_dict()).items())


@pytest.mark.parametrize("form", ["paper", "code"])
def test_maxnorm_ball_after_wb_run(runs, form):
    r = run(run_config("digits_lt", "wb", "smoke", 0, method_kw=dict(form=form)), runs, device="cpu")
    W0, W1 = r.parent.state_dict()["classifier.weight"], r.state_dict()["classifier.weight"]
    radius = maxnorm_radius(W0, 0.1)
    assert torch.allclose(r.method_state_dict()["radius"], radius[None])
    assert (W1.norm(dim=1) <= radius * (1 + 1e-6)).all()
    if form == "paper":   # the encoder stays fixed, BN statistics included
        for k, v in _encoder(r.parent.state_dict()).items(): assert torch.equal(v, r.state_dict()[k]), k


def test_wb_resume_keeps_the_ball(tmp_path):
    cfg = run_config("digits_lt", "wb", "smoke", 0, method_kw=dict(stage2_epochs=2))
    full = run(cfg, tmp_path / "a", device="cpu")
    part = run(cfg, tmp_path / "b", device="cpu", stop_after=1)    # parent finishes; the child stops after 1 epoch
    assert not part.complete
    resumed = run(cfg, tmp_path / "b", device="cpu")
    for k, v in full.state_dict().items(): assert torch.equal(v, resumed.state_dict()[k]), k


def test_recipe_values_per_dataset():
    assert method_values("iwb", "cifar100_lt", "paper", 200)["lam"] == 0.15
    assert method_values("iwb", "imagenet_lt", "paper", 180)["lam"] == 0.05
    assert method_values("iwb", "inat18", "paper", 100)["lam"] == 0.01
    v = method_values("iwb", "cifar100_lt", "paper", 200)
    assert (v["stage2_epochs"], v["stage2_lr"]) == (10, 0.005)
    assert method_values("iwb", "cifar100_lt", "cpu", 30)["stage2_epochs"] == 5     # reduced budgets: their own stage-2 length
    s1 = method_values("ce_wd", "cifar100_lt", "paper", 200)
    assert (s1["weight_decay"], s1["stage1_lr"], s1["stage1_schedule"]) == (5e-3, 0.01, "cosine")
    assert method_values("ce_wd", "inat18", "paper", 100)["weight_decay"] == 1e-4
    assert method_values("wb", "cifar100_lt", "paper", 200)["stage2_weight_decay"] == 0.1


def test_ltrl_on_both_wb_stages():
    cfg = run_config("digits_lt", "wb+ltrl", "smoke", 0, method_kw=dict(loss="cb"))
    assert cfg["parent"]["method_name"] == "ce_wd+ltrl" and cfg["method"]["loss"] == "cb"


def test_bad_options_are_clear():
    c = [5, 3, 1]
    with pytest.raises(ValueError, match="kl_direction"): IWB(c, kl_direction="forward")
    with pytest.raises(ValueError, match="hc must be"): IWB(c, hc="matrix")
    with pytest.raises(ValueError, match="form must be"): IWB(c, form="official")
