"""SADE evidence on fmnist_lt (IF 100, `cpu` budget), seeds 0 1 2: SADE, SADE+IKL, SADE on forward / uniform / backward
test sets, and the cost against a single model.

    LTNB_RUNS=/work/runs LTNB_TRAIN_LOCK=/tmp/ltnb-train.lock OMP_NUM_THREADS=1 python bench/sade_evidence.py [--seeds 0 1 2]

Runs (the run cache trains or loads each; $LTNB_TRAIN_LOCK makes ltnb's `run()` train one at a time): `ce` (the single
model, for the cost), `sade`, `sade+ikl`, all on the `cpu` recipe (SADE's rows on `multi_expert_cnn28`, reduce_dimension).
Prints and writes (figures/, names carry the seeds):
* sade_fmnist_lt_cpu_seedsS.csv: many / medium / few / all mean +- std over seeds (last epoch), beside the paper's
  CIFAR-100-LT IF100 numbers (IKL Table 1, read from ltnb's paper tables; SADE README 49.8);
* sade_fmnist_lt_cpu_seedsS_ikl_gain.csv: the paired per-seed gain of SADE+IKL over SADE;
* sade_fmnist_lt_cpu_seedsS_agnostic.csv: each `sade` run on forward50 / forward10 / uniform / backward10 / backward50
  (mean of experts, each expert, test-time aggregation with its learned weights), and mean +- std over seeds;
* sade_fmnist_lt_cpu_seedsS_cost.csv: parameters, seconds per training epoch, a training step's time and memory;
* sade_fmnist_lt_cpu_seedsS_weights.png: the learned aggregation weights per test distribution (mean, seeds as dots).
`--no-tta` skips the aggregation (the distributions are then scored with the mean of the experts only).
"""
import argparse
import numpy as np
import pandas as pd
import torch
import ltnb  # noqa: F401  registers sade
from ltnb.experiments import run_config, run, runs_frame, figures_dir
from ltnb.tables import summarise_seeds
from ltnb.sade import test_agnostic_report, sade_cost, AggregationConfig

ROWS = {"Softmax (single model)": "ce", "SADE": "sade", "SADE+IKL": "sade+ikl"}

def paper_all() -> dict:
    "The paper's CIFAR-100-LT IF100 `all` for the SADE rows (IKL Table 1), read from ltnb's paper tables."
    from ltnb.tables import load_paper_table
    t = load_paper_table("ikl_table1")
    t = t[(t.imb_factor == 100) & t.epochs.isna()]
    out = {m: f"{float(t[t.method == m]['all'].iloc[0])} (IKL T1)" for m in ("SADE", "SADE+IKL")}
    out["SADE"] += "; 49.8 (SADE README)"
    return out
DISTS = ("forward50", "forward10", "uniform", "backward10", "backward50")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fmnist_lt"); p.add_argument("--budget", default="cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--no-tta", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    tag = f"sade_{a.dataset}_{a.budget}_seeds{''.join(map(str, a.seeds))}"
    out = figures_dir()
    runs = {}
    for s in a.seeds:
        for label, m in ROWS.items():
            r = run(run_config(a.dataset, m, a.budget, s), device="cpu")
            r.label = label; runs[label, s] = r
            print(f"seed {s} {label}: all {r.last['top1']:.2f} ({'cache' if r.from_cache else 'trained'})", flush=True)
    frame = runs_frame(list(runs.values()), label=lambda r: r.label)
    summ = summarise_seeds(frame)
    summ["paper (CIFAR-100-LT IF100, all)"] = summ.method.map(paper_all())
    summ.to_csv(out / f"{tag}.csv", index=False)
    print(summ.round(2).to_string(index=False))

    f = frame.set_index(["method", "seed"])[["many", "medium", "few", "all"]].astype(float)   # an empty shot group: None -> NaN
    gain = pd.DataFrame([{**{"seed": s}, **{m: f.loc[("SADE+IKL", s), m] - f.loc[("SADE", s), m]
                                            for m in ("many", "medium", "few", "all")}} for s in a.seeds])
    gain.to_csv(out / f"{tag}_ikl_gain.csv", index=False)
    print("SADE+IKL - SADE per seed:\n" + gain.round(2).to_string(index=False))
    print("mean", gain.drop(columns="seed").mean().round(2).to_dict(), "std", gain.drop(columns="seed").std(ddof=1).round(2).to_dict())

    reps = []
    for s in a.seeds:
        rep = test_agnostic_report(runs["SADE", s], DISTS, tta=not a.no_tta, cfg=AggregationConfig(seed=s))
        rep["seed"] = s; reps.append(rep)
        print(f"seed {s} test-agnostic done", flush=True)
    ag = pd.concat(reps, ignore_index=True)
    ag.to_csv(out / f"{tag}_agnostic.csv", index=False)
    cols = [c for c in ("many", "medium", "few", "all", "w1", "w2", "w3") if c in ag]
    g = ag.groupby(["distribution", "prediction"], sort=False)[cols]
    table = g.mean().round(2).astype(str) + " ± " + g.std(ddof=1).round(2).astype(str)
    print(table.to_string())

    cost = sade_cost([runs[lab, a.seeds[0]] for lab in ROWS])
    cost.to_csv(out / f"{tag}_cost.csv", index=False)
    print(cost.to_string(index=False))

    if not a.no_tta:
        import matplotlib; matplotlib.use("Agg")
        import matplotlib.pyplot as plt, seaborn as sns
        w = ag[ag.prediction == "test-time aggregation"].melt(id_vars=["distribution", "seed"], value_vars=["w1", "w2", "w3"],
                                                               var_name="expert", value_name="weight")
        w["expert"] = w.expert.map({"w1": "expert 1 (forward)", "w2": "expert 2 (uniform)", "w3": "expert 3 (backward)"})
        fig, ax = plt.subplots(figsize=(7, 3.5))
        sns.pointplot(w, x="distribution", y="weight", hue="expert", order=list(DISTS), errorbar=None, ax=ax)
        sns.stripplot(w, x="distribution", y="weight", hue="expert", order=list(DISTS), dodge=False, alpha=.4, legend=False, ax=ax)
        ax.axhline(1 / 3, color="grey", lw=.8, ls=":"); ax.set(title=f"SADE aggregation weights, {a.dataset} {a.budget}, seeds {a.seeds}")
        fig.tight_layout(); fig.savefig(out / f"{tag}_weights.png", dpi=120)


if __name__ == "__main__":
    main()
