"""IKL's prediction memory at iNaturalist 2018 scale (issue 13 §6): bytes and time per epoch of every layout × dtype ×
store × buffers combination `PredictionMemory` supports, on synthetic logits (437,513 training samples × 8,142 classes,
batches of 512). Prints a table and writes figures/ikl_memory_inat18.csv.

    flock /tmp/ltnb-bench.lock python bench/ikl_memory.py

What one epoch of the memory's own work is here: the training set in shuffled batches of 512; for each batch the reads
IKL's IUR makes (`seen(index)` and the teacher `probs(index, tau)`) and then `update(index, logits)`. The logits are
drawn before the clock starts (a small pool of random batches reused, never an N × C array), so only the memory is
timed. Three epochs run over the same rows (epoch 0 has no teacher yet; with buffers=2, epoch 1 writes the second slot
for the first time, so epoch 2 is the steady state that is reported as `epoch_s`).

Scaled down, and said so in the table: a memory whose `bytes_for` at full size exceeds --cap-gb is allocated with
fewer rows (`n_alloc`; the classes stay 8,142), and every epoch times --batches batches over a random subset of rows and
is extrapolated to ceil(437,513 / 512) = 855 batches (`batches_timed`). Per-batch cost does not depend on how many rows
the array has (a row is one contiguous block), so the extrapolation is linear. The memory-mapped file's writes are
flushed at the end of each epoch (`flush_s`, extrapolated the same way; the page cache holds the timed rows, so reads are
warm). A checkpoint (the trainer saves one per epoch, memory included: the host tensors through torch.save, the
memmap file through a snapshot copy) is timed on a --ckpt-mb memory and scaled by bytes (`ckpt_s`).

Bytes: `bytes_full` is `PredictionMemory.bytes_for` at full size (nothing allocated); `measured` is what the allocated
memory of `n_alloc` rows really takes — the RSS growth while it is built (host), the file's size (memmap) or CUDA's
allocated bytes (device) — beside `bytes_for(n_alloc)` (`predicted`).
The store "device" is timed only where CUDA is available (on a CPU it is the host store's code path).
"""
import argparse, gc, math, os, sys, tempfile, time
from pathlib import Path
import numpy as np, pandas as pd, torch
from ltnb.iur import PredictionMemory
from ltnb.experiments import figures_dir

N_INAT18, C_INAT18 = 437_513, 8_142   # iNaturalist 2018 training images and classes

def rss() -> int:
    "Resident set size of this process, bytes."
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1]) * 1024
    return 0

def grid(layouts, dtypes, stores, buffers, k) -> list[dict]:
    "Every combination to measure."
    return [dict(layout=l, k=k if l == "topk" else 0, dtype=d, store=s, buffers=b)
            for l in layouts for d in dtypes for s in stores for b in buffers]

def make(c: dict, n: int, C: int, folder: Path, tau: float, name: str) -> PredictionMemory:
    "A memory of configuration `c` with `n` rows, its storage allocated (the memmap file created) now."
    m = PredictionMemory(n, C, layout=c["layout"], dtype=getattr(torch, c["dtype"]), k=max(c["k"], 1), tau=tau,
                         store=c["store"], device="cuda" if c["store"] == "device" else None,
                         path=folder / f"{name}.bin" if c["store"] == "memmap" else None, buffers=c["buffers"])
    m._b                                                        # allocates (host/device) or creates the file (memmap)
    return m

def sync(m):
    if m.device.type == "cuda": torch.cuda.synchronize()

def epoch(m: PredictionMemory, batches: list, pool: list, e: int, tau: float) -> dict:
    "One epoch's memory work over `batches`: IUR's reads, then the write; seconds of each, and of the memmap flush."
    m.begin_epoch(e)
    read = write = 0.0
    for j, ix in enumerate(batches):
        z = pool[j % len(pool)]
        sync(m); t0 = time.perf_counter()
        m.seen(ix); m.probs(ix, tau)
        sync(m); t1 = time.perf_counter()
        m.update(ix, z)
        sync(m); t2 = time.perf_counter()
        read += t1 - t0; write += t2 - t1
    t0 = time.perf_counter()
    if m._mm is not None: m._mm.flush()
    return dict(read=read, write=write, flush=time.perf_counter() - t0)

