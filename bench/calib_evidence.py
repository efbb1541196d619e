"""Calibration evidence (issue 12 §3): the MNIST-LT protocol of the paper's Table 2 on another dataset (default
`fmnist_lt`): imbalance factors 100 / 50 / 10, an 80/20 train / validation split (the calibrators are fitted on the
20%), the balanced test set and one corrupted test set; ECE (%) of the uncalibrated model, TS, ETS, IR, IROvA, TS-IR,
SBC, GPC (ltnb's own: `ltnb.calibration.GPC`) and the importance-weighted TS (the paper's method), mean ± std over seeds beside
the paper's MNIST-LT column; per-group ECE of Base / TS / Ours; paired per-seed differences. Then Softmax (ce),
BSCE and BSCE+IKL trained on the same 80/20 split (IF 100), their ECE per group before and after TS (and the paper's
TS): does IKL's soft labelling change calibration?

    cd <checkout> && LTNB_RUNS=/work/runs PYTHONPATH=. python bench/calib_evidence.py --dataset fmnist_lt --budget cpu --seeds 0 1 2

Each training run holds the shared lock ($LTNB_TRAIN_LOCK, default /tmp/ltnb-train.lock) while it trains, and only then; calibrators are post-hoc runs (seconds) on
the base runs' saved outputs. Writes to `figures/` (or $LTNB_FIGURES), stem calib_table2_<dataset>_<budget>_seeds<...>:
.csv/.png (the generic top-1 table), _ece.csv (every run, test set, group), _ece_summary.csv (mean ± std beside the
paper), _ece_compact.csv (this script's table), _paired.csv, the reliability / attention / ECE-per-group PNGs; and
calib_ikl_<dataset>_<budget>_seeds<...>.{csv,png} and _summary.csv for the IKL question.
"""
import argparse, os, sys, time, warnings
import numpy as np, pandas as pd
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt
from scipy import stats
from scipy.special import softmax
import ltnb.calibration as cal
from ltnb.experiments import run_config, run, run_dir, is_finished, figures_dir, _parse_value
from ltnb.reproduce import reproduce

IFS = [100, 50, 10]
LOCK = "/tmp/ltnb-train.lock"
ROW_ORDER = ["Base", "TS", "ETS", "TS-IR", "IR", "IROvA", "SBC", "GPC", "Ours"]
IKL_METHODS = {"Softmax": "ce", "BSCE": "bsce", "BSCE+IKL": "bsce+ikl"}

def _finished(cfg, runs_dir):
    while cfg:
        if not is_finished(run_dir(cfg, runs_dir)): return False
        cfg = cfg.get("parent")
    return True

def train(jobs, runs_dir, deadline=None):
    "Run (or load) every (label, cfg) job, the shared lock taken per training run."
    timing = []
    for label, cfg in jobs:
        if _finished(cfg, runs_dir): continue
        if deadline and time.time() > deadline:
            print(f"deadline reached: {label} seed {cfg['seed']} not run", flush=True); return timing, False
        t0 = time.time()
        r = run(cfg, runs_dir, device="cpu")          # trains under $LTNB_TRAIN_LOCK
        timing.append(dict(run=label, seed=cfg["seed"], total_s=round(time.time() - t0, 1), train_s=r.provenance.get("wall_time_s")))
        print(f"ran {label:>16} seed {cfg['seed']}: {timing[-1]['train_s']}s training, {timing[-1]['total_s']:.0f}s with the lock wait; "
              f"top-1 {r.last.get('top1'):.2f}", flush=True)
    return timing, True

def ms(x, d=2):
    x = pd.Series(x, dtype=float).dropna()
    if not len(x): return ""
    return f"{x.mean():.{d}f} ± {x.std(ddof=1):.{d}f}" if len(x) > 1 else f"{x.mean():.{d}f}"

