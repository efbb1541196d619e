"""SHIKE's Table 4 ablation ladder on fmnist_lt (IF 100, `cpu` budget), seeds 0 1 2, beside the paper's ladder.

    LTNB_RUNS=/work/runs OMP_NUM_THREADS=1 python bench/shike_evidence.py [--seeds 0 1 2] [--budget-min 30]

Rows: single model, MoE, MoE+DKF, MoE+DKF+L_mu, MoE+DKF+L_nt, full SHIKE (the paper's "MoE+L_mu+L_nt" row is left out).
Every row is a plain `run_rows` call on SHIKE's declared row (`ltnb.shike`, `shike_table4`): the run cache trains or loads
it; the shared lock (/tmp/ltnb-train.lock) is taken per run. Seeds are trained in order, a whole seed at a time, while
the training time used stays under --budget-min (a seed that would not fit is left out and said so).
Prints and writes (figures/, names carry the seeds):
* shike_table4_fmnist_lt_cpu_seedsS.csv: many / medium / few / all, mean and std over seeds, and the paper's `all`;
* shike_table4_fmnist_lt_cpu_seedsS_gains.csv: each ladder step's paired per-seed gain, its mean and std, whether
  all seeds agree in sign and whether the paired t-test rejects 0 at 5 % (beyond seed noise);
* shike_table4_fmnist_lt_cpu_seedsS_cost.csv: parameters, seconds per stage-1 epoch (contended: a 2-core machine
  shared with other developers), and the training-step memory: parameters + gradients + momentum, plus the
  activations autograd saves for one batch of 64 (counted exactly with saved-tensor hooks; CPU has no allocator peak);
* shike_table4_fmnist_lt_cpu_seedsS.png: the ladder (bars: mean, dots: seeds) and the paired gains.
Everything is last-epoch test accuracy; the overrides (`--overrides`, JSON) are part of every run's key.
"""
import argparse, fcntl, json, math, os, time
import numpy as np
import pandas as pd
import torch
import ltnb  # noqa: F401  registers SHIKE and its tables
from ltnb.experiments import run_rows, figures_dir, row_frame, METRICS
from ltnb.reproduce import TABLES
from ltnb.tables import load_paper_table
from ltnb.models import count_parameters

LADDER = ["plain ResNet-32", "MoE", "MoE+DKF", "MoE+DKF+L_mu", "MoE+DKF+L_nt", "MoE+DKF+L_mu+L_nt"]
LABEL = {"plain ResNet-32": "single model"}    # the paper's single ResNet-32 is SHIKE's backbone with one expert here
STEPS = [("plain ResNet-32", "MoE"), ("MoE", "MoE+DKF"), ("MoE+DKF", "MoE+DKF+L_mu"), ("MoE+DKF", "MoE+DKF+L_nt"),
         ("MoE+DKF", "MoE+DKF+L_mu+L_nt"), ("plain ResNet-32", "MoE+DKF+L_mu+L_nt")]
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}   # two-sided 5 % t quantiles by degrees of freedom


class Late(Exception): pass

def finished(label, seed, a) -> bool:
    "Whether the row's run (and its parents) is already in the run cache."
    from ltnb.experiments import row_spec, row_overrides, method_overrides, run_config, _all_finished
    meth, kw = row_spec(TABLES["shike_table4"].rows[label])
    kw, ov = row_overrides(kw)
    cfg = run_config(a.dataset, meth, a.budget, seed, method_kw=kw or None,
                     **method_overrides(meth, a.dataset, a.budget, {**a.overrides, **ov}))
    return _all_finished(cfg)

def run_one(label, seed, a, deadline=None):
    "Train (or load) one row for one seed, holding the shared lock only for that run (waiting for it until `deadline`)."
    import signal, contextlib
    def late(*_): raise Late(label)
    cached = finished(label, seed, a)          # loading a finished run needs no lock
    cached = cached or bool(os.environ.get("LTNB_TRAIN_LOCK"))   # ltnb's own run() takes $LTNB_TRAIN_LOCK: no second lock here
    with (contextlib.nullcontext() if cached else open("/tmp/ltnb-train.lock", "a")) as f:
        old = signal.signal(signal.SIGALRM, late)
        if deadline and not cached: signal.alarm(max(1, int(deadline - time.time())))
        try:
            if not cached: fcntl.flock(f, fcntl.LOCK_EX)   # a blocking wait, like the other users' (a poll would lose every race)
        finally: signal.alarm(0); signal.signal(signal.SIGALRM, old)
        t = time.time()
        (r,), _ = run_rows({label: TABLES["shike_table4"].rows[label]}, a.dataset, a.budget, [seed], device="cpu",
                           **a.overrides)
        return r, (0.0 if r.from_cache else time.time() - t)


