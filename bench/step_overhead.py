"""How much of ltnb's training step is the model step itself: the real `Trainer._train_epoch` on the device path
(`ltnb.bench.LtnbLoop`) against a bare forward / backward / SGD step of the same ResNet-32 (channels_last) on a fixed
batch, alternated in one process. A ratio near 1 means the loop (sampler, augmentation, method hooks, bookkeeping) costs
nothing measurable, so a faster epoch on this CPU needs a faster model step, not a faster loop.

    flock /tmp/ltnb-bench.lock python bench/step_overhead.py --rounds 3 --batches 8
"""
import argparse, tempfile, time
import torch
from ltnb.bench import write_cifar100, LtnbLoop
from ltnb.data import get_dataset
from ltnb.models import create_model
from ltnb.losses import create_method
from ltnb.engine import TrainConfig

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3); ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2); ap.add_argument("--augment", default="true", choices=["true", "autoaugment"])
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    root = tempfile.mkdtemp(); write_cifar100(root, n_train_per_class=60)
    data = get_dataset("cifar100_lt", root=root, augment=True if a.augment == "true" else a.augment, imb_factor=0.1)
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=200, batch_size=128, device="cpu", progress=False, data_path="device")
    loop = LtnbLoop(create_model("resnet32", num_classes=100, in_chans=3), create_method("ce", data.class_counts), data, cfg)
    m = create_model("resnet32", num_classes=100).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    xb = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last); yb = torch.randint(0, 100, (128,))
    def bare(k):
        for _ in range(k):
            loss = torch.nn.functional.cross_entropy(m(xb)["logits"], yb)
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    loop.run(2); bare(2)
    for r in range(a.rounds):
        t = time.perf_counter(); loop.run(a.batches); l = (time.perf_counter() - t) / a.batches
        t = time.perf_counter(); bare(a.batches); b = (time.perf_counter() - t) / a.batches
        print(f"round {r}: ltnb device path {l * 1000:.0f} ms/batch, bare model step {b * 1000:.0f} ms/batch, bare / ltnb {b / l:.2f}")

if __name__ == "__main__": main()
