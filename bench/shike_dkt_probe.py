"""Why does L_nt collapse the medium classes of fmnist_lt at the cpu budget? One seed, the MoE+DKF+L_nt row (beta = 0)
with one DKT switch changed at a time; the shared lock is taken per run.

    LTNB_RUNS=/tmp/shike-runs OMP_NUM_THREADS=1 python bench/shike_dkt_probe.py [seed]

Prints, per variant: many / medium / few / all and per-class test accuracy (last epoch), and the stage-1 end losses.
Diagnosis only (one seed, test numbers): nothing here picks a default. The numbers in nbs/20_shike.ipynb ("Why L_nt
collapsed classes") came from this script before `weight_classes` existed, when alpha=None meant 10/C (runs keyed
{"beta": 0.0} etc.); the variants are now spelled out, so rerunning it retrains them (~4 min a run).
Run as: LTNB_RUNS=/tmp/shike-runs OMP_NUM_THREADS=1 python bench/shike_dkt_probe.py 0 [substrings of variant labels]"""
import fcntl, sys
import numpy as np
import ltnb  # noqa: F401  registers SHIKE and its tables
from ltnb.experiments import run_rows
from ltnb.metrics import classification_report

SEED = int(sys.argv[1]) if len(sys.argv) > 1 else 0
OV = {"model.widths": [8, 16, 32], "train.eval_every": 35}   # the previous ladder's narrow shike_cnn28 (its runs are cached)
VARIANTS = {
    "L_nt, alpha=10/C=1 (the old default)": ("shike", {"beta": 0.0, "options": {"weight_classes": None}}),
    "L_nt, alpha=0.1 (=10/100, the default)": ("shike", {"beta": 0.0, "alpha": 0.1}),
    "L_nt, alpha=1, detach_teacher": ("shike", {"beta": 0.0, "options": {"detach_teacher": True, "weight_classes": None}}),
    "L_nt, alpha=1, dkt_form=code": ("shike", {"beta": 0.0, "options": {"dkt_form": "code", "weight_classes": None}}),
    "no L_nt (MoE+DKF)": ("shike", {"alpha": 0.0, "beta": 0.0}),
}
pick = sys.argv[2:] or list(VARIANTS)
for label in [k for k in VARIANTS if any(p in k for p in pick)]:
    with open("/tmp/ltnb-train.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        (r,), _ = run_rows({label: VARIANTS[label]}, "fmnist_lt", "cpu", [SEED], device="cpu", **OV)
    o = r.outputs("test"); rep = classification_report(o["logits"], o["targets"], r.class_counts)
    s1 = [h for h in r.history if h["stage"] == "train"][-1]
    print(f"{label:38s} many {rep['many']:5.1f} medium {rep['medium']:5.1f} few {rep['few']:5.1f} all {rep['top1']:5.1f} | "
          f"per class {np.round(np.asarray(rep['per_class'])).astype(int).tolist()} | stage-1 end "
          f"{ {k[5:]: round(v, 3) for k, v in s1.items() if k.startswith('loss_')} }", flush=True)