def gains(frame):
    "Paired per-seed gains of each ladder step, with the paired t statistic."
    out = []
    for lo, hi in STEPS:
        A, B = frame[frame.method == lo].set_index("seed"), frame[frame.method == hi].set_index("seed")
        seeds = sorted(set(A.index) & set(B.index))
        if not seeds: continue
        for m in METRICS:
            d = (B.loc[seeds, m] - A.loc[seeds, m]).astype(float)
            n, mean = len(d), d.mean()
            sd = d.std(ddof=1) if n > 1 else float("nan")
            t = mean / (sd / math.sqrt(n)) if n > 1 and sd > 0 else float("nan")
            out.append(dict(step=f"{LABEL.get(lo, lo)} -> {LABEL.get(hi, hi)}", metric=m,
                            **{f"seed {s}": round(v, 2) for s, v in d.items()}, mean=round(mean, 2), std=round(sd, 2),
                            same_sign=bool(n > 1 and ((d > 0).all() or (d < 0).all())),
                            t=round(t, 2), beyond_noise=bool(n > 1 and abs(t) > T95.get(n - 1, 2.0))))
    return pd.DataFrame(out)


def train_memory_mb(model, input_shape, batch=64):
    "Parameters + gradients + SGD momentum, plus the activations autograd saves for one training batch (MB)."
    saved = []
    def pack(t):
        saved.append(t.numel() * t.element_size() if t.device.type != "meta" else 0); return t
    m = model.train()
    x = torch.randn(batch, *input_shape)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = m(x)
    del out
    return (3 * sum(p.numel() * p.element_size() for p in m.parameters()) + sum(saved)) / 2**20


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fmnist_lt"); p.add_argument("--budget", default="cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget-min", type=float, default=30.0, help="stop before a seed that would exceed this much training")
    p.add_argument("--deadline", default=None, help="HH:MM (today, local time): start no run after it, minus the longest run so far")
    p.add_argument("--cached-only", action="store_true", help="train nothing: tabulate the runs already in the cache")
    p.add_argument("--overrides", type=json.loads, default={}, help='JSON dotted overrides for every run, e.g. {"model.widths": [8, 16, 32]}')
    a = p.parse_args()
    deadline = None
    if a.deadline:
        import datetime
        h, m = map(int, a.deadline.split(":"))
        deadline = datetime.datetime.now().replace(hour=h, minute=m, second=0).timestamp()
    os.environ.pop("LTNB_TRAIN_LOCK", None)   # this script holds /tmp/ltnb-train.lock itself, per run (a second hold would wait on itself)
    torch.set_num_threads(1)   # tiny models on a shared 2-core machine: 1 thread (2 threads fight other users' jobs)
    runs, done, spent, per_seed = [], [], 0.0, []
    for s in a.seeds:
        if per_seed and spent + max(per_seed) > 60 * a.budget_min:
            print(f"stop before seed {s}: {spent / 60:.1f} min of training used, a seed takes ~{max(per_seed) / 60:.1f} min", flush=True)
            break
        ts, longest = 0.0, 0.0
        for label in LADDER:
            if a.cached_only and not finished(label, s, a):
                print(f"seed {s} {label}: not in the run cache (--cached-only)", flush=True); continue
            if deadline and not a.cached_only and time.time() + max(longest, 240) > deadline:
                print(f"deadline {a.deadline}: not starting seed {s} {label}", flush=True); break
            try: r, took = run_one(label, s, a, deadline and deadline - max(longest, 240))
            except Late: print(f"deadline {a.deadline}: the lock came too late for seed {s} {label}", flush=True); break
            ts += took; runs.append(r); longest = max(longest, took)
            print(f"seed {s} {label:20s} all {r.last['top1']:5.1f} medium {r.last.get('medium', float('nan')):5.1f}"
                  f"{' (cached)' if r.from_cache else f' ({took:.0f} s)'}", flush=True)
        spent += ts; per_seed.append(ts)
        if any(r.config["seed"] == s for r in runs): done.append(s)
        if deadline and not a.cached_only and time.time() > deadline - 240: break
    tag = "seeds" + "-".join(map(str, done))
    stem = figures_dir() / f"shike_table4_{a.dataset}_{a.budget}_{tag}"
    frame = row_frame(runs)
    # the ladder, mean +- std over seeds, beside the paper's
    paper = load_paper_table("shike_table4").set_index("method")["all"]
    g = frame.groupby("method", sort=False)[list(METRICS)]
    table = pd.concat({"mean": g.mean(), "std": g.std(ddof=1)}, axis=1)
    table.columns = [f"{m}_{k}" for k, m in table.columns]
    table = table.reindex(LADDER)
    table.insert(0, "row", [LABEL.get(r, r) for r in table.index])
    table["all_paper_cifar100_lt"] = [paper.get(r) for r in table.index]
    table["n_seeds"] = frame.groupby("method").seed.nunique().reindex(LADDER).fillna(0).astype(int).values
    table.to_csv(stem.with_suffix(".csv"), index=False)
    show = pd.DataFrame({"row": table.row, **{m: [f"{mu:5.1f} ± {sd:4.1f}" if not np.isnan(sd) else f"{mu:5.1f}"
                                              for mu, sd in zip(table[f"{m}_mean"], table[f"{m}_std"])] for m in METRICS},
                         "paper all (CIFAR-100-LT)": table.all_paper_cifar100_lt, "seeds": table.n_seeds})
    print(f"\nSHIKE Table 4 ladder — {a.dataset}, {a.budget}, seeds {done}; last-epoch test top-1 (%), mean ± std over seeds")
    print(show.to_string(index=False))
    gn = gains(frame)
    gn.to_csv(stem.parent / f"{stem.name}_gains.csv", index=False)
    print("\nPaired per-seed gains (to - from); beyond_noise: paired t-test at 5 %")
    print(gn.to_string(index=False))
    # cost against the single model
    cost = []
    for label in ["plain ResNet-32", "MoE", "MoE+DKF+L_mu+L_nt"]:
        rs = [r for r in runs if r.label == label]
        if not rs: continue
        secs = [h["train_time"] for r in rs for h in r.history if h.get("stage") == "train"]
        model = rs[0].model()
        cost.append(dict(row=LABEL.get(label, label), model=rs[0].config["model"]["name"], params=count_parameters(model),
                         s_per_epoch_contended=round(float(np.mean(secs)), 2), epochs_timed=len(secs),
                         train_mem_mb=round(train_memory_mb(model, tuple(rs[0].provenance["data"]["input_shape"])), 2)))
    cost = pd.DataFrame(cost)
    for c in ("params", "s_per_epoch_contended", "train_mem_mb"):
        cost[f"{c}_x_single"] = (cost[c] / cost[c].iloc[0]).round(2)
    cost.to_csv(stem.parent / f"{stem.name}_cost.csv", index=False)
    print("\nCost against the single model (timings contended: 2 shared cores, 1 thread)")
    print(cost.to_string(index=False))
    # figure
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.2))
    x = np.arange(len(LADDER)); w = 0.2
    for i, m in enumerate(METRICS):
        axes[0].bar(x + (i - 1.5) * w, table[f"{m}_mean"], w, yerr=table[f"{m}_std"].fillna(0), label=m, capsize=2)
        for j, lab in enumerate(LADDER):
            v = frame[frame.method == lab][m]
            axes[0].scatter(np.full(len(v), x[j] + (i - 1.5) * w), v, s=8, c="k", zorder=3)
    axes[0].scatter(x + 1.5 * w, table.all_paper_cifar100_lt, marker="*", s=80, c="r", zorder=4, label="paper all (CIFAR-100-LT)")
    axes[0].set_xticks(x); axes[0].set_xticklabels(table.row, rotation=15, fontsize=8)
    axes[0].set(ylabel="test top-1 (%)", title=f"SHIKE Table 4 ladder, {a.dataset} {a.budget}, seeds {done}")
    axes[0].set_ylim(0, 100); axes[0].legend(fontsize=7, ncol=5, loc="upper right")
    ga = gn[gn.metric == "all"]
    cols = [c for c in ga if c.startswith("seed ")]
    for j, (_, r) in enumerate(ga.iterrows()):
        axes[1].bar(j, r["mean"], color="tab:green" if r["beyond_noise"] else "tab:gray")
        axes[1].scatter([j] * len(cols), [r[c] for c in cols], c="k", s=10, zorder=3)
    axes[1].axhline(0, c="k", lw=0.8)
    axes[1].set_xticks(range(len(ga))); axes[1].set_xticklabels(ga.step, rotation=20, fontsize=7, ha="right")
    axes[1].set(ylabel="paired gain in all (points)", title="paired per-seed gains (green: beyond seed noise, t-test 5 %)")
    fig.tight_layout(); fig.savefig(stem.with_suffix(".png"), dpi=120)
    print("\nwrote", stem.with_suffix(".csv"), stem.with_suffix(".png"), f"and _gains/_cost CSVs; training time {spent / 60:.1f} min")


if __name__ == "__main__":
    main()