def paired(df, a, b, col, by=("setting", "test_set")):
    "Per (setting, test set): the per-seed difference a - b of `col`, its mean, sd, t and whether |t| > t_crit (5%, two-sided)."
    out = []
    for k, g in df.groupby(list(by), sort=False):
        x = g[g.row == a].set_index("seed")[col]; y = g[g.row == b].set_index("seed")[col]
        d = (x - y).dropna(); n = len(d)
        if not n: continue
        sd = d.std(ddof=1) if n > 1 else np.nan
        t = d.mean() / (sd / np.sqrt(n)) if n > 1 and sd > 0 else np.nan
        c = float(stats.t.ppf(0.975, n - 1)) if n > 1 else np.nan
        out.append(dict(zip(by, k), comparison=f"{a} − {b}", metric=col, seeds=n, per_seed=", ".join(f"{v:+.2f}" for v in d),
                        mean=round(d.mean(), 2), sd=round(sd, 2), t=round(t, 2) if pd.notna(t) else np.nan,
                        t_crit=round(c, 2), beyond_noise=("yes" if abs(t) > c else "no") if pd.notna(t) else "n/a"))
    return pd.DataFrame(out)

def compact(table, paper):
    "Rows: calibrators; columns: per (IF, test set) ECE-all mean ± std, and the paper's MNIST ECE for the test split."
    ok = table[table.status == "ok"]
    cols = {}
    for (s, ts), g in ok.groupby(["setting", "test_set"], sort=False):
        cols[f"{s} {ts}"] = {r: ms(h.ece_all) for r, h in g.groupby("row", sort=False)}
        if ts == "test":
            f = float(s[3:])
            q = paper[(paper.imb_factor == f) & (paper.test_set == "MNIST")].set_index("method").ece
            cols[f"{s} MNIST (paper)"] = q.to_dict()
    key = lambda c: (-float(c.split()[1]), 0 if c.endswith(" test") else 1 if "paper" in c else 2)
    out = pd.DataFrame(cols).reindex(ROW_ORDER)
    out = out[sorted(out.columns, key=key)]
    out.index.name = "row"
    return out.reset_index()

def groups_table(table, rows=("Base", "TS", "Ours")):
    "ECE (%) per shot group, mean ± std over seeds, for `rows`."
    ok = table[(table.status == "ok") & table.row.isin(rows)]
    out = []
    for (s, ts, r), g in ok.groupby(["setting", "test_set", "row"], sort=False):
        out.append(dict(setting=s, test_set=ts, row=r, **{k: ms(g[f"ece_{k}"]) for k in ("all", "many", "medium", "few")},
                        top1=ms(g.top1, 1)))
    return pd.DataFrame(out)

def ikl_part(dataset, budget, seeds, ov, runs_dir, shift, severity):
    "ECE per group of Softmax / BSCE / BSCE+IKL before and after TS and the paper's TS, on the test split and the shift."
    rows, cache = [], {}
    for label, m in IKL_METHODS.items():
        for s in seeds:
            r = run(run_config(dataset, m, budget, s, **ov), runs_dir, device="cpu")
            for ts in ("test", shift):
                z, y = (r.outputs("test")["logits"], r.outputs("test")["targets"]) if ts == "test" else \
                       (lambda o: (o["logits"], o["targets"]))(cal.shifted_outputs(r, shift, severity, "cpu", _cache=cache))
                for cname, c in (("uncalibrated", cal.Calibrator()), ("TS", cal.TS()), ("Ours", cal.IWTS())):
                    cal.fit_calibrator(c, r)
                    g = cal.ece_by_group(softmax(c(z), 1), y, r.class_counts)
                    rows.append(dict(model=label, seed=s, test_set=ts, calibrator=cname, T=round(getattr(c, "T", 1.0), 3),
                                     top1=100 * float((np.asarray(z).argmax(1) == y).mean()),
                                     **{f"ece_{k}": 100 * v for k, v in g.items()}))
    return pd.DataFrame(rows)

def ikl_summary(df):
    out = []
    for (m, ts, c), g in df.groupby(["model", "test_set", "calibrator"], sort=False):
        out.append(dict(model=m, test_set=ts, calibrator=c, T=ms(g["T"]), top1=ms(g.top1, 1),
                        **{k: ms(g[f"ece_{k}"]) for k in ("all", "many", "medium", "few")}))
    return pd.DataFrame(out)

def ikl_paired(df):
    "BSCE+IKL − BSCE (and BSCE − Softmax) per seed, ECE all and per group, per calibrator and test set."
    out = []
    d = df.rename(columns={"model": "row"})
    for a, b in (("BSCE+IKL", "BSCE"), ("BSCE", "Softmax")):
        for col in ("ece_all", "ece_many", "ece_medium", "ece_few"):
            out.append(paired(d, a, b, col, by=("test_set", "calibrator")))
    return pd.concat(out, ignore_index=True)

