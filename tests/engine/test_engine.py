import math
from dataclasses import replace

import pytest
import torch

from nas.engine.data import load_dataset
from nas.engine.splits import make_splits
from nas.engine.augment import random_affine
from nas.engine.device import resolve_device
from nas.engine.optim import init_weights, make_scheduler
from nas.engine.trainer import train
from nas.arch.spec import ArchSpec, bn, conv, gap, linear, maxpool, relu
from nas.arch.recipe import Recipe

SMALL = ArchSpec((conv(8), relu(), bn(), maxpool(), conv(16), relu(), bn(), maxpool(), conv(10, k=1), gap()))
FAST = Recipe(lr=0.05, batch_size=64, epochs=2)


@pytest.fixture
def splits(tiny_mnist_dir):
    return make_splits(load_dataset(tiny_mnist_dir, verify=False), holdout=200, seed=0)


def test_a_real_tiny_training_run_learns(splits):
    seen = []
    result = train(SMALL, FAST, splits, "cpu", seed=0, on_epoch=seen.append)
    assert [m.epoch for m in seen] == [1, 2]
    assert seen[1].train_loss < seen[0].train_loss
    assert result.val_acc > 0.9 and result.test_acc > 0.9
    assert result.stopped is None and len(result.epoch_seconds) == 2 and all(s > 0 for s in result.epoch_seconds)
    assert seen[0].test_acc is None  # the test set is only evaluated at the end unless asked


def test_same_seed_same_result_other_seed_differs(splits):
    recipe = replace(FAST, epochs=1, rotation=10.0, translate=0.1)
    a = train(SMALL, recipe, splits, "cpu", seed=5)
    b = train(SMALL, recipe, splits, "cpu", seed=5)
    c = train(SMALL, recipe, splits, "cpu", seed=6)
    assert a.epochs[0].train_loss == b.epochs[0].train_loss and a.test_acc == b.test_acc
    assert c.epochs[0].train_loss != a.epochs[0].train_loss


def test_the_callback_can_stop_training(splits):
    result = train(SMALL, replace(FAST, epochs=5), splits, "cpu", on_epoch=lambda m: m.epoch == 2)
    assert len(result.epochs) == 2 and "stopped by the caller after epoch 2" in result.stopped
    assert result.test_acc is not None  # still reported, for the last epoch run


def test_non_finite_loss_stops_with_a_reason(splits):
    linear_stack = ArchSpec((conv(16), conv(16), conv(16), conv(16), gap(), linear(10)))  # nothing bounds it
    result = train(linear_stack, Recipe(lr=100, momentum=0.0, epochs=4, batch_size=32), splits, "cpu")
    assert not math.isfinite(result.epochs[-1].train_loss)
    assert result.stopped and "training loss became" in result.stopped and "try a lower learning rate" in result.stopped
    assert len(result.epochs) == 1


def test_augmentation_draws_per_image_parameters():
    image = torch.zeros(1, 1, 28, 28)
    image[..., 4:24, 12:16] = 1.0
    batch = image.repeat(8, 1, 1, 1)
    out = random_affine(batch, 15.0, 0.1, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape
    distinct = {tuple(o.flatten().round(decimals=4).tolist()) for o in out}
    assert len(distinct) == 8  # every image moved its own way
    assert out.min() >= 0 and out.max() <= 1 and out[:, :, 0, 0].abs().max() < 1e-6  # background stays black
    same = random_affine(batch, 0.0, 0.0, torch.Generator().manual_seed(0))
    assert torch.allclose(same, batch, atol=1e-5)


@pytest.mark.parametrize("schedule, extra, per_batch", [
    ("none", {}, False), ("step", {"step_size": 2}, True), ("multistep", {"milestones": (1, 2)}, True),
    ("onecycle", {}, True), ("cosine", {}, True), ("piecewise", {}, False),
])
def test_every_schedule_trains(splits, schedule, extra, per_batch):
    recipe = replace(FAST, schedule=schedule, **extra)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr)
    sched, stepped_per_batch = make_scheduler(opt, recipe, steps_per_epoch=10)
    assert (sched is None) == (schedule == "none") and stepped_per_batch == per_batch
    result = train(SMALL, replace(recipe, epochs=2), splits, "cpu")
    assert result.stopped is None and math.isfinite(result.epochs[-1].train_loss)


