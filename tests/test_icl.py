"ltnb.icl outside the notebook: checkpoint files, the memmap file format, and the one-class-at-a-time promise of FeatureBank."
import numpy as np
import pytest
import torch

from ltnb.icl import FeatureBank, class_centres, similarity_matrix, icl_soft_labels, icl_loss, FORMS

# 3 classes of 2-D features, rows interleaved; medians by hand:
# class 0 rows (1,0) (3,2) (2,5): (2, 2) under both rules
# class 1 rows (0,1) (0,7) (0,3) (0,5): average (0, 4), lower (0, 3)
# class 2 rows (-1,-2) (-3,-6): average (-2, -4), lower (-3, -6)
FEAT = torch.tensor([[1., 0.], [0., 1.], [-1., -2.], [3., 2.], [0., 7.], [0., 3.], [-3., -6.], [2., 5.], [0., 5.]])
LAB = torch.tensor([0, 1, 2, 0, 1, 1, 2, 0, 1])
AVG = torch.tensor([[2., 2.], [0., 4.], [-2., -4.]])
LOW = torch.tensor([[2., 2.], [0., 3.], [-3., -6.]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_checkpoint_file_round_trip(tmp_path, dtype):
    bank = FeatureBank(9, 2, LAB, dtype=dtype)
    bank.update(torch.tensor([0, 1, 3, 4, 5, 7, 8]), FEAT[[0, 1, 3, 4, 5, 7, 8]])   # class 2 not seen yet
    torch.save({"bank": bank.state_dict()}, tmp_path / "ck.pt")
    fresh = FeatureBank(9, 2, LAB, dtype=dtype)
    fresh.load_state_dict(torch.load(tmp_path / "ck.pt")["bank"])
    assert torch.equal(fresh.written, bank.written)
    assert torch.equal(fresh.centres(), torch.tensor([[2., 2.], [0., 4.], [0., 0.]]))
    fresh.update(torch.tensor([2, 6]), FEAT[[2, 6]])                                # the epoch goes on
    assert torch.equal(fresh.centres(rule="lower"), LOW)


@pytest.mark.parametrize("dtype,np_dtype,size", [(torch.float32, np.float32, 4), (torch.float16, np.float16, 2)])
def test_memmap_file_format(tmp_path, dtype, np_dtype, size):
    path = tmp_path / "feats.bin"
    bank = FeatureBank(9, 2, LAB, store="memmap", path=path, dtype=dtype)
    assert path.stat().st_size == 9 * 2 * size == bank.nbytes                     # a raw n x D file, row-major
    bank.update(torch.arange(9), FEAT)
    sd = bank.state_dict()                                                         # flushes
    raw = np.fromfile(path, dtype=np_dtype).reshape(9, 2)
    assert np.array_equal(raw.astype(np.float32), FEAT.numpy())
    other = FeatureBank(9, 2, LAB, store="memmap", path=tmp_path / "new.bin", dtype=dtype)
    other.load_state_dict(sd)
    assert torch.equal(other.centres(), AVG)
    with pytest.raises(ValueError, match="memmap"):
        FeatureBank(9, 2, LAB, store="memmap", path=tmp_path / "b.bin", dtype=torch.bfloat16)


class _Spy:
    "Stands in for the bank's feature tensor and records the largest gather."
    def __init__(self, t): self.t, self.largest = t, 0
    def __getitem__(self, rows):
        self.largest = max(self.largest, len(rows))
        return self.t[rows]


def test_centres_gather_one_class_at_a_time():
    counts = [50, 20, 5, 1]
    y = torch.cat([torch.full((k,), c) for c, k in enumerate(counts)])[torch.randperm(76, generator=torch.Generator().manual_seed(0))]
    f = torch.randn(76, 8)
    bank = FeatureBank(76, 8, y)
    bank.update(torch.arange(76), f)
    spy = _Spy(bank.features); bank.features = spy
    for rule in ("average", "lower"):
        assert torch.equal(bank.centres(rule=rule), class_centres(f, y, 4, rule=rule))
    assert spy.largest == 50                                                       # never more than the largest class


def test_end_to_end_gradient_and_devices():
    c = class_centres(FEAT, LAB, 3)
    M = similarity_matrix(c)
    z = torch.zeros(9, 3, requires_grad=True)
    for form in FORMS:
        y = icl_soft_labels(LAB, M, form=form)
        loss = icl_loss(z, y)
        (g,) = torch.autograd.grad(loss, z)
        assert torch.allclose(g, (torch.full((9, 3), 1 / 3) - y) / 9, atol=1e-6)   # d/dz = (softmax(z) - y) / B