def ikl_figure(df, path, title):
    import seaborn as sns
    sets = list(df.test_set.unique())
    fig, axes = plt.subplots(1, len(sets), figsize=(7.5 * len(sets), 3.6), squeeze=False)
    for ax, ts in zip(axes[0], sets):
        long = df[df.test_set == ts].melt(id_vars=["model", "calibrator", "seed"], value_vars=["ece_all", "ece_many", "ece_medium", "ece_few"],
                                          var_name="group", value_name="ECE (%)").dropna()
        long["x"] = long.model + "\n" + long.calibrator
        long["group"] = long.group.str[4:]
        sns.barplot(long, x="x", y="ECE (%)", hue="group", ax=ax, errorbar="sd")
        ax.set(xlabel="", title=f"{title} ({ts})"); ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)

def write_ikl(df, istem, a, iov):
    s, ip = ikl_summary(df), ikl_paired(df)
    df.to_csv(istem.with_suffix(".csv"), index=False)
    s.to_csv(istem.with_name(istem.name + "_summary.csv"), index=False)
    ip.to_csv(istem.with_name(istem.name + "_paired.csv"), index=False)
    split = "data.val_fraction" in iov
    how = "80/20 split, calibrators fitted on the 20%" if split else \
          "no validation split (the IKL evidence's runs): calibrators fitted on the training set's clean pass (biased)"
    ikl_figure(df, istem.with_suffix(".png"), f"ECE per group, {a.dataset} ({a.budget}), {len(a.seeds)} seeds, {'80/20' if split else 'no val split'}")
    pd.set_option("display.width", 250); pd.set_option("display.max_columns", 40)
    print(f"\nSoftmax / BSCE / BSCE+IKL, {a.dataset} ({a.budget}), {how}: ECE (%) per group before / after TS and Ours")
    print(s.to_string(index=False))
    print("\npaired per-seed differences, ECE points")
    print(ip.to_string(index=False))
    print(f"wrote {istem}*")

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fmnist_lt"); p.add_argument("--budget", default="cpu")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--imb-factors", nargs="+", type=int, default=IFS)
    p.add_argument("--shift", default="noise", help="the corrupted test set (noise | blur | contrast)")
    p.add_argument("--severity", type=int, default=3)
    p.add_argument("--runs-dir", default=None, help="default: $LTNB_RUNS")
    p.add_argument("--no-lock", action="store_true", help="do not take the shared training lock (seconds-long smoke checks only)")
    p.add_argument("--deadline", default=None, help="HH:MM (local): start no training run after it")
    p.add_argument("--skip-ikl", action="store_true")
    p.add_argument("--ikl-only", action="store_true", help="only the Softmax / BSCE / BSCE+IKL question")
    p.add_argument("--ikl-val", choices=["split", "none"], default="split",
                   help="split: those runs on the 80/20 split (IF 100); none: the runs without a validation split (the IKL "
                        "evidence's, the dataset's own IF): calibrators fitted on the training set's clean pass (biased)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides for every run")
    a = p.parse_args(argv)
    if not a.no_lock: os.environ.setdefault("LTNB_TRAIN_LOCK", LOCK)   # `run` holds it while training, per run
    else: os.environ.pop("LTNB_TRAIN_LOCK", None)
    ov = {"data.val_fraction": 0.2, **{k: _parse_value(v) for k, v in (x.split("=", 1) for x in a.set)}}
    dl = None
    if a.deadline:
        h, m = map(int, a.deadline.split(":")); lt = time.localtime()
        dl = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, h, m, 0, 0, 0, -1))
    t0 = time.time()
    if a.ikl_only:
        iov = {**ov, "data.imb_factor": 1 / 100} if a.ikl_val == "split" else {k: v for k, v in ov.items() if k != "data.val_fraction"}
        timing, complete = train([(m, run_config(a.dataset, m, a.budget, s, **iov)) for m in IKL_METHODS.values() for s in a.seeds],
                                 a.runs_dir, dl)
        if not complete: sys.exit(1)
        from ltnb.reproduce import _seeds_tag
        istem = figures_dir() / f"calib_ikl_{a.dataset}_{a.budget}_{_seeds_tag(a.seeds)}{'' if a.ikl_val == 'split' else '_noval'}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = ikl_part(a.dataset, a.budget, a.seeds, iov, a.runs_dir, a.shift, a.severity)
        write_ikl(df, istem, a, iov)
        return

    # the base runs (IF 100 first: the IKL comparison needs it), then BSCE / BSCE+IKL at IF 100
    jobs = [(f"ce IF {f}", run_config(a.dataset, "ce", a.budget, s, **{**ov, "data.imb_factor": 1 / f}))
            for f in a.imb_factors for s in a.seeds]
    if not a.skip_ikl:   # right after IF 100's base runs: with a deadline, IF 100 and the IKL question come first
        ikl = [(m, run_config(a.dataset, m, a.budget, s, **{**ov, "data.imb_factor": 1 / 100}))
               for m in ("bsce", "bsce+ikl") for s in a.seeds]
        k = len(a.seeds) * (a.imb_factors.index(100) + 1) if 100 in a.imb_factors else len(jobs)
        jobs = jobs[:k] + ikl + jobs[k:]
    timing, complete = train(jobs, a.runs_dir, dl)
    if not complete:   # past the deadline: the imbalance factors (and the IKL part) whose every seed is finished
        ok = lambda lab: all(_finished(c, a.runs_dir) for l, c in jobs if l == lab)
        a.imb_factors = [f for f in a.imb_factors if ok(f"ce IF {f}")]
        a.skip_ikl = a.skip_ikl or not (ok("bsce") and ok("bsce+ikl") and 100 in a.imb_factors)
        print(f"deadline: imbalance factors {a.imb_factors} only; IKL part {'skipped' if a.skip_ikl else 'kept'}", flush=True)
        if not a.imb_factors: sys.exit(1)

    rep = reproduce("calib_table2", a.dataset, a.budget, a.seeds, device="cpu", runs_dir=a.runs_dir, sweep=a.imb_factors,
                    overrides=ov)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summ = cal.calib_ece(rep, [a.shift], severity=a.severity, device="cpu")   # writes _ece.csv, _ece_summary.csv, figures
    stem = rep.stem
    table = pd.read_csv(stem.with_name(stem.name + "_ece.csv"))
    comp = compact(table, rep.paper)
    grp = groups_table(table)
    pr = pd.concat([paired(table, "Ours", "TS", "ece_all"), paired(table, "TS", "Base", "ece_all"), paired(table, "GPC", "TS", "ece_all"),
                    paired(table, "Ours", "TS", "ece_few"), paired(table, "Ours", "TS", "ece_medium")], ignore_index=True)
    comp.to_csv(stem.with_name(stem.name + "_ece_compact.csv"), index=False)
    grp.to_csv(stem.with_name(stem.name + "_ece_groups.csv"), index=False)
    pr.to_csv(stem.with_name(stem.name + "_paired.csv"), index=False)
    pd.set_option("display.width", 250); pd.set_option("display.max_columns", 40); pd.set_option("display.max_colwidth", 60)
    print(f"\nECE (%), 15 bins, {a.dataset} ({a.budget}), 80/20 split, seeds {a.seeds}; test = balanced test split, "
          f"{a.shift} = corrupted test split (severity {a.severity}); paper: MNIST-LT, Table 2, MNIST column")
    print(comp.to_string(index=False))
    print("\nECE (%) per shot group (many > 100, medium 20–100, few < 20 training images), Base / TS / Ours")
    print(grp.to_string(index=False))
    print("\npaired per-seed differences (same base run), ECE points")
    print(pr.to_string(index=False))
    if not a.skip_ikl:
        df = ikl_part(a.dataset, a.budget, a.seeds, {**ov, "data.imb_factor": 1 / 100}, a.runs_dir, a.shift, a.severity)
        istem = figures_dir() / stem.name.replace("calib_table2_", "calib_ikl_")
        write_ikl(df, istem, a, {**ov, "data.imb_factor": 1 / 100})
    if timing: print("\ntraining this call:", round(sum(t["train_s"] for t in timing)), "s;", pd.DataFrame(timing).to_string(index=False))
    print(f"wrote {stem}*; {time.time() - t0:.0f}s")

if __name__ == "__main__": main()
