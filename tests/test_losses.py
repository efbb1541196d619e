"Registry-wide checks of ltnb.losses (every method trains a step, round-trips its state) plus hand-computed losses."
import math

import pytest
import torch
from torch import nn

from ltnb.core import Method, Stage, trainable_parameters
from method_needs import NEEDS_DATA, OWN_MODEL
from ltnb.losses import (METHODS, create_method, balanced_softmax_loss, logit_adjusted_loss, ldam_loss, ldam_margins,
                         effective_number_weights, class_balanced_loss, focal_loss, tau_norm_sweep)

COUNTS = [40, 12, 5, 1]
CONTRACT = {"ce", "bsce", "la", "la_posthoc", "ldam_drw", "ldam", "cb_softmax", "cb_sigmoid", "cb_focal", "focal", "drw",
            "crt", "lws", "tau_norm"}


def lse(z):
    "log-sum-exp of a list of floats, written out."
    return math.log(sum(math.exp(v) for v in z))


class Tiny(nn.Module):
    "Features (B, 3) and a linear head over len(COUNTS) classes, with a BatchNorm in the body."
    def __init__(self, C=len(COUNTS)):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 3), nn.BatchNorm1d(3))
        self.classifier, self.num_classes, self.feature_dim = nn.Linear(3, C), C, 3

    def forward(self, x):
        f = self.body(x)
        return {"features": f, "logits": self.classifier(f)}


def test_contract_methods_registered():
    assert CONTRACT <= set(METHODS.names())


def test_paper_names_unique():
    names = [METHODS[n].paper_name for n in METHODS.names()]
    assert all(names) and len(set(names)) == len(names)


@pytest.mark.parametrize("name", METHODS.names())
def test_method_trains_one_step_per_stage(name):
    torch.manual_seed(0)
    model, meth = Tiny(), create_method(name, COUNTS)
    assert isinstance(meth, Method) and meth.name == name
    if name == "ride_ea":   # routes between experts: a single head is refused with a clear error
        with pytest.raises(ValueError, match="single head"): meth.setup(model)
        pytest.skip("ride_ea needs a multi-expert model (refusal checked)")
    if name in NEEDS_DATA:  # its own model or the training images: refused with a clear error; tests/test_registry.py trains it
        with pytest.raises(ValueError, match=NEEDS_DATA[name]): meth.setup(model)
        pytest.skip(f"{name} needs its own model or the dataset (refusal checked; trained in tests/test_registry.py)")
    meth.setup(model)
    stages = meth.stages(5)
    assert stages[0].epochs == 5 and all(isinstance(s, Stage) for s in stages)
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 0, 0])
    epoch = 0
    for st in stages:
        meth.on_stage_start(st, model)
        params = trainable_parameters(model, st, meth)
        out = model(x)
        terms = meth.loss_terms(out, y, torch.arange(6), epoch, st)
        assert terms and all(v.ndim == 0 and torch.isfinite(v) for v in terms.values())
        if st.epochs > 0:
            assert params, f"{name}: stage {st.name} trains nothing"
            sum(terms.values()).backward()
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
            for p in params: p.grad = None
        assert meth.eval_logits(out).shape == (6, len(COUNTS))
        epoch += st.epochs
    fresh = create_method(name, COUNTS)
    fresh.load_state_dict(meth.state_dict())
    out = model(x)
    torch.testing.assert_close(fresh.eval_logits(out), meth.eval_logits(out))


def test_lws_stage2_trains_only_scales():
    model, meth = Tiny(), create_method("lws", COUNTS)
    s1, s2 = meth.stages(3)
    meth.on_stage_start(s1, model)
    assert all(p is not meth.scales for p in trainable_parameters(model, s1, meth))
    meth.on_stage_start(s2, model)
    params = trainable_parameters(model, s2, meth)
    assert len(params) == 1 and params[0] is meth.scales
    assert (s2.epochs, s2.sampler, s2.trainable, s2.warmup_epochs) == (5, "class_balanced", "method", 0)


def test_crt_stage2_defaults():
    s2 = create_method("crt", COUNTS).stages(200)[1]
    assert (s2.name, s2.epochs, s2.sampler, s2.trainable, s2.reinit_classifier, s2.bn_mode, s2.schedule, s2.warmup_epochs) == \
        ("crt", 10, "class_balanced", "classifier", True, "train", "cosine", 0)


def test_tau_norm_is_post_hoc_and_drops_bias():
    model, meth = Tiny(2), create_method("tau_norm", [3, 1], tau=1.)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor([[0., 3., 4.], [0., 0., 2.]])); model.classifier.bias.fill_(50.)
    s1, s2 = meth.stages(4)
    assert s2.epochs == 0
    meth.on_stage_start(s2, model)
    out = {"features": torch.tensor([[9., 1., 1.]]), "logits": torch.zeros(1, 2)}
    # w / ||w||: (0, .6, .8) and (0, 0, 1) -> (1.4, 1.0); the 50 bias is gone
    torch.testing.assert_close(meth.eval_logits(out), torch.tensor([[1.4, 1.0]]))


