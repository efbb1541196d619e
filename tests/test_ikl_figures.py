"""IKL Fig. 4 / Fig. 5 machinery and the LTRL Tables 1-6 declarations (`ltnb.ikl_figures`), beyond the notebook's own tests.

* `iklgrad` trains bit-identically to `ikl` through the real `Trainer` (also with Knowledge Correction, whose two backward
  passes need the graph the recorder keeps, and in the LTRL form, which has no alpha);
* the gradient log survives an interrupted and resumed run (it rides in the checkpoint's method state);
* the LTRL declarations run through `reproduce` and show the hosts ltnb lacks as missing with the paper's number.
"""
import math

import numpy as np
import pytest
import torch

import ltnb.ikl_figures  # noqa: F401  registers the "iklgrad" wrapper and the LTRL tables (until `import ltnb` does)
from ltnb.ikl_figures import grad_log_frame, fig4_rows, IKLGradLog
from ltnb.data import get_dataset
from ltnb.engine import Trainer, TrainConfig
from ltnb.losses import create_method, WRAPPERS
from ltnb.models import create_model

CFG = dict(epochs=3, batch_size=64, lr=0.05, warmup_epochs=0, schedule="constant", device="cpu", amp=False,
           channels_last=False, progress=False, seed=0)


@pytest.fixture(scope="module")
def digits():
    "digits_lt with n_max=40 (159 training images: 3 batches) and 10 test images per class."
    return get_dataset("digits_lt", n_max=40, test_per_class=10)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def fit(name, data, ckpt_dir=None, max_epochs=None, **kw):
    method = create_method(name, data.class_counts, **kw)
    torch.manual_seed(0)
    model = create_model("cnn8", data.num_classes, in_chans=1, widths=(8, 16, 32))
    res = Trainer(model, method, data, TrainConfig(**CFG), ckpt_dir=ckpt_dir).fit(max_epochs_this_call=max_epochs)
    return model, method, res


@pytest.mark.parametrize("name,kw", [("bsce+ikl", {}), ("bsce+ikl+kc", {}), ("ce+ltrl", {}), ("bsce+ikl", {"alpha": "learnable"})])
def test_iklgrad_trains_like_ikl(name, kw, digits):
    "The recorder takes gradients of the logits only: the trained model and its history are exactly IKL's."
    m_ikl, _, r_ikl = fit(name, digits, **kw)
    m_log, meth, r_log = fit(name.replace("+ikl", "+iklgrad").replace("+ltrl", "+iklgrad"), digits,
                             **({"loss_form": "ltrl", "soft_label": "ltrl", "kc": True} if "ltrl" in name else {}), **kw)
    assert isinstance(meth, IKLGradLog)
    for (k, a), b in zip(m_ikl.state_dict().items(), m_log.state_dict().values()): assert torch.equal(a, b), k
    assert [h["loss"] for h in r_ikl.history] == [h["loss"] for h in r_log.history]
    f = grad_log_frame(meth)
    assert sorted(f.epoch.unique()) == [0, 1, 2]
    assert (f.groupby("epoch").n.sum() == len(digits.train)).all()        # every sample once per epoch
    later = f[f.epoch > 0]
    assert np.isfinite(later.g_ikl_trained).all() and (later.abs_g_ikl_trained > 0).any()


def test_alpha_divided_out(digits):
    "With the parabolic alpha (0 at epoch 0) the unweighted gradient of epoch 0 is NaN; later ones are the trained ones / alpha."
    _, meth, _ = fit("bsce+iklgrad", digits)
    f = grad_log_frame(meth)
    e0, e2 = f[f.epoch == 0], f[f.epoch == 2]
    assert e0.alpha.iloc[0] == 0 and e0.g_ikl.isna().all() and (e0.g_ikl_trained == 0).all()
    a = (2 / 3) ** 2
    assert math.isclose(e2.alpha.iloc[0], a)
    np.testing.assert_allclose(e2.g_ikl.values, e2.g_ikl_trained.values / a)
    np.testing.assert_allclose(e2.g_ltr.values, e2.g_ltr_trained.values / (1 - a))


def test_grad_log_resumes(digits, tmp_path):
    "A run stopped after one epoch and resumed has the log of an uninterrupted run."
    _, full, _ = fit("bsce+iklgrad", digits)
    fit("bsce+iklgrad", digits, ckpt_dir=tmp_path, max_epochs=1)
    _, resumed, res = fit("bsce+iklgrad", digits, ckpt_dir=tmp_path)
    assert res.resumed_from == 0
    a, b = grad_log_frame(full), grad_log_frame(resumed)
    assert list(a.epoch.unique()) == list(b.epoch.unique()) == [0, 1, 2]
    np.testing.assert_allclose(a.select_dtypes("number").values, b.select_dtypes("number").values, rtol=1e-5, atol=1e-7)


def test_registered():
    assert WRAPPERS["iklgrad"] is IKLGradLog
    assert {r[2] if isinstance(r[2], str) else r[2][0] for r in fig4_rows([1, 2, 4])} == \
        {"ce", "bsce", "ce+ikl", "bsce+ikl", "bsce+ikl+nocks", "bsce+ikl+mse"}


def test_ltrl_tables_reproduce(tmp_path, monkeypatch):
    "LTRL Table 6 through `reproduce`: ltnb's rows run, OLTR (not implemented) shows as missing with the slides' number."
    from ltnb.reproduce import reproduce
    monkeypatch.setenv("LTNB_FIGURES", str(tmp_path))
    rep = reproduce("ltrl_table6", "digits_lt", "smoke", [0], methods=["ce", "OLTR"], runs_dir=tmp_path, device="cpu")
    t = rep.table.set_index("method")
    assert t.loc["Softmax", "status"] == "ok" and t.loc["OLTR", "status"] == "missing"
    assert t.loc["Softmax", "all_paper"] == 41.4 and t.loc["OLTR", "few_paper"] == 17.6    # ltrl_table6.csv
    assert (tmp_path / "ltrl_table6_digits_lt_smoke_seeds0.csv").exists()
