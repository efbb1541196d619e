"""ltnb.calibration beyond the notebook's inline checks: the names outside checks use, hand-derived values, the
library oracles (torchmetrics, netcal; skipped where not installed), the registered post-hoc methods and backbones."""
import math, warnings

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm
from scipy.special import softmax
from scipy.stats import multivariate_normal

import ltnb.calibration as cal
from ltnb.calibration import ece, fit_temperature, importance_weights


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    "Tiny models and arrays: one intra-op thread is as fast, and much faster when other processes hold the cores."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def draw(rng, p):
    "One label per row of probabilities p."
    return (rng.random((len(p), 1)) < np.cumsum(p, 1)).argmax(1)


# ------------------------------------------------------------------ metrics

def test_ece_hand_case():
    # confidences 0.95 (correct), 0.95 (wrong), 0.55 (correct), 0.25 (wrong); 15 bins: the first two share a bin
    p = np.array([[0.95, 0.05], [0.05, 0.95], [0.55, 0.45], [0.25, 0.75]])
    p[3] = [0.25, 0.20]          # confidence 0.25 at class 0 (binning does not need a distribution)
    y = np.array([0, 0, 0, 1])
    want = (2 * abs(0.5 - 0.95) + abs(1 - 0.55) + abs(0 - 0.25)) / 4
    assert ece(p, y) == pytest.approx(want, abs=1e-12)
    assert ece(p, y, n_bins=1) == pytest.approx(abs(0.5 - (0.95 + 0.95 + 0.55 + 0.25) / 4), abs=1e-12)
    assert isinstance(ece(p, y), float) and 0 <= ece(p, y) <= 1


def test_ece_bin_edges_lo_exclusive_hi_inclusive():
    # a confidence exactly on an edge m/M belongs to the bin below it: 2/15 is in bin 1 = (1/15, 2/15]
    assert cal.bin_index([2 / 15], 15)[0] == 1
    assert cal.bin_index([1.0], 15)[0] == 14


def test_reliability_counts_sum_to_n():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(777, 7)) * 2
    r = cal.reliability(softmax(z, 1), rng.integers(0, 7, 777))
    assert int(r["count"].sum()) == 777 and len(r) == 15


def test_ece_mce_match_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.classification")
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2000, 10)) * 3
    y = draw(rng, softmax(z / 1.7, 1))
    p = softmax(z, 1)
    pt, yt = torch.as_tensor(p), torch.as_tensor(y)
    assert ece(p, y) == pytest.approx(tm.multiclass_calibration_error(pt, yt, 10, n_bins=15, norm="l1").item(), abs=1e-6)
    assert cal.mce(p, y) == pytest.approx(tm.multiclass_calibration_error(pt, yt, 10, n_bins=15, norm="max").item(), abs=1e-6)


def test_ece_per_group_uses_true_class():
    counts = np.array([300, 50, 5])
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.6, 0.3], [0.6, 0.1, 0.3]])
    y = np.array([0, 1, 2])
    g = cal.ece_by_group(p, y, counts)
    assert g["many"] == pytest.approx(0.2) and g["medium"] == pytest.approx(0.4) and g["few"] == pytest.approx(0.6)


# ------------------------------------------------------------------ temperature scaling

@pytest.mark.parametrize("T0", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_known_temperature(T0):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(30000, 10)) * 3
    y = draw(rng, softmax(z / T0, 1))
    assert fit_temperature(z, y) == pytest.approx(T0, rel=0.04)


def test_fit_temperature_weighted_matches_duplicated_samples():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(500, 5)) * 3
    y = draw(rng, softmax(z / 2, 1))
    w = rng.integers(1, 4, 500).astype(float)
    dup = np.repeat(np.arange(500), w.astype(int))
    assert fit_temperature(z, y, w) == pytest.approx(fit_temperature(z[dup], y[dup]), rel=1e-5)
    assert fit_temperature(torch.as_tensor(z), torch.as_tensor(y)) == pytest.approx(fit_temperature(z, y))


# ------------------------------------------------------------------ the paper's method

