"""RIDE and RIDE+IKL on fmnist_lt (IF 100, `cpu` budget), seeds 0 1 2, beside the paper's CIFAR-100-LT numbers.

    LTNB_RUNS=/work/runs LTNB_TRAIN_LOCK=/tmp/ltnb-train.lock OMP_NUM_THREADS=1 python bench/ride_evidence.py [--seeds 0 1 2] [--no-ea] [--cost]

Rows: `ride` (3 experts of the multi-expert cnn28, reduce_dimension, per-expert LDAM-DRW + diversity, re-weighting at
24 of 30 epochs), `ride+ikl` (the generic IKL wrapper on the ensemble logits) and, unless --no-ea, the `ride_ea` child
of each `ride` run (5 router epochs on the frozen model; its accuracy is the routed one, plus the expected number of
experts). Runs go through the run cache (`run_rows`), so a second call loads them. Prints many/medium/few/all
(last epoch) mean +- std over seeds, the paired per-seed IKL gains, the paper's numbers and, with --cost, `ride_cost`
(parameters and seconds per epoch against the single cnn28; take the timing lock: flock /tmp/ltnb-bench.lock).
Writes figures/ride_fmnist_lt_cpu_seedsS.csv and the per-expert figure of seed 0's RIDE run.
"""
import argparse
import numpy as np
import pandas as pd
import ltnb  # noqa: F401  registers ride
from ltnb.experiments import run_rows, row_frame, figures_dir, METRICS
from ltnb.ride import expert_usage, plot_expert_accuracy, ride_cost

PAPER = pd.DataFrame([   # CIFAR-100-LT IF 100, ResNet-32, 3 experts (baselines.md §6, ikl_ltrl.md §1)
    dict(row="RIDE", source="RIDE MODEL_ZOO", many=67.0, medium=49.9, few=25.7, all=48.6),
    dict(row="RIDE", source="IKL Table 1", many=np.nan, medium=np.nan, few=np.nan, all=48.0),
    dict(row="RIDE+IKL", source="IKL Table 1", many=np.nan, medium=np.nan, few=np.nan, all=48.8)])

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fmnist_lt"); p.add_argument("--budget", default="cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--no-ea", action="store_true"); p.add_argument("--cost", action="store_true")
    a = p.parse_args()
    rows = {"RIDE": "ride", "RIDE+IKL": "ride+ikl", **({} if a.no_ea else {"RIDE-EA": "ride_ea"})}
    runs, missing = run_rows(rows, a.dataset, a.budget, a.seeds, device="cpu")
    if missing: print("missing rows:", missing)
    f = row_frame(runs)
    if not a.no_ea:
        use = {r.config["seed"]: expert_usage(r) for r in runs if r.label == "RIDE-EA"}
        f["experts_used"] = [use[s]["mean_experts"] if m == "RIDE-EA" else np.nan for m, s in zip(f.method, f.seed)]
    stats = f.groupby("method")[[*METRICS, *(["experts_used"] if not a.no_ea else [])]].agg(["mean", "std"]).round(2)
    pd.set_option("display.width", 200)
    print(f"\n{a.dataset} / {a.budget}, seeds {a.seeds}: last-epoch test accuracy (%), mean and std over seeds")
    print(stats.to_string())
    A, B = f[f.method == "RIDE"].set_index("seed"), f[f.method == "RIDE+IKL"].set_index("seed")
    seeds = sorted(set(A.index) & set(B.index))
    g = pd.DataFrame({m: (B.loc[seeds, m] - A.loc[seeds, m]).astype(float) for m in METRICS})
    print("\npaired IKL gain (RIDE+IKL - RIDE) per seed:"); print(g.round(2).to_string())
    print("mean", g.mean().round(2).to_dict(), "std", g.std(ddof=1).round(2).to_dict() if len(g) > 1 else "-")
    print("\npaper (CIFAR-100-LT IF 100):"); print(PAPER.to_string(index=False))
    tag = f"ride_{a.dataset}_{a.budget}_seeds{''.join(map(str, a.seeds))}"
    f.to_csv(figures_dir() / f"{tag}.csv", index=False)
    r0 = next(r for r in runs if r.label == "RIDE" and r.config["seed"] == a.seeds[0])
    ax, df = plot_expert_accuracy(r0)
    ax.figure.tight_layout(); ax.figure.savefig(figures_dir() / f"{tag}_experts.png", dpi=120)
    print("\nper-expert accuracy, seed", a.seeds[0]); print(df.round(2).to_string(index=False))
    if a.cost:
        print("\ncost against the single model:"); print(ride_cost(a.dataset, a.budget).to_string(index=False))

if __name__ == "__main__":
    main()
