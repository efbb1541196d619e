"""IKL's prediction memory, top-k against dense on a real run (issue 13 §6): `ce+ikl` on one dataset and budget at
several seeds, once with the default dense float32 memory and once with `memory_layout="topk"` (k, dtype as given);
prints top-1 (all / many / medium / few, last epoch) per seed and layout, the paired difference top-k − dense per
seed, its mean, and the paired t statistic, and writes figures/ikl_memory_topk_<dataset>_<budget>_seeds<...>.csv (one
row per run) and ..._paired.csv (the differences).

    LTNB_RUNS=/work/runs LTNB_TRAIN_LOCK=/tmp/ltnb-train.lock OMP_NUM_THREADS=1 \\
        python bench/ikl_memory_topk.py --dataset fmnist_lt --budget cpu --seeds 0 1 2

Every run goes through the run cache (config hash), so a second call only reads. A difference is called beyond seed
noise when the paired t statistic exceeds the two-sided 5% critical value of Student's t with (seeds − 1) degrees of
freedom (4.30 for 3 seeds).
"""
import argparse
import numpy as np, pandas as pd
from scipy import stats
from ltnb.experiments import run_config, run, figures_dir

METRICS = ["all", "many", "medium", "few"]

def layouts(k: int, dtype: str) -> dict:
    "The two memories compared: name -> IKL method arguments (dense is IKL's default, so its runs need no argument)."
    return {"dense": {}, "topk": dict(memory_layout="topk", memory_k=k, memory_dtype=dtype)}

def collect(dataset, budget, seeds, k=10, dtype="float32", device="cpu") -> pd.DataFrame:
    "One row per (layout, seed): the run's last-epoch top-1 overall and per shot group (trained if not in the cache)."
    rows, data = [], None
    for name, kw in layouts(k, dtype).items():
        for s in seeds:
            cfg = run_config(dataset, "ce+ikl", budget, s, method_kw=kw or None)
            r = run(cfg, data=data, device=device)
            last = r.last
            rows.append(dict(layout=name, seed=s, all=last["top1"], many=last["many"], medium=last["medium"], few=last["few"],
                             epoch=last["epoch"], run=str(r.path), cached=r.from_cache))
    return pd.DataFrame(rows)

def paired(df: pd.DataFrame) -> pd.DataFrame:
    "Per metric: top-k − dense per seed, mean, standard deviation, paired t, the 5% critical |t| and the verdict."
    a, b = df[df.layout == "topk"].set_index("seed"), df[df.layout == "dense"].set_index("seed")
    seeds = sorted(set(a.index) & set(b.index)); out = []
    for m in METRICS:
        d = (a.loc[seeds, m] - b.loc[seeds, m]).astype(float).to_numpy()
        sd = d.std(ddof=1) if len(d) > 1 else np.nan
        t = d.mean() / (sd / np.sqrt(len(d))) if len(d) > 1 and sd > 0 else np.nan
        crit = stats.t.ppf(0.975, len(d) - 1) if len(d) > 1 else np.nan
        out.append(dict(metric=m, **{f"seed{s}": round(x, 3) for s, x in zip(seeds, d)}, mean=round(d.mean(), 3),
                        std=round(sd, 3), t=round(t, 2) if t == t else np.nan, t_crit=round(crit, 2),
                        beyond_noise=bool(t == t and abs(t) > crit)))
    return pd.DataFrame(out)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fmnist_lt"); ap.add_argument("--budget", default="cpu")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2]); ap.add_argument("--device", default="cpu")
    ap.add_argument("--k", type=int, default=10, help="entries a top-k row keeps (IKL's memory_k default: 10)")
    ap.add_argument("--dtype", default="float32", help="the top-k memory's value dtype (dense stays float32)")
    a = ap.parse_args(argv)
    df = collect(a.dataset, a.budget, a.seeds, a.k, a.dtype, a.device)
    print(f"## ce+ikl, {a.dataset}, {a.budget}, last epoch top-1 (%): dense float32 vs top-{a.k} {a.dtype}")
    print(df.drop(columns=["run"]).to_string(index=False))
    p = paired(df)
    print("\n## top-k − dense, paired by seed (percentage points)")
    print(p.to_string(index=False))
    out = figures_dir() / f"ikl_memory_topk_{a.dataset}_{a.budget}_seeds{'-'.join(map(str, a.seeds))}.csv"
    df.drop(columns=["cached"]).assign(k=np.where(df.layout == "topk", a.k, 0),
                                       dtype=np.where(df.layout == "topk", a.dtype, "float32")).to_csv(out, index=False)
    p.to_csv(out.with_name(out.stem + "_paired.csv"), index=False)
    print("wrote", out, "and", out.with_name(out.stem + "_paired.csv"))

if __name__ == "__main__": main()
