"""IWB evidence (issue 11 §3): stage-1 CE without and with weight decay, then WD+MaxNorm, WD+MaxNorm+CB, τ-norm,
IWB and IWB+CB, every stage-2 row starting from the same stage-1 run of its seed (the `ce_wd` parent); many / medium /
few / all mean ± std beside the paper's CIFAR-100-LT numbers, paired per-seed gains over stage 1 (with a t test:
beyond seed noise or not) and the classifier weight-norm figure.

    cd <checkout> && LTNB_RUNS=/work/runs PYTHONPATH=. python bench/iwb_evidence.py --dataset fmnist_lt --budget cpu --seeds 0 1 2

Each training run holds the shared lock ($LTNB_TRAIN_LOCK, default /tmp/ltnb-train.lock) while it trains, and only then (others' runs interleave); finished runs
are loaded from the run cache, so running the script again only prints and redraws. Writes to `figures/`
(or $LTNB_FIGURES): iwb_table1_<dataset>_<budget>_seeds<...>.{csv,png} (the generic side-by-side table and figure),
..._summary.csv (this script's table with the paper columns), ..._paired_gains.csv and
iwb_weight_norms_<dataset>_<budget>_seeds<...>.png. A quick check: `--dataset digits_lt --budget smoke` with
LTNB_RUNS / LTNB_FIGURES pointing at scratch folders.
"""
import argparse, os, sys, time
import numpy as np, pandas as pd
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt
from scipy import stats
import ltnb.iwb as iwb
from ltnb.experiments import run_config, run, run_dir, is_finished, figures_dir, _parse_value
from ltnb.tables import load_paper_table
from ltnb.reproduce import reproduce

STAGE1 = "CE + WD (stage 1)"
NAIVE = "CE (no WD)"
TABLE_ROWS = ["WD+MaxNorm", "WD+MaxNorm+CB", "IWB(ours)", "IWB+CB(ours)"]          # rows of the declared iwb_table1
EXTRA_ROWS = {NAIVE: ("ce_wd", {"weight_decay": 0.0}),                             # the WB paper's "naive" model
              STAGE1: "ce_wd",
              "τ-norm (WD model)": "tau_norm_wd"}                                   # τ-norm of the same stage-1 run
ORDER = [NAIVE, STAGE1, "WD+MaxNorm", "WD+MaxNorm+CB", "τ-norm (WD model)", "IWB(ours)", "IWB+CB(ours)"]
# which paper row each row is compared with (IWB Table 1: all; Table 3: many / medium / few where it has the row)
PAPER_ROW = {NAIVE: ("CE", None), STAGE1: (None, "naive"), "WD+MaxNorm": ("WD+MaxNorm", None),
             "WD+MaxNorm+CB": ("WD+MaxNorm+CB", None), "τ-norm (WD model)": ("τ-norm", None),
             "IWB(ours)": ("IWB(ours)", None), "IWB+CB(ours)": ("IWB+CB(ours)", "NC+HC (vector)")}
METRICS = ["many", "medium", "few", "all"]
LOCK = "/tmp/ltnb-train.lock"

def all_specs():
    from ltnb.reproduce import TABLES
    rows = {k: TABLES["iwb_table1"].rows[k] for k in TABLE_ROWS}
    return {**rows, **EXTRA_ROWS}

def _finished(cfg, runs_dir):
    while cfg:
        if not is_finished(run_dir(cfg, runs_dir)): return False
        cfg = cfg.get("parent")
    return True