def _toy(seed=0, D=6):
    rng = np.random.default_rng(seed)
    cnt = [80, 50, 30, 12, 6, 3]
    ytr = np.repeat(np.arange(6), cnt)
    ftr = np.abs(rng.normal(size=(len(ytr), D)) * (1 + 0.2 * ytr[:, None]) + ytr[:, None])
    yv = np.repeat(np.arange(6), [20, 12, 8, 3, 2, 2])
    fv = np.abs(rng.normal(size=(len(yv), D)) * (1 + 0.2 * yv[:, None]) + yv[:, None])
    return cnt, ftr, ytr, fv, yv


@pytest.mark.parametrize("alpha", [0.5, 0.9, 0.998])
def test_importance_weights_head_one_tail_clipped(alpha):
    cnt, ftr, ytr, fv, yv = _toy()
    head = cal.head_classes(cnt, k=3)
    w = importance_weights(ftr, ytr, fv, yv, head, alpha)
    assert w.shape == (len(yv),)
    assert (w[np.isin(yv, head)] == 1).all()
    t = w[~np.isin(yv, head)]
    assert ((t >= 0.3) & (t <= 5.0)).all()
    w2 = importance_weights(ftr, ytr, fv, yv, head, alpha, clip=(0.9, 1.1))
    assert ((w2[~np.isin(yv, head)] >= 0.9) & (w2[~np.isin(yv, head)] <= 1.1)).all()


def test_importance_weights_against_scipy_densities():
    "Eq. 7-8 written out with scipy.stats (the code's multivariate_normal with diagonal covariance)."
    cnt, ftr, ytr, fv, yv = _toy(1)
    head, alpha, D = np.array([0, 1, 2]), 0.7, ftr.shape[1]
    mu = np.stack([ftr[ytr == c].mean(0) for c in range(6)])
    sd = np.stack([ftr[ytr == c].std(0) for c in range(6)])                 # ddof 0
    want = np.ones(len(yv))
    for i, (f, c) in enumerate(zip(fv, yv)):
        if c in head: continue
        d = np.array([((mu[c] - mu[k]) ** 2).sum() + ((sd[c] - sd[k]) ** 2).sum() for k in head])
        s = softmax(-d / math.sqrt(D))
        m2, s2 = alpha * mu[c] + (1 - alpha) * s @ mu[head], alpha * sd[c] + (1 - alpha) * s @ sd[head]
        lr = multivariate_normal(m2, np.diag(s2 ** 2)).logpdf(f) - multivariate_normal(mu[c], np.diag(sd[c] ** 2)).logpdf(f)
        want[i] = min(max(math.exp(lr), 0.3), 5.0)
    np.testing.assert_allclose(importance_weights(ftr, ytr, fv, yv, head, alpha), want, rtol=1e-7)


def test_wasserstein_closed_form():
    rng = np.random.default_rng(4)
    mu, sd = rng.normal(size=(3, 4)), rng.uniform(0.1, 2, size=(3, 4))
    W = cal.wasserstein_sq(mu, sd)
    for a in range(3):
        for b in range(3):
            S1, S2 = np.diag(sd[a] ** 2), np.diag(sd[b] ** 2)
            r = sqrtm(S1)
            g = ((mu[a] - mu[b]) ** 2).sum() + np.trace(S1 + S2 - 2 * sqrtm(r @ S2 @ r)).real
            assert W[a, b] == pytest.approx(g, abs=1e-9)


def test_dead_feature_dimensions_do_not_crash():
    cnt, ftr, ytr, fv, yv = _toy(2)
    ftr[:, 0] = 0; fv[:, 0] = 0                 # dead in every class
    ftr[ytr == 5, 1] = 0                        # dead in one tail class only
    w = importance_weights(ftr.astype(np.float16), ytr, fv, yv, cal.head_classes(cnt, zeta=30), 0.998)
    assert np.isfinite(w).all() and (w >= 0.3).all() and (w <= 5).all()


def test_head_rules():
    counts = [500, 300, 120, 60, 20, 5]
    assert cal.head_classes(counts, zeta=100).tolist() == [0, 1, 2]
    assert cal.head_classes(counts, k=2).tolist() == [0, 1]
    assert cal.IWTS(num_head=None).head(np.array(counts + [1, 1, 1, 1])).tolist() == [0, 1, 2, 3]   # 40% of 10
    assert cal.IWTS(zeta=60).head(np.array(counts)).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="exactly one"): cal.head_classes(counts, zeta=1, k=1)


