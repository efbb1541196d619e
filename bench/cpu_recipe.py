"""Choose the `cpu` recipe of the small datasets: train CE and BSCE with and without augmentation (and any other
variant given) at several seeds, and print many/medium/few/all (last epoch) mean ± std per variant and the paired
per-seed gain of each variant over the first one.

    python bench/cpu_recipe.py --dataset fmnist_lt --seeds 0 1 2 \
        --variant base data.augment=false --variant aug data.augment=true

Runs go through the run cache (`LTNB_RUNS`), so re-running the script only prints.
"""
import argparse, json, time
import numpy as np, pandas as pd
from ltnb.experiments import run_config, run
from ltnb.experiments import _parse_value
parse_overrides = lambda kv: {k: _parse_value(v) for k, v in (x.split("=", 1) for x in kv)}

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fmnist_lt"); p.add_argument("--budget", default="cpu")
    p.add_argument("--methods", nargs="+", default=["ce", "bsce"]); p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variant", nargs="+", action="append", metavar="NAME KEY=VALUE",
                   help="a variant's name then its recipe overrides")
    p.add_argument("--out", default=None, help="write the per-run table as CSV here")
    p.add_argument("--collect", action="store_true",
                   help="train nothing: gather every finished run of --methods on --dataset at --budget in the cache, "
                        "labelled by augmentation, epochs and schedule")
    a = p.parse_args(argv)
    if a.collect: return collect(a)
    if not a.variant: p.error("give at least one --variant (or --collect)")
    rows = []
    for name, *kv in a.variant:
        ov = parse_overrides(kv)
        for m in a.methods:
            for s in a.seeds:
                t0 = time.time(); r = run(run_config(a.dataset, m, a.budget, s, **ov), device="cpu")
                last = r.last
                rows.append(dict(variant=name, method=m, seed=s, **{k: last[k] for k in ("many", "medium", "few", "top1")},
                                 seconds=round(time.time() - t0, 1)))
                print(json.dumps(rows[-1]), flush=True)
    df = pd.DataFrame(rows)
    if a.out: df.to_csv(a.out, index=False)
    cols = ["many", "medium", "few", "top1"]
    summ = df.groupby(["method", "variant"], sort=False)[cols].agg(lambda x: f"{np.mean(x):.1f} ± {np.std(x, ddof=1) if len(x) > 1 else 0:.1f}")
    print(summ.to_string())
    base = a.variant[0][0]
    for m in a.methods:
        b = df[(df.method == m) & (df.variant == base)].set_index("seed")
        for name, *_ in a.variant[1:]:
            v = df[(df.method == m) & (df.variant == name)].set_index("seed")
            g = (v[cols] - b[cols]).dropna()
            print(f"{m}: {name} - {base} per seed (top1): {g['top1'].round(2).tolist()}  mean {g['top1'].mean():+.2f}  "
                  f"many {g['many'].mean():+.1f} medium {g['medium'].mean():+.1f} few {g['few'].mean():+.1f}")

def collect(a):
    "Every finished run of the methods in the cache, one line each, labelled by its recipe's augmentation and schedule."
    from ltnb.experiments import list_runs, Run
    df = list_runs(dataset=a.dataset, budget=a.budget)
    rows = []
    for _, x in df[(df.status == "finished") & df.method.isin(a.methods)].iterrows():
        r = Run.load(x.path); d, t = r.config["data"], r.config["train"]
        if set(d) - {"augment"} or r.config["model"] != {"name": "cnn28"}: continue   # recipe variants only
        rows.append(dict(augment=str(d.get("augment", False)), epochs=t["epochs"], schedule=t["schedule"], method=x.method,
                         seed=x.seed, **{k: round(r.last[k], 2) for k in ("many", "medium", "few", "top1")}))
    df = pd.DataFrame(rows).sort_values(["method", "augment", "epochs", "seed"])
    print(df.to_string(index=False))
    print(df.groupby(["method", "augment", "epochs", "schedule"])["top1"].agg(["mean", "std", "count"]).round(2).to_string())
    if a.out: df.to_csv(a.out, index=False); print("wrote", a.out)

if __name__ == "__main__": main()