def checkpoint_seconds_per_byte(c: dict, C: int, folder: Path, pool: list, tau: float, target_bytes: float) -> float:
    "Seconds per memory byte of one checkpoint of the memory: torch.save of its state (fsync'd) or the memmap snapshot."
    row = PredictionMemory.bytes_for(1000, C, c["layout"], getattr(torch, c["dtype"]), max(c["k"], 1), c["buffers"]) / 1000
    n = max(len(pool[0]), int(target_bytes // row))
    m = make(c, n, C, folder, tau, "ckpt")
    for t in m._b.values(): t.fill_(1)                          # every byte written (no sparse holes in a memmap file)
    f = folder / "ckpt.pt"
    t0 = time.perf_counter()
    sd = m.state_dict()                                         # memmap: flush + snapshot copy (fsync'd)
    if c["store"] != "memmap":
        with open(f, "wb") as fh: torch.save(sd, fh); fh.flush(); os.fsync(fh.fileno())
    dt = time.perf_counter() - t0
    del sd, m; gc.collect()
    for p in folder.glob("ckpt*"): p.unlink()
    return dt / PredictionMemory.bytes_for(n, C, c["layout"], getattr(torch, c["dtype"]), max(c["k"], 1), c["buffers"])

def measure(c: dict, n: int, C: int, B: int, batches: int, cap: float, ckpt_bytes: float, tau: float,
            folder: Path, pool: list, seed: int = 0) -> dict:
    "Bytes and per-epoch seconds of one configuration (scaled down and extrapolated where it says so)."
    dt = getattr(torch, c["dtype"])
    full = PredictionMemory.bytes_for(n, C, c["layout"], dt, max(c["k"], 1), c["buffers"])
    n_alloc = n if full <= cap else max(B, int(cap / (full / n)))
    T = min(batches, n_alloc // B)
    if c["store"] == "device": torch.cuda.empty_cache(); cuda0 = torch.cuda.memory_allocated()
    gc.collect(); r0 = rss()
    m = make(c, n_alloc, C, folder, tau, "memory")
    predicted = m.nbytes
    if c["store"] == "memmap": measured, how = m.path.stat().st_size, "file size"
    elif c["store"] == "device": measured, how = torch.cuda.memory_allocated() - cuda0, "cuda allocated"
    else: measured, how = rss() - r0, "RSS growth"
    rng = np.random.default_rng(seed)
    rows = rng.permutation(n_alloc)[: T * B]
    dev = m.device
    res = []
    for e in range(3):
        order = torch.as_tensor(rng.permutation(rows)).to(dev)
        res.append(epoch(m, list(order.split(B)), pool, e, tau))
    del m; gc.collect()
    for p in folder.glob("memory*"): p.unlink()
    per_epoch = math.ceil(n / B) / T                            # timed batches -> one epoch of n rows
    steady = res[2]
    ck = checkpoint_seconds_per_byte(c, C, folder, pool, tau, min(ckpt_bytes, full)) * full
    return dict(**c, bytes_full=full, GB_full=round(full / 1e9, 3), bytes_per_row=round(full / n, 1), n_alloc=n_alloc,
                batches_timed=T, predicted=predicted, measured=measured, measured_as=how,
                first_epoch_s=round((res[0]["read"] + res[0]["write"] + res[0]["flush"]) * per_epoch, 2),
                epoch_s=round((steady["read"] + steady["write"] + steady["flush"]) * per_epoch, 2),
                read_s=round(steady["read"] * per_epoch, 2), write_s=round(steady["write"] * per_epoch, 2),
                flush_s=round(steady["flush"] * per_epoch, 2), ckpt_s=round(ck, 2),
                scaled=n_alloc < n or T < math.ceil(n / B))

def main(argv=None):
    if argv is None and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # glibc: every block of 128 KiB or more gets its own mapping, returned to the system when freed, so the RSS
        # growth while a memory is built is that memory (by default the threshold adapts and freed blocks are reused)
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=N_INAT18); ap.add_argument("--classes", type=int, default=C_INAT18)
    ap.add_argument("--batch", type=int, default=512); ap.add_argument("--batches", type=int, default=32,
                    help="batches timed per epoch, extrapolated to the whole epoch")
    ap.add_argument("--cap-gb", type=float, default=2.0, help="a memory larger than this is timed with fewer rows")
    ap.add_argument("--ckpt-mb", type=float, default=256.0, help="size of the memory the checkpoint is timed on")
    ap.add_argument("--layouts", nargs="+", default=["dense", "topk"]); ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16"])
    ap.add_argument("--stores", nargs="+", default=["host", "memmap", "device"])
    ap.add_argument("--buffers", nargs="+", type=int, default=[1, 2], help="1: latest write (code) | 2: epoch t-1 (IKL default)")
    ap.add_argument("--tau", type=float, default=2.0); ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dir", default=None, help="folder for the memmap files (default: a temporary folder)")
    ap.add_argument("--out", default=None, help="CSV path (default figures/ikl_memory_inat18.csv at iNat size, else none)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    stores = [s for s in a.stores if s != "device" or torch.cuda.is_available()]
    if len(stores) < len(a.stores): print("store 'device' skipped: no CUDA here (on a CPU it is the host store)")
    dev = "cuda" if "device" in stores else "cpu"
    g = torch.Generator().manual_seed(0)
    pool = [(torch.randn(a.batch, a.classes, generator=g) * 3).to(dev) for _ in range(4)]   # synthetic logits, reused
    rows = []
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        w = make(dict(layout="dense", k=0, dtype="float32", store="host", buffers=1), a.batch, a.classes, Path(d), a.tau, "warm")
        epoch(w, [torch.arange(a.batch)], [pool[0].cpu()], 0, a.tau); del w      # first-call costs, not measured
        for c in grid(a.layouts, a.dtypes, stores, a.buffers, a.k):
            p = [x.to("cuda" if c["store"] == "device" else "cpu") for x in pool]
            t0 = time.time()
            rows.append(measure(c, a.n, a.classes, a.batch, a.batches, a.cap_gb * 1e9, a.ckpt_mb * 1e6, a.tau, Path(d), p))
            r = rows[-1]
            print(f"{c['layout']:>5} k={c['k']:<3} {c['dtype']:>8} {c['store']:>6} buffers={c['buffers']}: "
                  f"{r['GB_full']:8.3f} GB, epoch {r['epoch_s']:7.2f} s (first {r['first_epoch_s']:.2f} s), "
                  f"checkpoint {r['ckpt_s']:7.2f} s  [n_alloc {r['n_alloc']}, {r['batches_timed']} batches; {time.time() - t0:.0f} s]",
                  flush=True)
    df = pd.DataFrame(rows)
    print(f"\n## PredictionMemory at n={a.n:,}, C={a.classes:,}, batches of {a.batch}, {a.threads} thread(s), "
          f"{'CUDA' if dev == 'cuda' else 'CPU'}; seconds per epoch extrapolated from {a.batches} batches")
    show = ["layout", "k", "dtype", "store", "buffers", "GB_full", "bytes_per_row", "n_alloc", "predicted", "measured",
            "measured_as", "epoch_s", "first_epoch_s", "read_s", "write_s", "flush_s", "ckpt_s"]
    print(df[show].to_string(index=False))
    out = Path(a.out) if a.out else (figures_dir() / "ikl_memory_inat18.csv" if (a.n, a.classes) == (N_INAT18, C_INAT18) else None)
    if out is not None:
        df.assign(threads=a.threads, batch=a.batch, device=dev, torch=torch.__version__).to_csv(out, index=False)
        print("wrote", out)

if __name__ == "__main__": main()
