"""IKL / LTRL evidence on a small dataset (issue 9 §4): IKL Tables 1 (the recipe's IF), 6, 7 and LTRL Table 8's
KR/KS/KC ablation on BSCE at several seeds, Table 8 (the α strategies) at the first seed; each table's CSV and figure
go to figures/ (`reproduce(..., save=True)`), and the paired per-seed gain of every +IKL row over its base is printed
and written to figures/ikl_gains_<dataset>_<budget>_seeds<...>.csv.

    python bench/ikl_evidence.py --dataset fmnist_lt --budget cpu --seeds 0 1 2

Every run goes through the run cache, so a second call only reads. On a shared machine set
LTNB_TRAIN_LOCK=/tmp/ltnb-train.lock so that trainings take turns. A gain is called beyond seed noise when the
paired t-test over seeds gives p < 0.05 (with 3 seeds that needs a consistent sign and |mean| > 4.3 standard errors).
"""
import argparse, time
import numpy as np, pandas as pd
from scipy import stats
from ltnb.reproduce import reproduce
from ltnb.ikl import ltrl_ablation_rows
from ltnb.experiments import figures_dir

METRICS = ["many", "medium", "few", "all"]

def paired_gains(rep, pairs: dict) -> pd.DataFrame:
    "For each row -> base in `pairs`: per-seed gains (row − base, same seed) in every metric, mean, std, paired-t p."
    f = rep.frame("last"); out = []
    for row, base in pairs.items():
        a, b = f[f.method == row].set_index("seed"), f[f.method == base].set_index("seed")
        seeds = sorted(set(a.index) & set(b.index))
        if not seeds: continue
        for m in METRICS:
            d = (a.loc[seeds, m] - b.loc[seeds, m]).astype(float)
            p = stats.ttest_rel(a.loc[seeds, m], b.loc[seeds, m]).pvalue if len(seeds) > 1 and d.std() > 0 else np.nan
            out.append(dict(table=rep.spec.name, row=row, base=base, metric=m, per_seed=" ".join(f"{x:+.2f}" for x in d),
                            mean=round(d.mean(), 2), std=round(d.std(ddof=1), 2) if len(seeds) > 1 else np.nan,
                            p=round(p, 4) if p == p else np.nan, beyond_noise=bool(p == p and p < 0.05)))
    return pd.DataFrame(out)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fmnist_lt"); ap.add_argument("--budget", default="cpu")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2]); ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", nargs="*", default=None, help="a subset of: table1 table6 table7 ltrl8 table8")
    a = ap.parse_args(argv)
    abl = ltrl_ablation_rows("bsce")
    plan = {  # name: (table, seeds, extra rows, paired gains row -> base)
        "table1": ("ikl_table1", a.seeds, None, {"Softmax+IKL": "Softmax", "BSCE+IKL": "BSCE"}),
        "table6": ("ikl_table6", a.seeds, None, {"Softmax+IKL": "Softmax", "LDAM+IKL": "LDAM"}),
        "table7": ("ikl_table7", a.seeds, None, {"Softmax+ICL": "Softmax", "Softmax+IUR": "Softmax", "Softmax+IUR+ICL": "Softmax"}),
        "ltrl8": ("ltrl_table8", a.seeds, abl, {k: "BSCE" for k in abl if k != "BSCE"}),
        "table8": ("ikl_table8", a.seeds[:1], None, {}),
    }
    gains = []
    for name, (table, seeds, extra, pairs) in plan.items():
        if a.only is not None and name not in a.only: continue
        t0 = time.time()
        rep = reproduce(table, a.dataset, a.budget, seeds, device=a.device, extra_rows=extra)
        print(f"\n## {table} ({a.dataset}, {a.budget}, seeds {seeds}; {time.time() - t0:.0f} s)")
        print(rep.compact().to_string(index=False))
        g = paired_gains(rep, pairs)
        if len(g): print(g[g.metric.isin(["all", "few"])].to_string(index=False)); gains.append(g)
    if gains:
        out = figures_dir() / f"ikl_gains_{a.dataset}_{a.budget}_seeds{'-'.join(map(str, a.seeds))}.csv"
        pd.concat(gains).to_csv(out, index=False); print("wrote", out)

if __name__ == "__main__": main()
