"""Fault injection for the run cache: two processes on one config, damaged files of every kind, a damaged checkpoint,
a kill during an IKL run with its memory on disk, a full disk, an unwritable runs folder, and bad command lines.

Every case checks what a user sees: the same complete run, a warning or an error that names the file, exit status 2
with one line and no traceback. Runs are on the embedded digits at the smoke budget (seconds each).
"""
import contextlib, errno, io, json, os, random, shutil, signal, subprocess, sys, textwrap, time, warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import ltnb
from ltnb.experiments import (MANIFEST, DamagedRun, Run, is_finished, main, run, run_config, run_dir, run_lock, to_json,
                              RunLocked)
from ltnb.engine import StorageError

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    "A finished CE run on digits (smoke) to copy and damage."
    d = tmp_path_factory.mktemp("runs")
    cfg = run_config("digits_lt", "ce", seed=0)
    r = run(cfg, d, device="cpu")
    return cfg, d, r


# ------------------------------------------------------------------------------------------------------ two processes

_TWO = textwrap.dedent("""
    import json, sys, time
    from ltnb.experiments import run, run_config
    cfg = run_config("digits_lt", "ce", seed=5, **{"train.epochs": 4})
    r = run(cfg, sys.argv[1], device="cpu")
    print(json.dumps(dict(run_id=r.provenance["run_id"], cached=r.from_cache, top1=r.last["top1"])))
""")


def test_two_processes_one_config(tmp_path):
    "Both end with the same complete run; only one trains it, the other waits for the lock and loads it."
    procs = [subprocess.Popen([PY, "-c", _TWO, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env()) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[0]["run_id"] == outs[1]["run_id"] and outs[0]["top1"] == outs[1]["top1"]
    assert sorted(o["cached"] for o in outs) == [False, True]
    cfg = run_config("digits_lt", "ce", seed=5, **{"train.epochs": 4})
    r = Run.load(run_dir(cfg, tmp_path))                      # verified against its manifest
    assert r.complete and not list(r.path.glob(".*.tmp")) and not list(r.path.glob("*.tmp"))


def test_lock_timeout_names_the_holder(finished, tmp_path):
    cfg, d, r = finished
    with run_lock(r.path):
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}"):
            run(cfg, d, device="cpu", lock_timeout=0.2)


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    "flock dies with its holder: a SIGKILLed process leaves no lock behind."
    cfg = run_config("digits_lt", "ce", seed=6)
    code = f"from ltnb.experiments import run_lock; import time\nwith run_lock({str(run_dir(cfg, tmp_path))!r}):\n    print('held', flush=True); time.sleep(60)"
    p = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True, env=_env())
    assert p.stdout.readline().strip() == "held"
    p.send_signal(signal.SIGKILL); p.wait()
    r = run(cfg, tmp_path, device="cpu", lock_timeout=30)
    assert r.complete and not r.from_cache


# ------------------------------------------------------------------------------------------------------ damaged files

FILES = ["config.json", "history.json", "metrics.json", "provenance.json", "outputs.npz", "model.pt", "method.pt"]


