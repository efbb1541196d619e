"""The command-line entries and the run cache, exercised as a user would (subprocesses, a temporary runs folder)."""
import json, subprocess, sys
import pytest


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ltnb.experiments", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_cli_runs_then_loads_from_cache(tmp_path):
    args = ["--dataset", "digits_lt", "--method", "ce", "crt", "--runs-dir", str(tmp_path), "--device", "cpu"]
    p = _cli(*args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    recs = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    assert [r["method"] for r in recs] == ["ce", "crt"] and not any(r["cached"] for r in recs)
    assert all(set(r["last"]) >= {"epoch", "top1"} for r in recs)
    p2 = _cli(*args, cwd=tmp_path)
    assert p2.returncode == 0, p2.stderr
    recs2 = [json.loads(l) for l in p2.stdout.splitlines() if l.startswith("{")]
    assert all(r["cached"] for r in recs2)
    assert [r["last"] for r in recs2] == [r["last"] for r in recs]


def test_cli_rejects_unknown_method_and_budget(tmp_path):
    p = _cli("--dataset", "digits_lt", "--method", "bogus", "--runs-dir", str(tmp_path), cwd=tmp_path)
    assert p.returncode == 2 and "Valid methods" in p.stderr and "crt" in p.stderr
    p = _cli("--dataset", "digits_lt", "--budget", "huge", cwd=tmp_path)
    assert p.returncode == 2 and "smoke" in p.stderr


def test_cli_overrides_change_the_run(tmp_path):
    p = _cli("--dataset", "digits_lt", "--runs-dir", str(tmp_path), "--device", "cpu", "--set", "train.lr=0.01", "data.imb_factor=0.5", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout.splitlines()[-1])
    cfg = json.loads((tmp_path / rec["run"].split(str(tmp_path) + "/", 1)[1] / "config.json").read_text())
    assert cfg["train"]["lr"] == 0.01 and cfg["data"]["imb_factor"] == 0.5


def test_bench_prints_figures():
    p = subprocess.run([sys.executable, "-c", "from ltnb.experiments import bench_main; bench_main()",
                        "--model", "cnn8", "--num-classes", "10", "--shape", "1", "8", "8", "--batch-size", "16", "--steps", "2"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout.splitlines()[-1])
    assert rec["images_per_s"] > 0 and rec["model"] == "cnn8"


def test_console_scripts_exit_zero(tmp_path):
    "The installed `ltnb-run` / `ltnb-bench` wrappers call sys.exit(main()): main must return None (exit 0)."
    import shutil
    for exe, args in [("ltnb-bench", ["--model", "cnn8", "--num-classes", "10", "--shape", "1", "8", "8", "--batch-size", "8", "--steps", "1"]),
                      ("ltnb-run", ["--dataset", "digits_lt", "--runs-dir", str(tmp_path), "--device", "cpu"])]:
        path = shutil.which(exe)
        if path is None: pytest.skip(f"{exe} is not installed (pip install -e .)")
        p = subprocess.run([path, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert p.returncode == 0, (exe, p.stderr[-2000:])
        assert json.loads(p.stdout.splitlines()[-1])


def test_cli_jobs_computes_in_workers_then_prints_every_run(tmp_path):
    "`ltnb-run --jobs 2`: two worker processes; the parent CE run serves cRT; a failing run is named."
    args = ["--dataset", "digits_lt", "--method", "ce", "crt", "bsce", "--runs-dir", str(tmp_path), "--device", "cpu", "--jobs", "2"]
    p = _cli(*args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    assert [r["method"] for r in recs] == ["ce", "crt", "bsce"] and not any(r["cached"] for r in recs)
    assert recs[1]["parent"] == recs[0]["run"]
    assert len([d for d in (tmp_path / "digits_lt" / "ce").iterdir() if not d.name.startswith(".")]) == 1   # CE trained once
    (tmp_path / "digits_lt" / "lws").write_text("not a folder")                  # a run that cannot take its lock
    p3 = _cli("--dataset", "digits_lt", "--method", "lws", "--runs-dir", str(tmp_path), "--device", "cpu", "--jobs", "2", cwd=tmp_path)
    assert p3.returncode != 0 and "run lws seed 0 on digits_lt" in p3.stderr, p3.stderr[-3000:]
