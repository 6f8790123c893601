import torch

from nas.engine.bench import BenchResult, run_bench, torchvision_root
from nas.engine.data import load_dataset
from nas.engine.splits import make_splits
from nas.arch.spec import ArchSpec, bn, conv, gap, maxpool, relu
from nas.arch.recipe import Recipe

ARCH = ArchSpec((conv(8), relu(), bn(), maxpool(), conv(10, k=1), gap()))


def test_torchvision_reads_the_folder_it_is_given(tiny_mnist_dir, tmp_path):
    from torchvision.datasets import MNIST

    root = torchvision_root(tiny_mnist_dir, tmp_path / "tv")
    dataset = MNIST(str(root), train=True)
    ours = load_dataset(tiny_mnist_dir, verify=False)
    assert len(dataset) == 1000
    assert torch.equal(dataset.data, ours.train_images) and torch.equal(dataset.targets, ours.train_labels)


def test_both_paths_train_one_epoch_and_are_timed(tiny_mnist_dir):
    data = make_splits(load_dataset(tiny_mnist_dir, verify=False))
    result = run_bench(ARCH, Recipe(batch_size=128, rotation=10.0), data, tiny_mnist_dir, torch.device("cpu"))
    assert result.engine_seconds > 0 and result.dataloader_seconds > 0
    assert result.summary().startswith(f"speedup {result.speedup:.2f}x (engine ")


def test_summary_format():
    assert BenchResult(23.3, 36.3, "cpu", "bf16").summary() == \
        "speedup 1.56x (engine 23.3 s, dataloader 36.3 s, cpu, engine bf16)"


def test_a_subset_times_both_paths_on_the_same_images_with_progress(tiny_mnist_dir):
    data = make_splits(load_dataset(tiny_mnist_dir, verify=False), subset=300)
    seen = {}
    result = run_bench(ARCH, Recipe(batch_size=64), data, tiny_mnist_dir, torch.device("cpu"), "fp32",
                       on_batch=lambda path, n: seen.__setitem__(path, seen.get(path, 0) + n))
    assert seen == {"engine": 300, "dataloader": 300} and result.precision == "fp32"