# ------------------------------------------------------------------ baselines against libraries

def test_histogram_binning_and_irova_match_netcal():
    netcal = pytest.importorskip("netcal.binning")
    rng = np.random.default_rng(5)
    zv, zt = rng.normal(size=(3000, 4)) * 2, rng.normal(size=(1000, 4)) * 2
    yv = draw(rng, softmax(zv / 1.5, 1))
    ours = cal.HistogramBinning(10).fit(zv, yv).probs(zt)
    theirs = netcal.HistogramBinning(bins=10).fit(softmax(zv, 1), yv).transform(softmax(zt, 1))
    np.testing.assert_allclose(ours, theirs / theirs.sum(1, keepdims=True), atol=1e-3)
    ours = cal.IROvA().fit(zv, yv).probs(zt)
    theirs = netcal.IsotonicRegression().fit(softmax(zv, 1), yv).transform(softmax(zt, 1))
    np.testing.assert_allclose(ours, theirs / theirs.sum(1, keepdims=True), atol=1e-3)


def test_ir_matches_sklearn_on_flattened_probabilities():
    from sklearn.isotonic import IsotonicRegression
    rng = np.random.default_rng(6)
    zv, zt = rng.normal(size=(800, 3)) * 2, rng.normal(size=(200, 3)) * 2
    yv = draw(rng, softmax(zv / 2, 1))
    pv, pt = softmax(zv, 1), softmax(zt, 1)
    iso = IsotonicRegression(out_of_bounds="clip").fit(pv.ravel(), np.eye(3)[yv].ravel())
    q = iso.predict(pt.ravel()).reshape(pt.shape) + 1e-9 * pt
    np.testing.assert_allclose(cal.IR().fit(zv, yv).probs(zt), q / q.sum(1, keepdims=True), atol=1e-9)


# ------------------------------------------------------------------ registry

def test_calibrators_are_registered_post_hoc_methods():
    from ltnb.losses import METHODS, parent_method
    for name in ("ts", "ets", "ir", "irova", "ts_ir", "hb", "sbc", "iwts"):
        cls = METHODS[name]
        assert cls.posthoc and parent_method(name) == "ce" and not cls.one_run


@pytest.mark.parametrize("name", ["densenet40", "vgg19"])
def test_backbones_forward_backward(name):
    from ltnb.models import create_model
    torch.manual_seed(0)
    m = create_model(name, 7, in_chans=3)
    out = m(torch.randn(2, 3, 32, 32))
    assert out["logits"].shape == (2, 7) and out["features"].shape == (2, m.feature_dim)
    out["logits"].sum().backward()
    assert all(p.grad is not None for p in m.classifier.parameters())


def test_calibrate_run_end_to_end(tmp_path):
    from ltnb.experiments import run, run_config
    r = run(run_config("digits_lt", "ce", "smoke", 0, **{"data.val_fraction": 0.2}), tmp_path, device="cpu")
    lp = cal.calibrate_run(r, cal.IWTS(num_head=4))
    assert lp.shape == r.outputs("test")["logits"].shape
    np.testing.assert_allclose(np.exp(lp).sum(1), 1, atol=1e-9)
    r0 = run(run_config("digits_lt", "ce", "smoke", 0), tmp_path, device="cpu")
    with pytest.warns(UserWarning, match="no validation split"):
        cal.calibrate_run(r0, cal.IWTS())


def test_ece_summary_puts_the_papers_number_beside():
    import pandas as pd
    from types import SimpleNamespace
    from ltnb.reproduce import TABLES
    t = pd.DataFrame([dict(row="Base", setting="IF 100", test_set="test", seed=s, ece_all=e, ece_many=1.0, ece_medium=2.0,
                           ece_few=3.0, top1=90.0, status="ok") for s, e in [(0, 2.0), (1, 4.0)]])
    s = cal.ece_summary(t, SimpleNamespace(spec=TABLES["calib_table2"]))
    base = s[s.row == "Base"].iloc[0]
    assert base["ece (paper)"] == pytest.approx(2.52)          # Table 2, IF 100, MNIST, Base
    assert base["ece_all"].startswith("3.00 ± 1.41") and base["seeds"] == 2
    assert "Digital-S" in set(s.test_set)                       # the non-public test set is listed as unavailable
