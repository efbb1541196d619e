"""Every registered method trains one epoch through `ltnb.engine.Trainer` (as timm checks every registered model).

The cases are built from the registries when this file is collected, so a method or wrapper registered later is
tested without touching this file:

* every name in `ltnb.losses.METHODS`, on a small digits_lt (159 training, 100 test images) with a narrow `cnn8`
  (merged with the method's `model_kw`);
* every method wrapped by every wrapper in `ltnb.losses.WRAPPERS` (plus `+ikl+kc`);
* every method on `multi_expert_resnet32` over a tiny synthetic 3x32x32 long-tailed set.

Each case checks: every epoch's loss (and each loss term) is finite; every parameter of every trained stage got a
finite gradient at least once; the final evaluation gives finite logits of shape (N_test, C).
`python tests/test_registry.py` prints what is covered (`pytest --collect-only -q` counts the cases).
"""
import contextlib, math
from functools import lru_cache

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import ltnb.ikl  # noqa: F401  registers the "ikl" and "ltrl" wrappers; `import ltnb` will once the registry change lands
from ltnb.data import ArrayDataset, LTData, get_dataset
from ltnb.engine import Trainer, TrainConfig
from ltnb.losses import METHODS, WRAPPERS, create_method, method_arguments
from ltnb.models import create_model
from method_needs import OWN_MODEL, base_name

# --------------------------------------------------------------------------------------------- the cases

# extra variants per wrapper beyond the plain one ("+ikl+kc": IKL with LTRL's Knowledge Correction)
WRAPPER_OPTIONS = {"ikl": ["kc"]}
# methods that cannot apply to a multi-expert model (several heads), and the clear ValueError they must raise
MULTI_EXPERT_UNSUPPORTED = {
    "tau_norm": "single-head",   # τ-norm rescales the rows of one classifier weight; a multi-expert model has E heads
    "tau_norm_wd": "single-head",  # the same τ-norm, on IWB's weight-decayed stage 1
}
# methods that need experts to route between: on the single-head cnn8 they refuse with a clear ValueError (checked)
SINGLE_HEAD_UNSUPPORTED = {"ride_ea": "single head"}   # RIDE-EA's router sends samples to the next expert
# combinations that fail today, with the reason; strict xfail, so a fix shows up as XPASS -> failure: delete the entry
KNOWN_FAILURES: dict = {}   # name -> reason; strict xfail, so a fixed bug turns the case red until its entry is removed


# wrappers that train exactly as another wrapper does (checked bit for bit elsewhere): one method each, not every method
SAME_AS = {"iklgrad": "ikl"}   # IKL with a gradient log (tests/test_ikl_figures.py: bit-identical training)


def wrapped_names() -> list:
    "'method+wrapper[+option]' for every registered method and wrapper (a SAME_AS wrapper on `ce` and `bsce` only)."
    return [f"{m}+{w}{'+' + o if o else ''}" for w in WRAPPERS.names() for o in [None, *WRAPPER_OPTIONS.get(w, [])]
            for m in METHODS.names() if w not in SAME_AS or m in ("ce", "bsce")]


PLAIN, WRAPPED = METHODS.names(), wrapped_names()


def _param(name):
    if name not in KNOWN_FAILURES: return pytest.param(name, id=name)
    return pytest.param(name, id=name, marks=pytest.mark.xfail(raises=RuntimeError, strict=True, reason=KNOWN_FAILURES[name]))


# --------------------------------------------------------------------------------------------- data and training

CFG = dict(epochs=1, batch_size=64, lr=0.05, warmup_epochs=0, schedule="constant", device="cpu", amp=False,
           channels_last=False, progress=False, seed=0)


@lru_cache(maxsize=None)
def digits():
    "digits_lt with n_max=40 (40, 30, 23, 18, 14, 11, 8, 6, 5, 4: 159 images, 3 batches) and 10 test images per class."
    return get_dataset("digits_lt", n_max=40, test_per_class=10)


@lru_cache(maxsize=None)
def synthetic32(counts=(6, 3, 2, 1), n_test=2):
    "A tiny long-tailed 3x32x32 set (class c: noise around a per-class colour) for the multi-expert ResNet-32."
    g = torch.Generator().manual_seed(0)
    C = len(counts)
    colour = torch.randn(C, 3, 1, 1, generator=g)
    def make(per_class):
        y = np.repeat(np.arange(C), per_class)
        return ArrayDataset(colour[torch.as_tensor(y)] + 0.5 * torch.randn(len(y), 3, 32, 32, generator=g), y)
    train, test = make(list(counts)), make([n_test] * C)
    return LTData("synthetic32_lt", train, None, test, C, np.bincount(train.targets, minlength=C), list(range(C)),
                  (3, 32, 32), (0.,) * 3, (1.,) * 3, train_eval=train.subset(np.arange(len(train))))


def method_kw(name) -> dict:
    "One epoch per stage; DRW re-weights from the first epoch so its branch runs."
    args = method_arguments(name)
    return {k: v for k, v in dict(stage2_epochs=1, drw_epoch=0).items() if k in args}


@contextlib.contextmanager
def record_grads():
    "Record, per optimiser step, which parameters hold a finite / non-finite gradient."
    seen = {}   # id(optimiser) -> dict(opt=..., finite=set of param ids, bad=set of param ids)
    def hook(opt, args, kwargs):
        r = seen.setdefault(id(opt), dict(opt=opt, finite=set(), bad=set()))
        for g in opt.param_groups:
            for p in g["params"]:
                if p.grad is None: continue
                (r["finite"] if bool(torch.isfinite(p.grad).all()) else r["bad"]).add(id(p))
    h = register_optimizer_step_pre_hook(hook)
    try: yield seen
    finally: h.remove()


