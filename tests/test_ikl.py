"""IKL/LTRL as a wrapper of every registered method (a registry loop, as timm does for models), and from the CLI."""
import json, math, subprocess, sys
import pytest
import torch
from torch.utils.data import DataLoader
from ltnb.data import get_dataset
from ltnb.models import create_model
from ltnb.losses import METHODS, create_method
from ltnb.experiments import run_config, build
from ltnb.engine import backward_terms


def _detached(v):
    "A model output detached as the trainer passes it on: tensors, and lists of tensors (a multi-expert model's)."
    if torch.is_tensor(v): return v.detach()
    if isinstance(v, (list, tuple)): return type(v)(_detached(t) for t in v)
    return v


@pytest.fixture(scope="module")
def digits():
    return get_dataset("digits_lt")


_CASES = [(b, "ikl+kc") for b in METHODS.names()] + [(b, "ltrl") for b in ("ce", "bsce", "crt", "lws", "tau_norm")]

@pytest.mark.parametrize("base,wrapper", _CASES)
def test_every_method_takes_ikl(base, wrapper, digits):
    "Each stage of '<base>+<wrapper>' gives finite terms and a finite gradient on a real batch, two epochs running."
    cfg = run_config("digits_lt", f"{base}+{wrapper}", "smoke", 0)
    _, model, method = build(cfg, digits)
    method.setup(model, digits)
    # a shuffled batch: the default centres come from the training batches, so the batch must hold several classes
    x, y, idx = next(iter(DataLoader(digits.train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))))
    assert len(set(y.tolist())) > 2
    for si, stage in enumerate(method.stages(4)):
        method.on_stage_start(stage, model)
        if stage.epochs == 0: continue
        for epoch in (2 * si, 2 * si + 1):
            method.on_epoch_start(epoch, stage, model)
            out = model(x)
            terms = method.loss_terms(out, y, idx, epoch, stage)
            assert {"ltr", "iur", "icl"} <= set(terms), terms
            assert all(torch.isfinite(v) for v in terms.values()), terms
            model.zero_grad()
            params = [p for p in model.parameters() if p.requires_grad]
            backward_terms(terms, params, method.grad_rule)        # KC (+kc, +ltrl) through the trainer's own path
            grads = [p.grad for p in params if p.grad is not None]
            assert grads and all(torch.isfinite(g).all() for g in grads)
            method.on_batch_end({k: _detached(v) for k, v in out.items()}, y, idx, epoch, stage)
            method.on_epoch_end(epoch, stage, model)
    # ICL's similarity matrix of the last epoch's class centres (Eq. 7): cosine similarities, so unit diagonal and symmetric
    assert bool(method.has_M) and torch.allclose(method.M.diag(), torch.ones(method.num_classes), atol=1e-4)
    assert torch.allclose(method.M, method.M.T, atol=1e-5) and not torch.equal(method.M, torch.eye(method.num_classes))
    if method.grad_rule is not None: assert method.kc_stats[1] > 0, "KC was never applied"
    assert torch.isfinite(method.eval_logits(model(x))).all()


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ltnb.experiments", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_cli_runs_composite_names(tmp_path):
    p = _cli("--dataset", "digits_lt", "--method", "bsce+ikl+kc", "bsce+ltrl+code", "--runs-dir", str(tmp_path),
             "--device", "cpu", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    recs = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    assert [r["method"] for r in recs] == ["bsce+ikl+kc", "bsce+ltrl+code"]
    assert all(math.isfinite(r["last"]["top1"]) for r in recs)
    assert (tmp_path / "digits_lt" / "bsce+ikl+kc").is_dir()


def test_cli_rejects_unknown_option(tmp_path):
    p = _cli("--dataset", "digits_lt", "--method", "bsce+ikl+kcc", "--runs-dir", str(tmp_path), cwd=tmp_path)
    assert p.returncode == 2 and "nocks" in p.stderr


def _sum_grads(losses, params):
    "d(sum of losses)/d params, zeros where unused (None when the sum has no path to the parameters)."
    tot = sum(losses)
    if not torch.is_tensor(tot) or not tot.requires_grad: return [torch.zeros_like(p) for p in params]
    gs = torch.autograd.grad(tot, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params)]


