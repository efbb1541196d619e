"Per-model checks over the whole `ltnb.models.MODELS` registry (as timm does), and hand-derived parameter counts."
import functools

import pytest
import torch
from torch import nn

from ltnb.models import (MODELS, NormedLinear, classifier_weight, count_parameters, create_model)

NUM_CLASSES = 5


def _size(name):
    meta = MODELS[name]._ltnb_meta
    return meta.get("test_size", meta["input_size"])


@functools.lru_cache(maxsize=None)
def _model(name, classifier="linear"):
    torch.manual_seed(0)
    return create_model(name, NUM_CLASSES, in_chans=_size(name)[0], classifier=classifier)


def _first_conv(model):
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def _is_multi(model):
    return isinstance(model.classifier, nn.ModuleList)


@pytest.mark.parametrize("name", MODELS.names())
def test_forward_backward(name):
    model = _model(name).train()
    model.zero_grad(set_to_none=True)
    x = torch.randn(2, *_size(name))
    out = model(x)
    assert out["logits"].shape == (2, NUM_CLASSES)
    assert out["features"].shape == (2, model.feature_dim)
    assert model.num_classes == NUM_CLASSES
    if _is_multi(model):
        e = len(model.classifier)
        assert out["expert_logits"].shape == (e, 2, NUM_CLASSES)
        assert out["expert_features"].shape == (e, 2, model.feature_dim)
        combine = getattr(model, "combine", "mean")   # NCL's networks sum their logits (its code's inference); the rest average
        assert combine in ("mean", "sum")
        torch.testing.assert_close(out["logits"], getattr(out["expert_logits"], combine)(0))
        torch.testing.assert_close(out["features"], out["expert_features"].mean(0))
        torch.testing.assert_close(model.head(out["expert_features"]), out["logits"])
        from ltnb.ncl import NCLNet
        if not isinstance(model, NCLNet):   # NCL's experts are whole separate networks: no shared stem's stage features
            assert all(f.shape[0] == 2 and f.dim() == 4 for f in out["stage_features"])
    else:
        torch.testing.assert_close(model.head(out["features"]), out["logits"])
    nn.functional.cross_entropy(out["logits"], torch.tensor([0, 1])).backward()
    grad = _first_conv(model).weight.grad
    assert grad is not None and grad.abs().sum() > 0, "no gradient reaches the first convolution"
    assert all(p.grad is not None for p in model.classifier.parameters())
    model.zero_grad(set_to_none=True)  # the model stays cached for the other tests: free its gradients


@pytest.mark.parametrize("name", MODELS.names())
def test_reset_classifier(name):
    model = _model(name)
    before = [p.detach().clone() for p in model.classifier.parameters()]
    ids = [id(p) for p in model.classifier.parameters()]
    model.reset_classifier()
    after = list(model.classifier.parameters())
    assert [id(p) for p in after] == ids, "reset_classifier must re-initialise in place (optimisers keep their params)"
    assert all(not torch.equal(b, a) for b, a in zip(before, after))


@pytest.mark.parametrize("name", MODELS.names())
def test_cosine_logits_bounded_by_scale(name):
    torch.manual_seed(0)
    model = create_model(name, NUM_CLASSES, in_chans=_size(name)[0], classifier="cosine", scale=7.0).eval()
    heads = model.classifier if _is_multi(model) else [model.classifier]
    assert all(isinstance(h, NormedLinear) and h.scale == 7.0 for h in heads)
    with torch.no_grad():
        out = model(torch.randn(2, *_size(name)))
    z = out.get("expert_logits", out["logits"])
    assert z.abs().max() <= 7.0 + 1e-4


def test_unknown_model_lists_valid_names():
    with pytest.raises(KeyError, match="resnet32"):
        create_model("resnet33", 10)


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="linear, cosine"):
        create_model("resnet32", 10, classifier="cos")
    with pytest.raises(ValueError, match="A, B"):
        create_model("resnet32", 10, shortcut="C")
    with pytest.raises(ValueError, match="shared_stages"):
        create_model("multi_expert_resnet32", 10, shared_stages=3)


# --- parameter counts (hand-derived; conventions.md §5 for ResNet-32) -----------------------------------------
# ResNet-32 trunk: stem 3*16*9 + 2*16 = 464; layer1 5*(2*16^2*9 + 4*16) = 23,360;
# layer2 (16*32*9 + 32^2*9 + 4*32) + 4*(2*32^2*9 + 4*32) = 88,192; layer3 (32*64*9 + 64^2*9 + 4*64) + 4*(2*64^2*9 + 4*64)
# = 351,488; trunk 463,504.

