"""IKL/LTRL as a wrapper of every registered method (a registry loop, as timm does for models), and from the CLI."""
import json, math, subprocess, sys
import pytest
import torch
from torch.utils.data import DataLoader
from ltnb.data import get_dataset
from ltnb.models import create_model
from ltnb.losses import METHODS, create_method
from ltnb.experiments import run_config, build


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
            sum(terms.values()).backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            assert grads and all(torch.isfinite(g).all() for g in grads)
            method.on_batch_end({k: v.detach() for k, v in out.items()}, y, idx, epoch, stage)
            method.on_epoch_end(epoch, stage, model)
    assert bool(method.has_M)
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
