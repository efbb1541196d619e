"""Regenerate README.md's generated tables, so that no number or status in the README is typed by hand.

    python bench/readme_tables.py           # print them
    python bench/readme_tables.py --write   # replace the blocks between <!-- name --> and <!-- /name --> in README.md

Blocks: `status` (the rows each reproduction notebook runs, from the table declarations), `gains:<csv stem>` (paired
per-seed gains written by bench/ikl_evidence.py), `csv:<stem>[|col,col]` (a CSV as it is) and one `results:<csv stem>` block per committed evidence CSV in figures/ (the reproduced many / medium / few / all, mean ± std over seeds, and,
where figures/noaug/ holds the same table from the recipe without augmentation, its `all` beside).
"""
import argparse, re
from pathlib import Path
import pandas as pd
import ltnb
from ltnb.reproduce import TABLES
from ltnb.experiments import row_spec, method_available

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"ikl": "IKL", "ltrl": "LTRL", "shike": "SHIKE", "iwb": "IWB", "calib": "Calibration"}

def _num(t: str) -> int: return int(re.sub(r"\D", "", t.split("table")[1]) or 0)

def status() -> str:
    "The 'What runs today' table: per declared paper table, its notebook, the rows ltnb runs and those still missing."
    names = sorted((t for t in TABLES.names() if t.split("_")[0] in PAPER),
                   key=lambda t: (list(PAPER).index(t.split("_")[0]), _num(t)))
    lines = ["| paper | table | notebook | rows ltnb runs | rows still missing (method not in ltnb yet) |", "|---|---|---|---|---|"]
    for t in names:
        nb = f"repro_table{t.split('table')[1]}" if t.startswith("ikl_") else f"repro_{t}"
        if not (ROOT / "nbs" / f"{nb}.ipynb").exists(): nb = "—"
        rows = TABLES[t].rows
        ok = [k for k, v in rows.items() if row_spec(v)[0] and method_available(row_spec(v)[0])]
        miss = [k for k in rows if k not in ok]
        lines.append(f"| {PAPER[t.split('_')[0]]} | {_num(t)} | `{nb}` | {len(ok)} of {len(rows)} | {', '.join(miss) or '—'} |")
    return "\n".join(lines)

def results(stem: str) -> str:
    "The reproduced rows of figures/<stem>.csv (and the no-augmentation `all` from figures/noaug/<stem>.csv)."
    t = pd.read_csv(ROOT / "figures" / f"{stem}.csv")
    t = t[t.n_seeds.fillna(0) > 0]
    old = ROOT / "figures" / "noaug" / f"{stem}.csv"
    o = pd.read_csv(old) if old.exists() else None
    out = []
    for _, r in t.iterrows():
        d = {"row": r.method, **{m: r.get(f"{m}_reproduced") for m in ("many", "medium", "few", "all")}}
        if o is not None:
            m = o[(o.method == r.method) & (o.n_seeds.fillna(0) > 0)]
            d["all, no augmentation"] = m.all_reproduced.iloc[0] if len(m) else "—"
        out.append(d)
    return pd.DataFrame(out).drop_duplicates().to_markdown(index=False)

def gains(stem: str) -> str:
    "The paired per-seed gains of figures/<stem>.csv (written by bench/ikl_evidence.py) in `all` and `few`."
    g = pd.read_csv(ROOT / "figures" / f"{stem}.csv")
    g = g[g.metric.isin(["all", "few"])].drop_duplicates(subset=["row", "base", "metric"])
    g = g.assign(table=g.table.str.replace("_", " "), verdict=g.beyond_noise.map({True: "beyond noise", False: "within noise"}))
    return g[["table", "row", "base", "metric", "per_seed", "mean", "p", "verdict"]].to_markdown(index=False)

def csv(spec: str) -> str:
    "figures/<stem>.csv as a markdown table; `<stem>|col,col,...` keeps those columns."
    stem, _, cols = spec.partition("|")
    t = pd.read_csv(ROOT / "figures" / f"{stem}.csv")
    return (t[cols.split(",")] if cols else t).round(2).to_markdown(index=False)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0]); ap.add_argument("--write", action="store_true")
    a = ap.parse_args(argv)
    readme = ROOT / "README.md"; s = readme.read_text()
    for name in re.findall(r"<!-- ((?:status|results|gains|csv)[^>]*?) -->", s):
        kind, _, arg = name.partition(":")
        body = dict(status=lambda a: status(), results=results, gains=gains, csv=csv).get(kind, lambda a: None)(arg)
        if body is None: continue
        print(f"<!-- {name} -->\n{body}\n")
        s = re.sub(rf"(<!-- {re.escape(name)} -->\n)(?:.*?\n)?(<!-- /{re.escape(name)} -->)", lambda m: m.group(1) + body + "\n" + m.group(2),
                   s, flags=re.S)
    if a.write: readme.write_text(s); print("wrote", readme)

if __name__ == "__main__": main()