def train_all(dataset, budget, seeds, overrides, runs_dir, deadline=None):
    "Run (or load) every row and seed, the shared lock taken per run; stage-1 runs first so children only add stage 2."
    from ltnb.experiments import row_spec
    specs = all_specs()
    order = [STAGE1] + [k for k in specs if k not in (NAIVE, STAGE1)]
    timing = []
    # every seed's stage 1 and its stage-2 rows first, the no-WD comparison run last (with a deadline, it is what goes)
    for s, label in [(s, l) for s in seeds for l in order] + [(s, NAIVE) for s in seeds]:
        if True:   # (one level kept for a small diff)
            meth, kw = row_spec(specs[label])
            cfg = run_config(dataset, meth, budget, s, method_kw=kw or None, **overrides)
            if _finished(cfg, runs_dir): continue
            if deadline and time.time() > deadline:
                print(f"deadline reached: {label} seed {s} not run", flush=True); return timing, False
            t0 = time.time()
            # stage-1 runs (minutes) train under $LTNB_TRAIN_LOCK; a stage-2 row whose stage 1 is finished trains the
            # classifier for a few epochs (seconds, under the brief's ~20 s lock threshold): no lock, no queue
            light = bool(cfg.get("parent")) and _finished(cfg["parent"], runs_dir)
            lock = os.environ.pop("LTNB_TRAIN_LOCK", None) if light else None
            try: r = run(cfg, runs_dir, device="cpu")
            finally:
                if lock: os.environ["LTNB_TRAIN_LOCK"] = lock
            timing.append(dict(row=label, seed=s, total_s=round(time.time() - t0, 1), train_s=r.provenance.get("wall_time_s")))
            print(f"ran {label:>20} seed {s}: {timing[-1]['train_s']}s training, {timing[-1]['total_s']:.0f}s with the lock wait; "
                  f"all {r.last.get('top1'):.2f}", flush=True)
    return timing, True

def mean_sd(x):
    x = pd.Series(x, dtype=float).dropna()
    if not len(x): return ""
    return f"{x.mean():.1f} ± {x.std(ddof=1):.1f}" if len(x) > 1 else f"{x.mean():.1f}"

def summary(rep) -> pd.DataFrame:
    "Mean ± std over seeds per row and metric, with the paper's CIFAR-100-LT (IF 100) numbers beside."
    f = rep.frame("last")
    t1, t3 = load_paper_table("iwb_table1"), load_paper_table("iwb_table3")
    t1 = t1[t1.imb_factor == 100]
    out = []
    for label in ORDER:
        g = f[f.method == label]
        if not len(g): continue
        row = {"row": label, "seeds": len(g)}
        for m in METRICS: row[m] = mean_sd(g[m])
        p1, p3 = PAPER_ROW.get(label, (None, None))
        q3 = t3[t3.method == p3] if p3 else t3.iloc[0:0]
        for m in ("many", "medium", "few"): row[f"{m} (paper)"] = float(q3[m].iloc[0]) if len(q3) else np.nan
        q1 = t1[t1.method == p1] if p1 else t1.iloc[0:0]
        row["all (paper)"] = float(q1["all"].iloc[0]) if len(q1) else (float(q3["all"].iloc[0]) if len(q3) else np.nan)
        row["paper row"] = "; ".join(x for x in ((f"T1 {p1}" if p1 else ""), (f"T3 {p3}" if p3 else "")) if x)
        out.append(row)
    return pd.DataFrame(out)

def gains(rep) -> pd.DataFrame:
    "Paired per-seed gains over the stage-1 run of the same seed, with the two-sided 5% t threshold (n - 1 dof)."
    g = iwb.paired_gains(rep, STAGE1)
    g["t_crit"] = [round(float(stats.t.ppf(0.975, n - 1)), 2) if n > 1 else np.nan for n in g.seeds]
    for m in ("all", "few"):
        g[f"{m}: beyond noise"] = [("yes" if abs(t) > c else "no") if pd.notna(t) and pd.notna(c) else "n/a"
                                   for t, c in zip(g[f"t_{m}"], g.t_crit)]
    f = rep.frame("last")
    b = f[f.method == STAGE1].set_index("seed")["all"]
    g["Δall per seed"] = [", ".join(f"{v:+.1f}" for v in (f[f.method == r].set_index("seed")["all"] - b).dropna()) for r in g.row]
    g["_o"] = [ORDER.index(r) if r in ORDER else 99 for r in g.row]
    return g.sort_values("_o").drop(columns="_o").reset_index(drop=True)