def test_hand_computed_losses():
    z = [0.5, -1.0, 2.0]
    zt = torch.tensor([z])
    # BSCE, counts (4, 2, 1): CE(z + log n)
    zb = [v + math.log(n) for v, n in zip(z, [4, 2, 1])]
    assert balanced_softmax_loss(zt, torch.tensor([1]), [4, 2, 1]).item() == pytest.approx(lse(zb) - zb[1], rel=1e-6)
    # LA with tau 0.5 and prior (4, 2, 1)/7
    za = [v + 0.5 * math.log(n / 7) for v, n in zip(z, [4, 2, 1])]
    assert logit_adjusted_loss(zt, torch.tensor([2]), torch.tensor([4, 2, 1]) / 7, tau=.5).item() == pytest.approx(lse(za) - za[2], rel=1e-5)
    # LDAM, counts (81, 16, 1): n^-1/4 = (1/3, 1/2, 1) -> margins (1/6, 1/4, 1/2); y = 1, s = 2
    m = ldam_margins([81, 16, 1])
    torch.testing.assert_close(m, torch.tensor([1 / 6, 1 / 4, 1 / 2]))
    zl = [2 * z[0], 2 * (z[1] - .25), 2 * z[2]]
    assert ldam_loss(zt, torch.tensor([1]), m, s=2.).item() == pytest.approx(lse(zl) - zl[1], rel=1e-6)
    # effective-number weights, counts (1, 1, 2), beta 0.5: raw (1, 1, 2/3), sum 8/3 -> x 3/(8/3) = (9/8, 9/8, 3/4)
    torch.testing.assert_close(effective_number_weights([1, 1, 2], .5), torch.tensor([9 / 8, 9 / 8, 3 / 4]))
    # CB softmax (paper): mean of w_y * CE over the batch
    y = torch.tensor([2, 0])
    z2 = torch.tensor([z, [0., 0., 0.]])
    ref = (0.75 * (lse(z) - z[2]) + 9 / 8 * math.log(3)) / 2
    assert class_balanced_loss(z2, y, [1, 1, 2], beta=.5).item() == pytest.approx(ref, rel=1e-6)
    # CB focal at z = 0: every entry (1/2)^gamma * log 2 * w_y, 3 entries per example, / 2 positives
    ref = (0.75 + 9 / 8) * 3 * 0.5 * math.log(2) / 2
    assert class_balanced_loss(torch.zeros(2, 3), y, [1, 1, 2], beta=.5, loss_type="focal", gamma=1.).item() == pytest.approx(ref, rel=1e-6)
    # softmax focal, z = (log 3, 0, 0), y = 0: p = 3/5, loss = (2/5)^2 * log(5/3)
    assert focal_loss(torch.tensor([[math.log(3), 0., 0.]]), torch.tensor([0]), gamma=2., form="softmax").item() == \
        pytest.approx(0.16 * math.log(5 / 3), rel=1e-6)


def test_losses_are_float32_under_low_precision_logits():
    z = torch.randn(4, 4).to(torch.bfloat16)
    y = torch.tensor([0, 1, 2, 3])
    # BBN's and MDCS's loss_terms need setup (their model, the training images): their losses are checked directly
    from ltnb.bbn import bbn_loss
    from ltnb.mdcs import consistency_loss, diversity_loss
    ze = torch.randn(3, 4, 4).to(torch.bfloat16)
    for v in (bbn_loss(z, y, y.flip(0), 0.3), diversity_loss(ze, y), consistency_loss(ze, ze.flip(1), y)):
        assert v.dtype == torch.float32
    for name in METHODS.names():
        if name in NEEDS_DATA: continue
        terms = create_method(name, COUNTS).loss_terms({"logits": z, "features": torch.randn(4, 3)}, y, None, 0, Stage())
        assert all(v.dtype == torch.float32 for v in terms.values()), name


def test_posthoc_and_drw_schedule():
    meth = create_method("la_posthoc", [3, 1])
    # z = (1, 0.5): minus log(.75), log(.25) -> the tail class wins
    assert meth.eval_logits({"logits": torch.tensor([[1., .5]])}).argmax(1).item() == 1
    drw = create_method("drw", COUNTS)
    st = Stage("train", 200)
    assert drw._drw_weight(159, st) is None
    torch.testing.assert_close(drw._drw_weight(160, st), effective_number_weights(COUNTS))


def test_tau_sweep_picks_on_given_set():
    W = torch.tensor([[3., 4.], [0., 2.]])
    acc = tau_norm_sweep(torch.tensor([[1., 1.], [1., 0.]]), torch.tensor([1, 0]), W, [0., 1., 2.])
    torch.testing.assert_close(acc, torch.tensor([50., 50., 100.]))


def test_bad_input_messages():
    with pytest.raises(KeyError, match="Valid methods"): create_method("softmax_ce", COUNTS)
    with pytest.raises(TypeError, match="valid"): create_method("la", COUNTS, temperature=2.)
    with pytest.raises(ValueError, match="counts"): create_method("bsce", None)
    with pytest.raises(ValueError, match="cb_form"): create_method("cb_softmax", COUNTS, cb_form="pytorch")
