"""MDCS and MDCS+RL (LTRL Tables 1-2 rows "MDCS", "MDCS+RL") on fmnist_lt (IF 100, `cpu` budget), seeds 0 1 2.

    LTNB_RUNS=/work/runs LTNB_TRAIN_LOCK=/tmp/ltnb-train.lock OMP_NUM_THREADS=1 python bench/mdcs_evidence.py [--seeds 0 1 2]
    flock /tmp/ltnb-bench.lock env OMP_NUM_THREADS=1 python bench/mdcs_evidence.py --cost-only

Rows: `mdcs` (multi-expert cnn28 chosen by `MDCS.run_overrides`, joint forward of the weak and strong views) and
`mdcs+ltrl` (the generic LTRL wrapper on the ensemble logits: the released LTRL code has no MDCS+RL, see
`ltnb.mdcs`). Every run goes through `run_rows`, so the run cache trains or loads it and `run()` takes
$LTNB_TRAIN_LOCK per run. Prints (and writes under figures/, names carry the seeds):
* mdcs_fmnist_lt_cpu_seedsS.csv: many / medium / few / all, mean and std over seeds, beside the LTRL slides'
  CIFAR-100-LT IF 100 `all` (MDCS† 56.1, MDCS+RL† 57.3; a different dataset and schedule: the comparison is the gain);
* the paired per-seed gain MDCS -> MDCS+RL;
* mdcs_fmnist_lt_cpu_seed0_experts.csv / .png: each expert's accuracy per shot group for the first seed's MDCS run;
* mdcs_fmnist_lt_cpu_cost.csv (with --cost / --cost-only): parameters and seconds per epoch against a single model
  (`ltnb.mdcs.mdcs_cost`; hold /tmp/ltnb-bench.lock around it, as in the second command above).
Everything is last-epoch test accuracy.
"""
import argparse, json
import numpy as np
import pandas as pd
import ltnb  # noqa: F401  registers mdcs and the +ltrl wrapper
from ltnb.experiments import run_rows, figures_dir, row_frame, METRICS
from ltnb.mdcs import mdcs_cost, expert_shot_accuracy_of_run, plot_expert_shot_accuracy

ROWS = {"MDCS": "mdcs", "MDCS+RL": "mdcs+ltrl"}
PAPER_ALL = {"MDCS": 56.1, "MDCS+RL": 57.3}   # LTRL slides Table 1, CIFAR-100-LT IF 100 (†: 400 epochs); ikl_ltrl.md §2


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fmnist_lt"); p.add_argument("--budget", default="cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--device", default="cpu")
    p.add_argument("--overrides", type=json.loads, default={}, help='JSON dotted overrides for every run')
    p.add_argument("--cost", action="store_true", help="also measure the cost against a single model (hold the bench lock)")
    p.add_argument("--cost-only", action="store_true", help="only the cost measurement")
    p.add_argument("--cost-epochs", type=int, default=1)
    a = p.parse_args()
    out, tag = figures_dir(), f"{a.dataset}_{a.budget}"
    if not a.cost_only:
        runs, missing = run_rows(ROWS, a.dataset, a.budget, a.seeds, device=a.device, **a.overrides)
        if missing: print("missing rows:", missing)
        frame = row_frame(runs)
        g = frame.groupby("method")[list(METRICS)]
        table = g.mean().round(2).astype(str) + " ± " + g.std(ddof=1).round(2).astype(str)
        table["paper all (CIFAR-100-LT IF100)"] = [PAPER_ALL.get(m) for m in table.index]
        table = table.loc[[r for r in ROWS if r in table.index]]
        seeds = "".join(map(str, a.seeds))
        print(f"\n{a.dataset} / {a.budget}, seeds {a.seeds}, last epoch (mean ± std):\n{table.to_string()}")
        table.to_csv(out / f"mdcs_{tag}_seeds{seeds}.csv")
        A, B = frame[frame.method == "MDCS"].set_index("seed"), frame[frame.method == "MDCS+RL"].set_index("seed")
        common = sorted(set(A.index) & set(B.index))
        if common:
            d = (B.loc[common, list(METRICS)] - A.loc[common, list(METRICS)]).astype(float)
            print(f"\npaired gain MDCS -> MDCS+RL per seed:\n{d.round(2).to_string()}\nmean {d.mean().round(2).to_dict()}  "
                  f"std {d.std(ddof=1).round(2).to_dict() if len(d) > 1 else 'n/a'}  (slides: +1.2 on CIFAR-100-LT)")
        first = next(r for r in runs if r.label == "MDCS")
        ex = expert_shot_accuracy_of_run(first)
        print(f"\nexperts of MDCS (seed {first.config['seed']}):\n{ex.round(2).to_string(index=False)}")
        ex.to_csv(out / f"mdcs_{tag}_seed{first.config['seed']}_experts.csv", index=False)
        ax = plot_expert_shot_accuracy(ex, title=f"MDCS experts, {a.dataset} {a.budget} seed {first.config['seed']}")
        ax.figure.tight_layout(); ax.figure.savefig(out / f"mdcs_{tag}_seed{first.config['seed']}_experts.png", dpi=120)
    if a.cost or a.cost_only:
        c = mdcs_cost(a.dataset, a.budget, epochs=a.cost_epochs, device=a.device)
        print(f"\ncost against a single model ({a.cost_epochs} epoch(s) each):\n{c.to_string(index=False)}")
        c.to_csv(out / f"mdcs_{tag}_cost.csv", index=False)


if __name__ == "__main__":
    main()