def _kc_by_hand(terms, params, rule):
    "LTRL Eq. 10 computed here from the two groups' separate gradients (kc_project), plus the terms in neither group."
    from ltnb.ikl import kc_project
    gb = _sum_grads([v for k, v in terms.items() if k in rule.base], params)
    go = _sum_grads([v for k, v in terms.items() if k in rule.other], params)
    gr = _sum_grads([v for k, v in terms.items() if k not in rule.base and k not in rule.other], params)
    if rule.per_tensor: comb = [kc_project(b, o) for b, o in zip(gb, go)]
    else:
        flat = kc_project(torch.cat([g.reshape(-1) for g in gb]), torch.cat([g.reshape(-1) for g in go]))
        comb, o = [], 0
        for p in params: comb.append(flat[o:o + p.numel()].view_as(p)); o += p.numel()
    plain = [b + o + r for b, o, r in zip(gb, go, gr)]
    return [c + r for c, r in zip(comb, gr)], plain


@pytest.mark.parametrize("base,wrapper", _CASES + [("bsce", "ltrl+code")])
def test_kc_goes_through_the_grad_rule(base, wrapper, digits):
    """With KC on, the gradient the trainer's `backward_terms` leaves in `p.grad` is Eq. 10's projection of the method's
    own groups, computed here by hand — on terms made to conflict (the knowledge group minus 10x the base group), so the
    projection differs from the plain sum and a rule that is not applied (wrong group names, rule ignored) fails."""
    cfg = run_config("digits_lt", f"{base}+{wrapper}", "smoke", 0)
    _, model, method = build(cfg, digits)
    rule = method.grad_rule
    assert rule is not None
    method.setup(model, digits)
    x, y, idx = next(iter(DataLoader(digits.train, batch_size=32, shuffle=False)))
    stage = method.stages(4)[0]
    method.on_stage_start(stage, model)
    method.on_epoch_start(0, stage, model)
    method.on_batch_end({k: _detached(v) for k, v in model(x).items()}, y, idx, 0, stage)
    method.on_epoch_end(0, stage, model)
    method.on_epoch_start(1, stage, model)
    terms = method.loss_terms(model(x), y, idx, 2, stage)
    kb = [k for k in rule.base if k in terms][0]
    ko = [k for k in rule.other if k in terms][0]
    terms[ko] = terms[ko] - 10 * terms[kb]                         # a conflict by construction
    params = [p for p in model.parameters() if p.requires_grad]
    want, plain = _kc_by_hand(terms, params, rule)
    assert max((w - p).abs().max().item() for w, p in zip(want, plain)) > 1e-4, "no conflict: the check would be void"
    model.zero_grad()
    before = method.kc_stats[1].item()
    backward_terms(terms, params, rule)
    assert method.kc_stats[1].item() > before, "KC's combine was never called"
    for p, w in zip(params, want):
        torch.testing.assert_close(p.grad if p.grad is not None else torch.zeros_like(p), w, rtol=1e-4, atol=1e-6)


def test_teacher_is_epoch_t_minus_1_under_resampling(tmp_path, monkeypatch):
    """cRT's stage 2 draws class-balanced with replacement. Every IUR read at epoch t equals the last write of the same
    sample in epoch t-1; a sample without one (first epoch, or not drawn in t-1) has no teacher (seen False, skipped)."""
    from ltnb.iur import PredictionMemory
    from ltnb.experiments import run
    writes, reads = {}, []
    upd, prb = PredictionMemory.update, PredictionMemory.probs
    def update(self, index, logits):
        for i, row in zip(torch.as_tensor(index).tolist(), logits.detach().float()): writes[(self.epoch, i)] = row.clone()
        return upd(self, index, logits)
    def probs(self, index, tau):
        out = prb(self, index, tau)
        reads.append((self.epoch, torch.as_tensor(index).tolist(), out.clone(), self.seen(index).clone(), tau))
        return out
    monkeypatch.setattr(PredictionMemory, "update", update)
    monkeypatch.setattr(PredictionMemory, "probs", probs)
    cfg = run_config("digits_lt", "crt+ikl", "smoke", 0, from_parent=False, method_kw={"stage2_epochs": 3}, **{"train.epochs": 2})
    run(cfg, tmp_path, device="cpu")
    checked = same_epoch = not_drawn = 0
    for epoch, index, p, seen, tau in reads:
        for r, i in enumerate(index):
            prev = writes.get((epoch - 1, i))
            if prev is None:
                assert not seen[r] and torch.allclose(p[r], torch.full_like(p[r], 1 / p.shape[1])), (epoch, i)
                not_drawn += epoch >= 3                           # a stage-2 epoch after the first
            else:
                assert seen[r]
                torch.testing.assert_close(p[r], torch.softmax(prev / tau, 0), rtol=0, atol=1e-6)
                checked += 1
            same_epoch += epoch >= 2 and (epoch, i) in writes     # this sample also wrote in this epoch (drawn twice)
    assert checked > 100 and same_epoch > 100 and not_drawn > 10, (checked, same_epoch, not_drawn)


