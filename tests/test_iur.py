"ltnb.iur outside the notebook: the memmap store is a real file on disk that outlives its object and resumes exactly."
import math
import subprocess
import sys

import numpy as np
import pytest
from pathlib import Path
import torch

from ltnb.iur import PredictionMemory, iur_loss, cks_fraction


def test_memmap_dense_is_a_file(tmp_path):
    path = tmp_path / "sub" / "memory.bin"
    m = PredictionMemory(5, 3, store="memmap", path=path)
    m.update(torch.tensor([1, 4]), torch.tensor([[1., 2., 3.], [-1., 0.5, 0.25]]))
    sd = m.state_dict()                               # flushes
    assert sd["path"] == str(path) and "values" not in sd
    # layout by hand: 5x3 float32 = 60 bytes, padded to 64; then 5 seen flags, padded to 8
    assert path.stat().st_size == 64 + 8
    raw = np.fromfile(path, dtype=np.uint8)
    vals = raw[:60].view(np.float32).reshape(5, 3)
    np.testing.assert_array_equal(vals[1], [1., 2., 3.])
    np.testing.assert_array_equal(vals[4], [-1., .5, .25])
    np.testing.assert_array_equal(vals[0], [0., 0., 0.])
    np.testing.assert_array_equal(raw[64:69], [0, 1, 0, 0, 1])


def test_memmap_survives_the_process(tmp_path):
    "Another Python process writes the memory and exits; this one resumes it from the checkpoint."
    path, ck = tmp_path / "m.bin", tmp_path / "ck.pt"
    code = (f"import torch; from ltnb.iur import PredictionMemory\n"
            f"m = PredictionMemory(4, 2, store='memmap', path={str(path)!r})\n"
            f"m.update(torch.tensor([2]), torch.tensor([[0., 3.]]))\n"
            f"torch.save(m.state_dict(), {str(ck)!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    m = PredictionMemory(4, 2, store="memmap", path=path)     # same path: construction must not wipe it
    m.load_state_dict(torch.load(ck, weights_only=False))
    assert m.seen(torch.arange(4)).tolist() == [False, False, True, False]
    assert m.logits(torch.tensor([2])).tolist() == [[0., 3.]]
    assert m.predicted(torch.arange(4)).tolist() == [0, 0, 1, 0]
    # it keeps writing into the same file
    m.update(torch.tensor([0]), torch.tensor([[5., 1.]]))
    m.state_dict()
    assert np.fromfile(path, dtype=np.float32, count=2).tolist() == [5., 1.]


@pytest.mark.parametrize("kw", [dict(), dict(dtype=torch.bfloat16), dict(layout="topk", k=2, dtype=torch.float16)])
def test_memmap_resume_equals(tmp_path, kw):
    torch.manual_seed(0)
    v, ix = torch.randn(6, 5) * 4, torch.arange(8)
    a = PredictionMemory(8, 5, store="memmap", path=tmp_path / "a.bin", **kw)
    a.update(torch.tensor([0, 1, 3, 4, 6, 7]), v)
    sd = a.state_dict()
    del a
    b = PredictionMemory(8, 5, store="memmap", path=tmp_path / "other.bin", **kw)
    b.load_state_dict(sd)
    c = PredictionMemory(8, 5, **kw)                              # the same checkpoint read into host memory
    c.load_state_dict(sd)
    for m in (b, c):
        assert m.seen(ix).tolist() == [True, True, False, True, True, False, True, True]
        assert m.predicted(ix).tolist() == [int(r.argmax()) for r in v[[0, 1]]] + [0] + [int(r.argmax()) for r in v[[2, 3]]] + [0] + [int(r.argmax()) for r in v[[4, 5]]]
    torch.testing.assert_close(b.probs(ix, 2.), c.probs(ix, 2.), rtol=0, atol=0)
    assert not (tmp_path / "other.bin").exists()                # b reopened a.bin in place


def test_load_rejects_other_layout(tmp_path):
    sd = PredictionMemory(4, 3, store="memmap", path=tmp_path / "m.bin").state_dict()
    with pytest.raises(ValueError, match="layout"):
        PredictionMemory(4, 3, layout="topk", k=2).load_state_dict(sd)
    PredictionMemory(4, 3).load_state_dict(sd)                  # reads the checkpoint's snapshot, not the live file
    Path(sd["snapshot"]).write_bytes(b"\0" * 3)                 # a truncated snapshot
    with pytest.raises(ValueError, match="bytes expected"):
        PredictionMemory(4, 3).load_state_dict(sd)
    Path(sd["snapshot"]).unlink()
    with pytest.raises(ValueError, match="snapshot .* is missing"):
        PredictionMemory(4, 3).load_state_dict(sd)


def test_iur_from_memory_hand_case():
    "Teacher (3/4, 1/4) at tau 2 from the memory, student uniform: 4 * (3/4 ln 3/2 + 1/4 ln 1/2) = 0.523248."
    m = PredictionMemory(3, 2)
    m.update(torch.tensor([1]), torch.tensor([[2 * math.log(3), 0.]]))
    ix, y = torch.tensor([1, 2]), torch.tensor([0, 0])
    z = torch.zeros(2, 2, requires_grad=True)
    loss = iur_loss(z, m.logits(ix), y, valid=m.seen(ix))
    assert loss.item() == pytest.approx(0.523248, abs=1e-5)
    assert cks_fraction(m, [0, 0, 0]) == pytest.approx(1 / 3)


@pytest.mark.parametrize("kw", [dict(), dict(layout="topk", k=2, dtype=torch.float16)])
def test_double_buffer_memmap_resume(tmp_path, kw):
    """buffers=2 through a memmap checkpoint: the file holds both slots and the epoch stamps; after a kill mid-epoch
    (writes after the checkpoint) the restored memory answers as at the checkpoint, in the checkpoint's epoch, and
    the next epoch reads exactly what the checkpoint's epoch wrote."""
    torch.manual_seed(0)
    ix = torch.arange(6)
    a = PredictionMemory(6, 5, store="memmap", path=tmp_path / "m.bin", buffers=2, **kw)
    a.begin_epoch(0); a.update(ix, torch.randn(6, 5))
    a.begin_epoch(1); e1 = torch.randn(3, 5) * 3; a.update(torch.tensor([0, 2, 4]), e1)   # epoch 1 draws 3 samples
    probs1, seen1 = a.probs(ix, 2.), a.seen(ix)
    assert seen1.all()
    sd = a.state_dict()                                           # checkpoint at the end of epoch 1
    a.begin_epoch(2); a.update(ix, torch.randn(6, 5))             # epoch 2 runs on, then the process dies
    assert a.path.stat().st_size == PredictionMemory.bytes_for(6, 5, buffers=2, **kw)   # every block a multiple of 8 here
    b = PredictionMemory(6, 5, store="memmap", path=tmp_path / "m.bin", buffers=2, **kw)
    b.load_state_dict(sd)
    assert b.epoch == 1
    torch.testing.assert_close(b.probs(ix, 2.), probs1, rtol=0, atol=0)
    b.begin_epoch(2)                                              # the resumed epoch 2 reads epoch 1's three rows only
    assert b.seen(ix).tolist() == [True, False, True, False, True, False]
    h = PredictionMemory(6, 5, buffers=2, **kw); h.load_state_dict(sd); h.begin_epoch(2)   # read into host memory
    torch.testing.assert_close(h.probs(ix, 2.), b.probs(ix, 2.), rtol=0, atol=0)
    if not kw: torch.testing.assert_close(b.logits(torch.tensor([0, 2, 4])), e1, rtol=0, atol=0)