def own_model(name: str, data, model_name: str, in_chans: int, **model_kw) -> str | None:
    """A method with its own architecture (BBN): check it refuses `model_name` with a clear ValueError; return its own
    version of the backbone (None: it has none for this backbone, the case is skipped after the check)."""
    base = base_name(name)
    if base not in OWN_MODEL: return model_name
    msg, own = OWN_MODEL[base]
    with pytest.raises(ValueError, match=msg):
        _train(name, data, model_name, in_chans, **model_kw)
    return own[model_name]


def train_one(name: str, data, model_name: str, in_chans: int, **model_kw):
    "Build `name` and its model (the method's own version of it, if it has one), train one epoch per stage, check."
    model_name = own_model(name, data, model_name, in_chans, **model_kw)
    if model_name is None: pytest.skip(f"{name} has no version of this backbone: it refuses it with a clear ValueError (checked)")
    return _train(name, data, model_name, in_chans, **model_kw)


def _train(name: str, data, model_name: str, in_chans: int, **model_kw):
    method = create_method(name, data.class_counts, **method_kw(name))
    torch.manual_seed(0)
    model = create_model(model_name, data.num_classes, in_chans=in_chans, **{**model_kw, **method.model_kw})
    with record_grads() as seen:
        res = Trainer(model, method, data, TrainConfig(**CFG)).fit()
    # losses: every epoch, every term
    trained = [(s, e) for s, e in res.stages if e > 0]
    assert len(res.history) == sum(e for _, e in trained), (res.stages, len(res.history))
    for row in res.history:
        losses = {k: v for k, v in row.items() if k == "loss" or k.startswith("loss_")}
        assert all(math.isfinite(v) for v in losses.values()), f"{name}: non-finite loss in stage {row['stage']}: {losses}"
    # gradients: one optimiser per trained stage; each of its parameters got a finite gradient, none a non-finite one
    assert len(seen) == len(trained), f"{name}: {len(seen)} optimisers for trained stages {trained}"
    names = {id(p): n for n, p in model.named_parameters()} | {id(p): f"method.{n}" for n, p in method.named_parameters()}
    for (stage, _), r in zip(trained, seen.values()):
        params = [p for g in r["opt"].param_groups for p in g["params"]]
        assert params, f"{name}: stage {stage!r} trains no parameter"
        assert not r["bad"], f"{name}: stage {stage!r}: non-finite gradient in {sorted(names[i] for i in r['bad'])}"
        missing = [names.get(id(p), tuple(p.shape)) for p in params if id(p) not in r["finite"]]
        assert not missing, f"{name}: stage {stage!r}: no gradient ever reached {missing}"
    # the final evaluation
    logits = res.outputs["test"]["logits"]
    assert tuple(logits.shape) == (len(data.test), data.num_classes), (name, tuple(logits.shape))
    assert bool(torch.isfinite(logits).all()), f"{name}: non-finite test logits"
    return res


# --------------------------------------------------------------------------------------------- the tests

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    "Tiny models: one intra-op thread is as fast, and much faster when other processes hold the cores."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SMALL_CNN8 = dict(widths=(8, 16, 32))   # a narrow cnn8: the checks do not need capacity, and each case stays well under 1 s


@pytest.mark.parametrize("name", PLAIN)
def test_method_trains(name):
    single_head_check(name)
    train_one(name, digits(), "cnn8", 1, **SMALL_CNN8)


def single_head_check(name):
    "A method that needs several experts refuses a single-head model with a clear error (then the case is skipped)."
    base = name.split("+")[0]
    if base in SINGLE_HEAD_UNSUPPORTED:
        with pytest.raises(ValueError, match=SINGLE_HEAD_UNSUPPORTED[base]):
            train_one(name, digits(), "cnn8", 1, **SMALL_CNN8)
        pytest.skip(f"{name} needs a multi-expert model: it refuses a single head with a clear ValueError (checked)")


@pytest.mark.parametrize("name", [_param(n) for n in WRAPPED])
def test_wrapped_method_trains(name):
    single_head_check(name)
    train_one(name, digits(), "cnn8", 1, **SMALL_CNN8)


@pytest.mark.parametrize("name", PLAIN)
def test_method_trains_multi_expert(name):
    if name in MULTI_EXPERT_UNSUPPORTED:   # the limitation must stay a clear error, not silently wrong logits
        with pytest.raises(ValueError, match=MULTI_EXPERT_UNSUPPORTED[name]):
            train_one(name, synthetic32(), "multi_expert_resnet32", 3)
        pytest.skip(f"{name} does not apply to a multi-expert model: it refuses with a clear ValueError (checked)")
    train_one(name, synthetic32(), "multi_expert_resnet32", 3)


def test_registry_covered():
    "The cases above were built from the registries as they are now (nothing registered after collection is missed)."
    assert PLAIN == METHODS.names() and WRAPPED == wrapped_names()
    assert {"ce", "bsce", "ldam_drw", "crt", "lws", "tau_norm"} <= set(PLAIN) and {"ikl", "ltrl"} <= set(WRAPPERS.names())
    print(summary())


def summary() -> str:
    return (f"{len(PLAIN)} methods ({', '.join(PLAIN)}); wrappers {', '.join(WRAPPERS.names())}: {len(WRAPPED)} wrapped "
            f"combinations; {len(PLAIN)} on multi_expert_resnet32 ({len(MULTI_EXPERT_UNSUPPORTED)} expected to refuse: "
            f"{', '.join(MULTI_EXPERT_UNSUPPORTED)}); {len(PLAIN) * 2 + len(WRAPPED)} training cases in all, "
            f"{len(KNOWN_FAILURES)} known failures ({', '.join(KNOWN_FAILURES)})")


if __name__ == "__main__":
    print(summary())