@pytest.mark.parametrize("store", ["host", "memmap"])
def test_resume_in_resampled_stage_is_exact(tmp_path, store):
    "A crt+ikl run stopped inside its class-balanced stage 2 and resumed equals the uninterrupted run, bit for bit."
    from ltnb.experiments import run
    kw = {"stage2_epochs": 3} | ({"memory_store": "memmap", "memory_path": str(tmp_path / "mem.bin")} if store == "memmap" else {})
    cfg = run_config("digits_lt", "crt+ikl", "smoke", 0, from_parent=False, method_kw=kw, **{"train.epochs": 2})
    full = run(cfg, tmp_path / "a", device="cpu")
    assert run(cfg, tmp_path / "b", device="cpu", stop_after=3).complete is False   # 2 of stage 1 + 1 of stage 2
    res = run(cfg, tmp_path / "b", device="cpu")
    assert torch.equal(torch.as_tensor(res.outputs("test")["logits"]), torch.as_tensor(full.outputs("test")["logits"]))
    assert torch.equal(res.method_state_dict()["M"], full.method_state_dict()["M"])


def test_unnormalised_eq7_is_a_switch_not_a_rescaling(digits):
    """soft_label='ikl_raw' is Eq. 7 as printed, Y + M_y: each row's ICL is its row sum 1 + sum_j M_yj times the
    normalised row's, so ICL's weight changes per class; the default stays the normalised label."""
    from ltnb.losses import create_method
    from ltnb.icl import similarity_matrix, icl_loss, icl_soft_labels
    C = digits.num_classes
    M = similarity_matrix(torch.rand(C, 6, generator=torch.Generator().manual_seed(0)))      # entries in [0, 1]
    z, y = torch.randn(40, C, generator=torch.Generator().manual_seed(1)), torch.arange(40) % C
    icl = {}
    for form in ("ikl", "ikl_raw"):
        m = create_method("ce+ikl+noiur", digits.class_counts, **({} if form == "ikl" else {"soft_label": form}))
        assert m.hp["soft_label"] == form
        m.stages(2); m.M.copy_(M); m.has_M.fill_(True)
        icl[form] = m.loss_terms({"logits": z}, y, torch.arange(40), 1, None)["icl"]
    a = (1 / 2) ** 2
    Y = torch.nn.functional.one_hot(y, C).float()
    ce_rows = -((Y + M[y]) / (Y + M[y]).sum(1, keepdim=True) * z.log_softmax(1)).sum(1)     # normalised label's CE per row
    torch.testing.assert_close(icl["ikl"], a * ce_rows.mean())
    torch.testing.assert_close(icl["ikl_raw"], a * ((1 + M[y].sum(1)) * ce_rows).mean())
    # per row, the raw label's gradient is the normalised one's times the row sum: a weight per class, not one constant
    w = 1 + M[y].sum(1)
    assert w.max() - w.min() > 0.5
    zz = z.clone().requires_grad_()
    g = {f: torch.autograd.grad(icl_loss(zz, icl_soft_labels(y, M, form=f)), zz)[0] for f in ("ikl", "ikl_raw")}
    torch.testing.assert_close(g["ikl_raw"], w[:, None] * g["ikl"])


# ----------------------------------------------------------------------------- issue 9 §2: the named switches

def test_kc_prose_projects_ltr_against_the_knowledge_terms():
    "kc_group='prose' (the slides' text): g_LTR loses its component against g_KR+KS; hand case on a one-layer model."
    from torch import nn
    from ltnb.losses import create_method
    rule = create_method("ce+ikl+kc", [5, 3], kc_group="prose").grad_rule
    assert (rule.base, rule.other) == (("iur", "icl", "kr"), ("ltr", "ks"))
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad(): lin.weight.copy_(torch.tensor([[1., 0., 0.], [0., 1., 0.]]))
    x = torch.tensor([[1., 2., 0.]])
    terms = {"ltr": lin(x)[0, 0], "iur": -lin(x)[0, 0] + lin(x)[0, 1]}
    # g_ltr = [[1,2,0],[0,0,0]], g_iur = [[-1,-2,0],[1,2,0]], <g_ltr, g_iur> = -5, |g_iur|^2 = 10:
    # g_ltr + 0.5 g_iur = [[.5,1,0],[.5,1,0]]; plus g_iur = [[-.5,-1,0],[1.5,3,0]]  (the formula's grouping gives [[1,2,0],[1,2,0]])
    backward_terms(terms, list(lin.parameters()), rule)
    torch.testing.assert_close(lin.weight.grad, torch.tensor([[-.5, -1., 0.], [1.5, 3., 0.]]))