@pytest.mark.parametrize("num_classes, expected", [(10, 464_154), (100, 470_004)])
def test_resnet32_param_count(num_classes, expected):
    assert count_parameters(create_model("resnet32", num_classes)) == expected


def test_resnet32_variants_param_count():
    # option B: 1x1 convs 16->32 and 32->64 plus their BN (2*32 + 2*64)
    assert count_parameters(create_model("resnet32", 100, shortcut="B")) == 470_004 + 16 * 32 + 64 + 32 * 64 + 128
    # NormedLinear(64, 10): no bias
    assert count_parameters(create_model("resnet32", 10, classifier="cosine", scale=1.0)) == 463_504 + 640
    # IWB width x8 (128/256/512): stem 3*128*9 + 256; layer1 5*(2*128^2*9 + 512);
    # layer2 (128*256*9 + 256^2*9 + 1024) + 4*(2*256^2*9 + 1024); layer3 (256*512*9 + 512^2*9 + 2048) + 4*(2*512^2*9 + 2048);
    # Linear(512, 100) 51,300  -> 29,564,132 (conventions.md: "about 29.6 M")
    with torch.device("meta"):
        assert count_parameters(create_model("resnet32", 100, width=8)) == 29_564_132


def test_multi_expert_resnet32_param_counts():
    # RIDE/SADE reduce_dimension, 100 classes: shared 464 + 23,360; per expert layer2 16->24 50,592, layer3 24->48 197,952,
    # NormedLinear 48*100 -> 23,824 + 3 * 253,344
    assert count_parameters(create_model("multi_expert_resnet32", 100, reduce_dimension=True)) == 783_856
    # SHIKE (option B, shared conv+layer1+layer2, no DKF layers): 112,592 + 3 * (353,664 + 6,400)
    assert count_parameters(create_model("multi_expert_resnet32", 100, shared_stages=2, shortcut="B")) == 1_192_784


def test_small_cnn_param_counts():
    # convs 1*32*9 + 32*64*9 + 64*128*9 = 92,448; BN 2*(32+64+128) = 448; Linear(128, 10) 1,290
    for name in ("cnn8", "cnn28"):
        assert count_parameters(create_model(name, 10, in_chans=1)) == 94_186


def test_torchvision_param_counts_match_torchvision():
    # our trunk = torchvision's minus its fc (2048*1000 + 1000), plus Linear(2048, 10)
    import torchvision
    with torch.device("meta"):
        for arch in ("resnet50", "resnext50_32x4d", "resnet152"):
            tv = count_parameters(getattr(torchvision.models, arch)())
            assert count_parameters(create_model(arch, 10)) == tv - 2_049_000 + 20_490


# --- misc behaviour --------------------------------------------------------------------------------------------

def test_normed_linear_init_and_weight_layout():
    nl = NormedLinear(8, 3)
    torch.testing.assert_close(nl.weight.norm(dim=0), torch.ones(3), atol=1e-4, rtol=0)
    assert classifier_weight(nl).shape == (3, 8)
    assert classifier_weight(nn.Linear(8, 3)).shape == (3, 8)


def test_channels_last_input():
    for name in ("resnet32", "multi_expert_resnet32", "cnn28"):
        model = _model(name).eval()
        x = torch.randn(2, *_size(name))
        with torch.no_grad():
            a = model(x)["logits"]
            b = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))["logits"]
        model.to(memory_format=torch.contiguous_format)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_own_state_dict_loads_as_backbone_weights(tmp_path):
    # an ltnb model's own state dict (backbone.* + classifier.*) is accepted as `weights=`; the classifier is not taken
    src = create_model("resnet50", 3)
    path = tmp_path / "own.pth"
    torch.save(src.state_dict(), path)
    dst = create_model("resnet50", 7, weights=str(path))
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(v, dst.backbone.state_dict()[k]), k
    assert dst.classifier.weight.shape == (7, 2048)


def test_torchvision_name_needs_allow_download():
    with pytest.raises(ValueError, match="allow_download=True"):
        create_model("resnet152", 10, weights="IMAGENET1K_V1")


def test_state_dict_roundtrip_weights_only(tmp_path):
    m = create_model("multi_expert_resnet32", 10, shared_stages=2, shortcut="B")
    torch.save(m.state_dict(), tmp_path / "m.pth")
    m2 = create_model("multi_expert_resnet32", 10, shared_stages=2, shortcut="B")
    m2.load_state_dict(torch.load(tmp_path / "m.pth", weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(x)["logits"], m2.eval()(x)["logits"])
