import optuna
import pytest
import torch

from nas.arch.builder import build_model, count_flops, count_params, fvcore_flops, plan
from nas.arch.ops import OPS
from nas.arch.presets import load_preset, preset_names
from nas.space.space import SearchSpace
from nas.arch.spec import ArchSpec, bn, conv, dropout, gap, linear, maxpool, relu

from conftest import REPO_SPACE


def test_every_spec_op_has_a_builder():
    assert all(OPS[name].name == name and OPS[name].fields is not None for name in OPS)


@pytest.mark.parametrize("name", preset_names())
def test_presets_build_with_their_exact_parameter_counts(name):
    arch = load_preset(name).arch
    model = build_model(arch)
    assert sum(p.numel() for p in model.parameters()) == count_params(arch)
    kind, number = name.split("-")
    if kind == "ref":  # the references are named by their parameter count
        assert count_params(arch) == int(number)
    else:  # found-20k, found-8k, found-4k: under the budget of the search that found them
        assert kind == "found" and count_params(arch) < int(number.removesuffix("k")) * 1000


@pytest.mark.parametrize("name", preset_names())
def test_presets_output_log_probabilities_for_ten_classes(name):
    model = build_model(load_preset(name).arch).eval()
    with torch.no_grad():
        out = model(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-5)


def test_plan_reports_shapes_layer_by_layer():
    infos = plan(load_preset("ref-19970").arch)
    shapes = [i.out_shape for i in infos if i.layer.op in ("conv", "maxpool", "gap", "linear")]
    assert shapes == [(8, 26, 26), (32, 24, 24), (8, 24, 24), (8, 12, 12), (32, 10, 10), (32, 8, 8),
                      (16, 8, 8), (16, 4, 4), (32, 2, 2), (32, 1, 1), (10,)]


@pytest.mark.parametrize("name", preset_names())
def test_analytic_flops_equal_fvcore_on_presets(name):
    arch = load_preset(name).arch
    assert count_flops(arch) == fvcore_flops(arch)


def test_analytic_flops_equal_fvcore_on_sampled_specs():
    space = SearchSpace.from_file(REPO_SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    checked = 0
    for _ in range(25):
        trial = study.ask()
        arch = space.sample(trial).arch
        assert count_flops(arch) == fvcore_flops(arch), arch.key
        study.tell(trial, 0.0)
        checked += 1
    assert checked == 25


def test_linear_head_and_leaky_and_bn_relu_orders_build():
    from nas.arch.spec import leaky_relu
    arch = ArchSpec((conv(8), bn(), leaky_relu(0.1), dropout(0.1, channels=True), maxpool(), conv(16),
                     relu(), gap(), linear(10, bias=False)))
    model = build_model(arch)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert count_params(arch) == 80 + 16 + 1168 + 160


@pytest.mark.parametrize("sep, affine, bias", [(True, False, True), (True, True, False), (False, True, True)])
def test_a_shared_conv_counts_its_weights_once_and_each_use_costs_flops(sep, affine, bias):
    from nas.arch.spec import Layer

    def net(times):
        return ArchSpec((conv(8), relu(), maxpool(), Layer("shared", times=times, sep=sep, affine=affine, bias=bias),
                         conv(10, k=1), gap()))
    once, thrice = net(1), net(3)
    weights = (8 * 9 + 8 * 8 if sep else 8 * 8 * 9) + (8 if bias else 0)
    norms = 16 if affine else 0
    assert count_params(thrice) - count_params(once) == 2 * norms  # a reuse costs only its own norm
    assert count_params(once) == 80 + weights + norms + 90
    model = build_model(thrice)
    assert sum(p.numel() for p in model.parameters()) == count_params(thrice)  # torch stores it once
    assert count_flops(thrice) == fvcore_flops(thrice) and count_flops(once) == fvcore_flops(once)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert ArchSpec.from_dict(thrice.to_dict()) == thrice and thrice.layers[3].token.startswith("sh3x3")


@pytest.mark.parametrize("layers, message", [
    # five unpadded 5x5 convs shrink 28 -> 8; the next 3 max-pools take it to 1, the fourth fails
    ((conv(8, k=5),) * 5 + (maxpool(),) * 4 + (conv(10, k=1), gap()), r"layer 8 \(mp\): cannot max-pool a 1x1 map"),
    ((conv(8),) * 13 + (conv(10), gap()), r"layer 13 \(c3x10\): a 2x2 map .* too small for a 3x3 conv"),
    ((conv(8), gap(), conv(16, k=1)), r"layer 2 \(c1x16\): the network must end in 10 class scores at 1x1 but ends in 16 channels"),
    ((conv(10),), r"layer 0 \(c3x10\): the network must end in 10 class scores .* at 26x26"),
    ((conv(8), linear(10)), r"layer 1 \(fc10\): a linear layer needs a 1x1 map"),
    ((conv(8), gap(), linear(16), bn(), linear(10)), r"layer 3 \(bn\): needs a feature map"),
])
def test_bad_shapes_are_refused_naming_the_layer(layers, message):
    arch = ArchSpec(layers)
    with pytest.raises(ValueError, match=message):
        plan(arch)
    with pytest.raises(ValueError, match=message):
        build_model(arch)
