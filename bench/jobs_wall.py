"""Wall time of one paper table at several `jobs` (worker processes, `run_many`): each on a fresh, empty run cache,
so every run of the table is computed. Prints jobs, threads per run, wall seconds (median and minimum over --repeat
rounds, which interleave the cases) and the speed-up of the median over jobs=1, the 1-minute load average before each
case (other users of a shared machine), counts
the runs whose last-epoch metrics equal those of jobs=1 at the same threads per run (bitwise), and writes the figures to
figures/jobs_wall_<dataset>_<budget>.csv.

    flock /tmp/ltnb-bench.lock python bench/jobs_wall.py --table ikl_table5 --dataset digits_lt --budget smoke --seeds 0 1 2

jobs=1 runs in this process with all cores' threads (torch's default on a machine of one's own); `--one-thread` adds a
jobs=1 line with one thread, which separates "one thread is more efficient for a tiny model" from "runs side by side".
With $LTNB_TRAIN_LOCK set, the script holds that lock for the whole measurement (nobody else trains meanwhile) and
its own runs do not take it.
"""
import argparse, os, tempfile, time
from pathlib import Path
import pandas as pd, torch
from ltnb.experiments import figures_dir, training_slot, _cores
from ltnb.reproduce import reproduce


def measure(table, dataset, budget, seeds, jobs, threads):
    "Seconds to reproduce `table` from an empty run cache with `jobs` workers; and its runs' last-epoch metrics."
    old = torch.get_num_threads()
    if jobs == 1: torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="ltnb-jobs-bench-") as d:
            t0 = time.perf_counter()
            rep = reproduce(table, dataset, budget, seeds, runs_dir=d, device="cpu", jobs=jobs, save=False)
            wall = time.perf_counter() - t0
            return wall, rep
    finally: torch.set_num_threads(old)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", default="ikl_table5"); p.add_argument("--dataset", default="digits_lt")
    p.add_argument("--budget", default="smoke"); p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--one-thread", action="store_true", help="also time jobs=1 with one thread")
    p.add_argument("--repeat", type=int, default=1, help="rounds (each case once per round); the table gives the median")
    p.add_argument("--out", default=None, help="CSV path (default figures/jobs_wall_<dataset>_<budget>.csv)")
    a = p.parse_args(argv)
    cores = _cores()
    cases = [(j, cores if j == 1 else max(1, cores // j)) for j in a.jobs]
    if a.one_thread and cores > 1: cases.insert(1, (1, 1))
    lock = os.environ.get("LTNB_TRAIN_LOCK")
    rows, ref = [], {}                                     # ref: the jobs=1 runs at each thread count
    with training_slot():                                  # one trainer on a shared machine: this script, all of it
        os.environ.pop("LTNB_TRAIN_LOCK", None)
        try:
            for rep_i in range(a.repeat):                  # rounds interleave the cases, so a busy minute hits them all
                for jobs, threads in cases:
                    load = os.getloadavg()[0]
                    wall, rep = measure(a.table, a.dataset, a.budget, a.seeds, jobs, threads)
                    last = [(r.label, r.config["seed"], r.last) for r in rep.runs]
                    if jobs == 1: ref.setdefault(threads, last)
                    same = sum(x == y for x, y in zip(last, ref[threads])) if threads in ref else None
                    rows.append(dict(jobs=jobs, threads_per_run=threads, round=rep_i, wall_s=wall, load_before=load,
                                     runs=len(rep.runs), same=same))
                    print({k: (round(v, 1) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
        finally:
            if lock: os.environ["LTNB_TRAIN_LOCK"] = lock
    raw = pd.DataFrame(rows)
    df = raw.groupby(["jobs", "threads_per_run"], sort=False).agg(
        runs=("runs", "first"), rounds=("wall_s", "size"), wall_s_median=("wall_s", "median"), wall_s_min=("wall_s", "min"),
        load_before=("load_before", "mean"), same=("same", lambda x: None if x.isna().any() else int(x.min()))).reset_index()
    base = df.wall_s_median[(df.jobs == 1) & (df.threads_per_run == cores)]
    df["speedup"] = (base.iloc[0] / df.wall_s_median) if len(base) else float("nan")
    df["same_as_jobs1"] = [f"{s}/{n}" if s is not None and s == s else "no jobs=1 at these threads" for s, n in zip(df.same, df.runs)]
    df = df.drop(columns=["same"]).round(2)
    df.insert(0, "table", a.table); df.insert(1, "seeds", " ".join(map(str, a.seeds))); df.insert(4, "cores", cores)
    print(f"\n{a.table} on {a.dataset} ({a.budget}), seeds {a.seeds}, {cores} cores, torch {torch.__version__}")
    print(df.drop(columns=["table", "seeds"]).to_string(index=False))
    out = Path(a.out) if a.out else figures_dir() / f"jobs_wall_{a.dataset}_{a.budget}.csv"
    df.to_csv(out, index=False); print(f"wrote {out}")


if __name__ == "__main__": main()
