"""Issue 14's evidence in one table: every multi-expert baseline (and its +IKL / +LTRL row) on a dataset and budget,
many / medium / few / all mean ± std over seeds, and the paired per-seed gain of each composition over its host with
its t statistic (|t| > 4.30 is p < 0.05 with 3 seeds). Loads the runs the per-method evidence scripts trained
(bench/ride_evidence.py, sade_evidence.py, nclbbn_evidence.py, mdcs_evidence.py); trains what is missing.

    LTNB_RUNS=/work/runs python bench/ensembles_summary.py --dataset fmnist_lt --budget cpu --seeds 0 1 2
"""
import argparse, math
import pandas as pd
from ltnb.experiments import run_rows, row_frame, figures_dir

ROWS = {"CE (single model)": "ce", "RIDE": "ride", "RIDE+IKL": "ride+ikl", "SADE": "sade", "SADE+IKL": "sade+ikl",
        "NCL (3N)": "ncl", "NCL (S)": ("ncl", {"model.num_experts": 1}), "BBN": "bbn", "MDCS": "mdcs", "MDCS+RL": "mdcs+ltrl"}
PAIRS = {"RIDE+IKL": "RIDE", "SADE+IKL": "SADE", "MDCS+RL": "MDCS", "RIDE": "CE (single model)", "SADE": "CE (single model)",
         "NCL (3N)": "CE (single model)", "BBN": "CE (single model)", "MDCS": "CE (single model)"}
M = ["many", "medium", "few", "all"]

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fmnist_lt"); ap.add_argument("--budget", default="cpu")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    a = ap.parse_args(argv)
    runs, missing = run_rows(ROWS, a.dataset, a.budget, a.seeds, device="cpu")
    f = row_frame(runs)
    s = f.groupby("method", sort=False)[M].agg(["mean", "std"])
    summary = pd.DataFrame({"row": s.index, **{k: [f"{m:.2f} ± {sd:.2f}" for m, sd in zip(s[k]["mean"], s[k]["std"])] for k in M},
                            "seeds": f.groupby("method", sort=False).size().values})
    g = []
    for row, base in PAIRS.items():
        A, B = f[f.method == row].set_index("seed"), f[f.method == base].set_index("seed")
        seeds = sorted(set(A.index) & set(B.index))
        rec = dict(row=row, vs=base)
        for k in M:
            d = (A.loc[seeds, k] - B.loc[seeds, k]).astype(float)
            t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 and d.std(ddof=1) > 0 else float("nan")
            rec[f"Δ{k}"] = round(d.mean(), 2); rec[f"t_{k}"] = round(t, 2)
        rec["Δall per seed"] = " ".join(f"{x:+.2f}" for x in (A.loc[seeds, "all"] - B.loc[seeds, "all"]))
        rec["all: beyond noise"] = bool(abs(rec["t_all"]) > 4.30) if len(seeds) == 3 else None
        g.append(rec)
    gains = pd.DataFrame(g)
    stem = figures_dir() / f"ensembles_{a.dataset}_{a.budget}_seeds{'-'.join(map(str, a.seeds))}"
    summary.to_csv(f"{stem}_summary.csv", index=False); gains.to_csv(f"{stem}_paired.csv", index=False)
    pd.set_option("display.width", 250)
    print(summary.to_string(index=False)); print(); print(gains.to_string(index=False))
    print("missing rows:", missing or "none"); print("wrote", f"{stem}_summary.csv", f"{stem}_paired.csv")

if __name__ == "__main__": main()
