"""NCL and BBN on fmnist_lt (IF 100, `cpu` budget), seeds 0 1 2, beside the paper's CIFAR-100-LT numbers; and their cost.

    LTNB_TRAIN_LOCK=/tmp/ltnb-train.lock OMP_NUM_THREADS=1 python bench/nclbbn_evidence.py [--seeds 0 1 2] [--no-cost]

Rows: CE (the single model), NCL (three full cnn28 networks), NCL (S) (one network: NIL + HCM, no NBOD), BBN.
Every row is a plain `run_rows` call (the run cache trains or loads it; ltnb's run() holds $LTNB_TRAIN_LOCK per run).
Prints and writes (figures/):
* nclbbn_fmnist_lt_cpu_seedsS.csv: many / medium / few / all, mean and std over seeds (last epoch, standard groups
  > 100 / 20-100 / < 20), with NCL's own groups (>= 100 / <= 20, `ltnb.ncl.ncl_shot_frame`) for the NCL rows, and the
  paper's CIFAR-100-LT IF 100 top-1 (NCL (3N) 54.2 and NCL (S) 53.3: SHIKE Table 1; BBN 44.7: IKL Table 1);
* nclbbn_fmnist_lt_cpu_cost.csv: parameters and seconds per training epoch against the single model (`ltnb.ncl.method_cost`).
"""
import argparse
import pandas as pd
import ltnb  # noqa: F401  registers ncl and bbn
from ltnb.experiments import run_rows, figures_dir, row_frame, METRICS
from ltnb.ncl import ncl_shot_frame, method_cost

ROWS = {"CE (single model)": "ce", "NCL (3N)": "ncl", "NCL (S)": ("ncl", {"model.num_experts": 1}), "BBN": "bbn"}
PAPER = {"NCL (3N)": 54.2, "NCL (S)": 53.3, "BBN": 44.7, "CE (single model)": 38.4}   # CIFAR-100-LT IF 100 (baselines.md §13)


def summary(frame: pd.DataFrame, suffix: str = "") -> pd.DataFrame:
    g = frame.groupby("method", sort=False)[list(METRICS)]
    out = g.mean().round(2).add_suffix(" mean" + suffix).join(g.std(ddof=1).round(2).add_suffix(" std" + suffix))
    return out[[f"{m} {s}{suffix}" for m in METRICS for s in ("mean", "std")]]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fmnist_lt"); p.add_argument("--budget", default="cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2]); p.add_argument("--no-cost", action="store_true")
    a = p.parse_args()
    runs, missing = run_rows(ROWS, a.dataset, a.budget, a.seeds, device="cpu")
    std = summary(row_frame(runs))
    ncl_runs = [r for r in runs if r.config["method_name"] == "ncl"]
    ncl = summary(ncl_shot_frame(ncl_runs), " (NCL groups)") if ncl_runs else pd.DataFrame()
    table = std.join(ncl, how="left")
    table["paper CIFAR-100-LT all"] = [PAPER.get(m) for m in table.index]
    seeds = "".join(map(str, a.seeds))
    out = figures_dir() / f"nclbbn_{a.dataset}_{a.budget}_seeds{seeds}.csv"
    table.to_csv(out)
    pd.set_option("display.width", 250)
    print(table.to_string()); print("missing rows:", missing or "none"); print("written:", out)
    if not a.no_cost:
        cost = method_cost(a.dataset, ("ncl", "bbn"), budget=a.budget, epochs=1)
        cpath = figures_dir() / f"nclbbn_{a.dataset}_{a.budget}_cost.csv"
        cost.to_csv(cpath, index=False); print(cost.to_string(index=False)); print("written:", cpath)


if __name__ == "__main__":
    main()