def weight_norm_figure(rep, path):
    "Per-class classifier weight norms (IWB Figs. 1, 4), absolute and relative to their mean, mean over seeds (band: min..max)."
    by = {}
    for r in rep.runs: by.setdefault(r.label, []).append(r)
    show = {"naive (no WD)": NAIVE, "WD (stage 1)": STAGE1, "WD+MaxNorm": "WD+MaxNorm", "τ-norm (WD)": "τ-norm (WD model)",
            "IWB": "IWB(ours)", "IWB+CB": "IWB+CB(ours)"}
    runs = {k: by[v] for k, v in show.items() if v in by}
    counts = next(iter(runs.values()))[0].class_counts
    fig, ax = plt.subplots(1, 2, figsize=(14, 4))
    iwb.plot_weight_norms(runs, counts, ax[0], title=f"classifier weight norms, {rep.dataset} ({rep.budget}), seeds {rep.seeds}")
    iwb.plot_weight_norms(runs, counts, ax[1], relative=True, title="the same, each divided by its mean (shape)")
    fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fmnist_lt"); p.add_argument("--budget", default="cpu")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--runs-dir", default=None, help="default: $LTNB_RUNS")
    p.add_argument("--no-lock", action="store_true", help="do not take the shared training lock (seconds-long smoke checks only)")
    p.add_argument("--deadline", default=None, help="HH:MM (local): start no training run after it")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides for every run")
    a = p.parse_args(argv)
    if not a.no_lock: os.environ.setdefault("LTNB_TRAIN_LOCK", LOCK)   # `run` holds it while training, per run
    else: os.environ.pop("LTNB_TRAIN_LOCK", None)
    ov = {k: _parse_value(v) for k, v in (x.split("=", 1) for x in a.set)}
    dl = None
    if a.deadline:
        h, m = map(int, a.deadline.split(":")); lt = time.localtime()
        dl = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, h, m, 0, 0, 0, -1))
    t0 = time.time()
    timing, complete = train_all(a.dataset, a.budget, a.seeds, ov, a.runs_dir, dl)
    if not complete:   # past the deadline: the tables of the seeds whose every row is finished (the file names say which)
        from ltnb.experiments import row_spec
        def fin(s, lab):
            m, kw = row_spec(all_specs()[lab])
            return _finished(run_config(a.dataset, m, a.budget, s, method_kw=kw or None, **ov), a.runs_dir)
        done = [s for s in a.seeds if all(fin(s, lab) for lab in all_specs() if lab != NAIVE)]
        if not all(fin(s, NAIVE) for s in done):
            print(f"deadline: '{NAIVE}' left out of the table (finished for seeds {[s for s in a.seeds if fin(s, NAIVE)]} only)", flush=True)
            EXTRA_ROWS.pop(NAIVE); ORDER.remove(NAIVE)
        print(f"deadline: tables of seeds {done} only", flush=True)
        if not done: sys.exit(1)
        a.seeds = done
    rep = reproduce("iwb_table1", a.dataset, a.budget, a.seeds, TABLE_ROWS, device="cpu", runs_dir=a.runs_dir,
                            extra_rows=EXTRA_ROWS, overrides=ov or None)
    stem = rep.stem
    s, g = summary(rep), gains(rep)
    s.to_csv(stem.with_name(stem.name + "_summary.csv"), index=False)
    g.to_csv(stem.with_name(stem.name + "_paired_gains.csv"), index=False)
    wn = figures_dir() / stem.name.replace("iwb_table1_", "iwb_weight_norms_")
    weight_norm_figure(rep, wn.with_suffix(".png"))
    pd.set_option("display.width", 250); pd.set_option("display.max_columns", 40)
    print(f"\n{rep.dataset} ({rep.budget}), seeds {rep.seeds}, last epoch; paper: CIFAR-100-LT IF 100 (IWB Table 1 all, Table 3 many/medium/few)")
    print(s.to_string(index=False))
    print(f"\npaired gains over '{STAGE1}' (same seed; t = mean / (sd / sqrt(n)))")
    print(g[["row", "seeds", "Δmany", "Δmedium", "Δfew", "Δfew_std", "t_few", "Δall", "Δall_std", "t_all", "t_crit",
             "all: beyond noise", "few: beyond noise", "Δall per seed"]].to_string(index=False))
    if timing: print("\ntraining time this call:", pd.DataFrame(timing).train_s.sum(), "s;", pd.DataFrame(timing).to_string(index=False))
    wall = [(r.label, r.config["seed"], r.provenance.get("wall_time_s")) for r in rep.runs]
    print("\nrun wall times (s, from provenance):", pd.DataFrame(wall, columns=["row", "seed", "s"]).groupby("row").s.mean().round(1).to_dict())
    print(f"wrote {stem}.csv/.png, {stem.name}_summary.csv, {stem.name}_paired_gains.csv, {wn.name}.png; {time.time() - t0:.0f}s")

if __name__ == "__main__": main()