def _damage(p: Path, how: str, other: Path):
    b = p.read_bytes()
    if how == "empty": p.write_bytes(b"")
    elif how == "truncated": p.write_bytes(b[: len(b) // 2])
    elif how == "random": p.write_bytes(os.urandom(len(b)))
    elif how == "one byte": p.write_bytes(b[:-1] + bytes([b[-1] ^ 1]))
    elif how == "other run's": p.write_bytes((other / p.name).read_bytes())   # another model's weights, 10 rows of logits, ...
    elif how == "deleted": p.unlink()
    else: raise ValueError(how)


@pytest.mark.parametrize("how", ["empty", "truncated", "random", "one byte", "other run's", "deleted"])
@pytest.mark.parametrize("name", FILES)
def test_damage_is_found_and_named(finished, tmp_path, name, how):
    "Every kind of damage to every file of a finished run is found on load, and the error names the file."
    cfg, d, r = finished
    other = run(run_config("digits_lt", "ce", seed=1, **{"train.epochs": 1, "data.imb_factor": 0.2}), d, device="cpu").path
    copy = tmp_path / r.path.name
    shutil.copytree(r.path, copy)
    Run.load(copy)                                             # intact: loads
    _damage(copy / name, how, other)
    with pytest.raises(DamagedRun) as e:
        Run.load(copy)
    assert name in str(e.value)


def test_manifest_damaged_or_missing(finished, tmp_path):
    cfg, d, r = finished
    copy = tmp_path / "m"; shutil.copytree(r.path, copy)
    (copy / MANIFEST).write_text("{not json")
    with pytest.raises(DamagedRun, match=MANIFEST): Run.load(copy)
    (copy / MANIFEST).unlink()
    assert not is_finished(copy)


@pytest.mark.parametrize("name,how", [("outputs.npz", "truncated"), ("model.pt", "other run's"), ("metrics.json", "random")])
def test_damaged_run_is_set_aside_and_recomputed(tmp_path, name, how):
    cfg = run_config("digits_lt", "ce", seed=2)
    good = run(cfg, tmp_path, device="cpu")
    other = run(run_config("digits_lt", "ce", seed=3, **{"train.epochs": 1}), tmp_path, device="cpu").path
    _damage(good.path / name, how, other)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        again = run(cfg, tmp_path, device="cpu")
    msgs = [str(x.message) for x in w]
    assert any(name in m and "recomputing" in m for m in msgs), msgs
    assert not again.from_cache and again.last == good.last
    assert len(list(good.path.parent.glob(good.path.name + ".damaged-*"))) == 1


def test_results_without_manifest_are_recomputed(tmp_path):
    "A run killed between its last result file and its manifest (or made by ltnb < 0.2) is set aside, not trusted."
    cfg = run_config("digits_lt", "ce", seed=4)
    good = run(cfg, tmp_path, device="cpu")
    (good.path / MANIFEST).unlink()
    with pytest.warns(UserWarning, match="no manifest"):
        again = run(cfg, tmp_path, device="cpu")
    assert again.last == good.last and is_finished(again.path)


def test_damaged_checkpoint_restarts(tmp_path):
    cfg = run_config("digits_lt", "ce", seed=7, **{"train.epochs": 3})
    full = run(cfg, tmp_path / "a", device="cpu")
    part = run(cfg, tmp_path / "b", device="cpu", stop_after=1)
    ck = part.path / "ckpt" / "last.pt"
    ck.write_bytes(ck.read_bytes()[:100])
    with pytest.warns(UserWarning, match="last.pt is damaged"):
        r = run(cfg, tmp_path / "b", device="cpu")
    assert r.last == full.last
    assert list((part.path / "ckpt").glob("last.pt.damaged-*")) == [] or not (part.path / "ckpt").exists()


# ------------------------------------------------------------------------------------------ IKL's memory on disk, killed

_IKL = textwrap.dedent("""
    import sys
    from ltnb.experiments import run, run_config
    d, mem = sys.argv[1], sys.argv[2]
    cfg = run_config("digits_lt", "ce+ikl", seed=0, method_kw=dict(memory_store="memmap", memory_path=mem), **{"train.epochs": 6})
    r = run(cfg, d, device="cpu")
    print("done", flush=True)
""")


@pytest.fixture(scope="module")
def ikl_reference(tmp_path_factory):
    "The uninterrupted run, computed once."
    d = tmp_path_factory.mktemp("ikl")
    ref = subprocess.run([PY, "-c", _IKL, str(d / "ref"), str(d / "ref.mem")], env=_env(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    return d


@pytest.mark.parametrize("trial", range(3))
def test_memmap_memory_resumes_exactly_after_kill(ikl_reference, tmp_path, trial):
    "SIGKILL at a random moment of an IKL run whose prediction memory is a file on disk; the resumed run is bit-identical."
    rng = random.Random(trial)
    p = subprocess.Popen([PY, "-c", _IKL, str(tmp_path / "k"), str(tmp_path / "k.mem")], env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not list((tmp_path / "k").rglob("ckpt/last.pt")) and time.time() - t0 < 120 and p.poll() is None: time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.5))                          # somewhere in a later epoch, mid-batch or mid-write
    p.send_signal(signal.SIGKILL); p.wait()
    res = subprocess.run([PY, "-c", _IKL, str(tmp_path / "k"), str(tmp_path / "k.mem")], env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    a = next((ikl_reference / "ref").glob("digits_lt/ce+ikl/[!.]*")); b = next((tmp_path / "k").glob("digits_lt/ce+ikl/[!.]*"))
    ra, rb = Run.load(a), Run.load(b)
    assert np.array_equal(ra.outputs("test")["logits"], rb.outputs("test")["logits"])
    assert [h["loss"] for h in ra.history] == [h["loss"] for h in rb.history]


# ----------------------------------------------------------------------------------------- full disk, unwritable folder

def test_full_disk_says_so_and_resumes(tmp_path, monkeypatch):
    cfg = run_config("digits_lt", "ce", seed=8)
    real = np.savez_compressed
    def full(*a, **k): raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "savez_compressed", full)
    with pytest.raises(StorageError, match="no space left on"):
        run(cfg, tmp_path, device="cpu")
    path = run_dir(cfg, tmp_path)
    assert not is_finished(path) and (path / "ckpt" / "last.pt").exists()      # what was kept: the last checkpoint
    assert not list(path.glob(".*.tmp"))                                         # no temp file left behind
    monkeypatch.setattr(np, "savez_compressed", real)
    r = run(cfg, tmp_path, device="cpu")
    assert r.complete and r.history                                              # resumed from the checkpoint


def test_unwritable_runs_folder(tmp_path, monkeypatch):
    cfg = run_config("digits_lt", "ce", seed=9)
    real = os.open
    def ro(path, flags, *a, **k):
        if str(path).startswith(str(tmp_path)) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, flags, *a, **k)
    monkeypatch.setattr(os, "open", ro)
    with pytest.raises(StorageError, match="LTNB_RUNS"):
        run(cfg, tmp_path / "runs", device="cpu")


def test_json_is_valid():
    assert to_json({"x": float("nan"), "y": [float("-inf"), 1.5]}) == '{"x": null, "y": [null, 1.5]}'


# ------------------------------------------------------------------------------------------------- bad command lines

BAD = [
    (["--dataset", "nonsense"], "no recipe for dataset"),
    (["--dataset", "digits_lt", "--method", "nonsense"], "unknown method"),
    (["--dataset", "digits_lt", "--method", "bsce+ikl+nope"], "unknown method"),
    (["--dataset", "digits_lt", "--seeds", "-1"], "seed"),
    (["--dataset", "digits_lt", "--seeds", str(2 ** 32)], "seed"),
    (["--dataset", "digits_lt", "--set", "train.lrr=0.05"], "Did you mean 'lr'"),
    (["--dataset", "digits_lt", "--method", "crt", "--set", "method.stage2_epoch=7"], "stage2_epochs"),
    (["--dataset", "digits_lt", "--set", 'train.epochs="5"'], "expected an int"),
    (["--dataset", "digits_lt", "--set", "train.epochs=0"], "epochs"),
    (["--dataset", "digits_lt", "--set", "data.imb_factor=100"], "0.01"),
    (["--dataset", "digits_lt", "--set", "train.lr=-1"], "lr"),
    (["--dataset", "digits_lt", "--set", "nokey"], "KEY=VALUE"),
    (["--dataset", "digits_lt", "--device", "cuda:3" if not torch.cuda.is_available() else "nonsense"], "device"),
    (["--dataset", "digits_lt", "--device", "nonsense"], "device"),
    (["--dataset", "digits_lt", "--method", "ldam", "--set", "model.classifier=linear"], "needs model.classifier"),
    (["--dataset", "imagenet_lt"], "ImageNet_LT"),
    (["--dataset", "imagenet_lt", "--download"], "download"),
    (["--dataset", "digits_lt", "--budget", "huge"], "invalid choice"),
    (["--dataset", "digits_lt", "--rerun", "always"], "invalid choice"),
]


@pytest.mark.parametrize("argv,says", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_command_line(tmp_path, argv, says):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        with pytest.raises(SystemExit) as e:
            main(argv + ["--runs-dir", str(tmp_path)])
    assert e.value.code == 2, err.getvalue()
    assert says in err.getvalue() and "Traceback" not in err.getvalue(), err.getvalue()
    assert not any(tmp_path.rglob("config.json")), "nothing is written for a bad input"


def test_console_script_exit_status(tmp_path):
    "The installed entry point: one message, exit 2, no traceback; --debug shows it."
    exe = shutil.which("ltnb-run") or str(Path(PY).parent / "ltnb-run")
    if not Path(exe).exists(): pytest.skip("ltnb-run is not installed (pip install -e .)")
    p = subprocess.run([exe, "--dataset", "nonsense", "--runs-dir", str(tmp_path)], capture_output=True, text=True, env=_env())
    assert p.returncode == 2 and p.stderr.startswith("ltnb-run: error:") and "Traceback" not in p.stderr, p.stderr
    p = subprocess.run([exe, "--dataset", "nonsense", "--debug"], capture_output=True, text=True, env=_env())
    assert p.returncode != 0 and "Traceback" in p.stderr
    h = subprocess.run([exe, "--help"], capture_output=True, text=True, env=_env())
    assert h.returncode == 0 and "example" in h.stdout and "--rerun" in h.stdout and "--lock-timeout" in h.stdout


def test_resume_with_other_threads_warns(tmp_path):
    "Exact resume needs the same thread count: resuming with another one says so (the run still finishes)."
    cfg = run_config("digits_lt", "ce", seed=10, **{"train.epochs": 2})
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        run(cfg, tmp_path, device="cpu", stop_after=1)
        torch.set_num_threads(2)
        with pytest.warns(UserWarning, match="will not be bit-identical"):
            r = run(cfg, tmp_path, device="cpu")
    finally:
        torch.set_num_threads(n)
    assert r.complete and r.provenance["cpu_threads"] == 2
