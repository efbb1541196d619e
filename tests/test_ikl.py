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
    x, y, idx = next(iter(DataLoader(digits.train, batch_size=32, shuffle=False)))
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
            method.on_batch_end({k: v.detach() for k, v in out.items()}, y, idx, epoch, stage)
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