@pytest.mark.parametrize("kw,expect", [
    ({}, lambda z, n: z),                                           # default: raw logits (loss_form ikl)
    ({"ks_logits": "adjusted"}, lambda z, n: z + torch.log(n + 1e-9)),
    ({"icl_temperature": 2.0}, lambda z, n: z / 2),
    ({"ks_logits": "adjusted", "icl_temperature": 2.0}, lambda z, n: (z + torch.log(n + 1e-9)) / 2)])
def test_icl_logits_switches(kw, expect, digits):
    "What ICL's softmax sees: raw or BSCE-adjusted logits, at temperature 1 or T."
    from ltnb.losses import create_method
    import torch.nn.functional as F
    m = create_method("bsce+ikl+noiur", digits.class_counts, **kw); m.stages(2)
    z, y = torch.randn(24, 10, generator=torch.Generator().manual_seed(3)), torch.arange(24) % 10
    icl = m.loss_terms({"logits": z}, y, torch.arange(24), 1, None)["icl"]
    n = torch.as_tensor(digits.class_counts, dtype=torch.float)
    torch.testing.assert_close(icl, 0.25 * F.cross_entropy(expect(z, n), y))


def test_code_form_uses_adjusted_logits_unless_told(digits):
    from ltnb.losses import create_method
    z, y = torch.randn(24, 10, generator=torch.Generator().manual_seed(4)), torch.arange(24) % 10
    n = torch.as_tensor(digits.class_counts, dtype=torch.float)
    soft = 0.9 * torch.nn.functional.one_hot(y, 10) + 0.01
    for kw, zz in (({}, z + torch.log(n + 1e-9)), ({"ks_logits": "raw"}, z)):
        ks = create_method("bsce+ltrl+code+noiur", digits.class_counts, **kw).loss_terms({"logits": z}, y, torch.arange(24), 0, None)["ks"]
        torch.testing.assert_close(ks, -(soft * torch.log(torch.softmax(zz, 1))).sum(1).mean())


def test_iur_dataset_normaliser(digits):
    "iur_norm='dataset': the batch's sum over CKS rows / (B |D_CKS^{t-1}| / N), |D_CKS| counted at the epoch's start."
    from ltnb.losses import create_method
    from ltnb.models import create_model
    from ltnb.iur import iur_loss
    N, C = len(digits.train), digits.num_classes
    t = torch.as_tensor(digits.train.targets).long()
    prev = 3. * torch.nn.functional.one_hot(torch.where(torch.arange(N) % 4 == 0, t, (t + 1) % C), C).float()  # 1/4 right
    net = create_model("cnn8", C, in_chans=1)
    out = {}
    for norm in ("batch", "dataset"):
        m = create_method("ce+ikl+noicl", digits.class_counts, iur_norm=norm); m.setup(net, digits); st = m.stages(2)[0]
        m.on_epoch_start(0, st, net); m.memory.update(torch.arange(N), prev); m.on_epoch_start(1, st, net)
        idx = torch.arange(0, 64)
        z = torch.randn(64, C, generator=torch.Generator().manual_seed(5))
        out[norm] = m.loss_terms({"logits": z, "features": None}, t[idx], idx, 1, st)["iur"]
    frac = (torch.arange(N) % 4 == 0).float().mean().item()
    a = 0.25
    torch.testing.assert_close(out["batch"], a * iur_loss(z, prev[:64], t[:64]))
    torch.testing.assert_close(out["dataset"], a * iur_loss(z, prev[:64], t[:64], denom=64 * frac))
    assert not torch.isclose(out["batch"], out["dataset"])


def test_uncertainty_alpha_trains_and_stays_out_of_kc_and_decay(tmp_path):
    "alpha='uncertainty' through the trainer with KC: its log-variances move, get no weight decay, and stay finite."
    from ltnb.experiments import run
    cfg = run_config("digits_lt", "ce+ikl+kc", "smoke", 0, method_kw={"alpha": "uncertainty"}, **{"train.epochs": 3})
    r = run(cfg, tmp_path, device="cpu")
    s = r.method_state_dict()["alpha_logvar"]
    assert torch.isfinite(s).all() and not torch.equal(s, torch.zeros(2))
    assert all(h["loss_alpha_fit"] == 0 for h in r.history)
    _, model, m = build(cfg)
    assert "method.alpha_logvar" in m.no_weight_decay
