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
    p.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME KEY=VALUE",
                   help="a variant's name then its recipe overrides")
    p.add_argument("--out", default=None, help="write the per-run table as CSV here")
    a = p.parse_args(argv)
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

if __name__ == "__main__": main()