def lr_trajectory(recipe, steps_per_epoch):
    """The rate of every batch, the scheduler stepped as the trainer steps it."""
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=recipe.lr)
    sched, per_batch = make_scheduler(opt, recipe, steps_per_epoch)
    lrs = []
    for step in range(1, recipe.epochs * steps_per_epoch + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if per_batch or step % steps_per_epoch == 0:
            sched.step()
    return lrs


def test_a_compressed_multistep_recipe_decays_at_the_same_share_of_training():
    recipe = Recipe(lr=0.1, schedule="multistep", milestones=(10, 15), gamma=0.1, epochs=20)
    full = lr_trajectory(recipe, 10)
    # whole epochs: the rate drops after epoch 10 and after epoch 15, as per-epoch MultiStepLR does
    assert full[99] == pytest.approx(0.1) and full[100] == pytest.approx(0.01) and full[150] == pytest.approx(0.001)
    short = recipe.compressed(4)
    assert short.epochs == 4 and short.milestones == (2.0, 3.0)
    squeezed = lr_trajectory(short, 10)
    assert squeezed[19] == pytest.approx(0.1) and squeezed[20] == pytest.approx(0.01) and squeezed[30] == pytest.approx(0.001)
    odd = Recipe(lr=0.1, schedule="step", step_size=10, gamma=0.5, epochs=19).compressed(3)
    assert odd.step_size == pytest.approx(1.5789) and lr_trajectory(odd, 19)[30] == pytest.approx(0.05)


def test_the_piecewise_schedule_is_the_public_4838_nets_per_epoch_table():
    # docs/reference/public-nets.md: np.interp(epoch, [0, 2, 5, 12], [lr, max_lr, lr/5, 0]), lr 0.001, max_lr 0.01
    published = [0.001, 0.0055, 0.01, 0.006733, 0.003467, 0.0002, 0.000171, 0.000143, 0.000114, 0.000086,
                 0.000057, 0.000029]
    recipe = Recipe(optimizer="adam", lr=0.01, schedule="piecewise", epochs=12)
    per_batch = lr_trajectory(recipe, 5)
    assert [per_batch[5 * e] for e in range(12)] == pytest.approx(published, abs=1e-6)
    assert per_batch[5 * 2 + 4] == per_batch[5 * 2]  # constant within an epoch, as published
    short = lr_trajectory(recipe.compressed(6), 5)  # the same shape over half the epochs
    assert short[5] == pytest.approx(0.01) and short[0] == pytest.approx(0.001)


def test_xavier_init_draws_within_its_bound_and_zeroes_the_biases():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Linear(8, 10))
    before = model[0].weight.detach().clone()
    init_weights(model, Recipe())  # the default leaves PyTorch's own init alone
    assert torch.equal(model[0].weight, before) and model[0].bias.abs().sum() > 0
    init_weights(model, Recipe(init="xavier"))
    conv_bound = math.sqrt(6 / (4 * 9 + 8 * 9))  # fan_in + fan_out of a 3x3 conv 4 -> 8
    assert model[0].weight.abs().max() <= conv_bound and model[0].weight.abs().max() > 0.9 * conv_bound
    assert model[2].weight.abs().max() <= math.sqrt(6 / 18)
    assert model[0].bias.abs().sum() == 0 and model[2].bias.abs().sum() == 0
    assert torch.equal(model[1].weight, torch.ones(8))  # BatchNorm keeps 1 and 0


def test_random_resized_crop_zooms_in_and_leaves_other_recipes_streams_alone():
    image = torch.zeros(1, 1, 28, 28)
    image[..., 8:20, 8:20] = 1.0
    batch = image.repeat(64, 1, 1, 1)
    plain = random_affine(batch, 5.0, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(plain, random_affine(batch, 5.0, 0.0, torch.Generator().manual_seed(0), crop=0.0))
    cropped = random_affine(batch, 0.0, 0.0, torch.Generator().manual_seed(0), crop=0.5)
    area = cropped.sum(dim=(1, 2, 3)) / batch[0].sum()  # the square's share grows as 1 / the crop's area
    assert (area > 1.0).all() and area.max() < 1 / 0.5 * 1.05 and cropped.min() >= 0 and cropped.max() <= 1
    shifted = cropped.flatten(1).argmax(1)
    assert len(set(shifted.tolist())) > 8  # each image has its own crop


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adaptive_optimizers_and_label_smoothing(splits, optimizer):
    recipe = Recipe(optimizer=optimizer, lr=1e-2, batch_size=32, epochs=2, label_smoothing=0.1, weight_decay=1e-4)
    assert train(SMALL, recipe, splits, "cpu").test_acc > 0.5


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            resolve_device("cuda")
