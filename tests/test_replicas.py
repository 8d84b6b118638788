import pytest
import torch
import torch.nn.functional as F

from mnist_ops.errors import UserError
from mnist_ops.models import create_model
from mnist_ops.presets import build_config
from mnist_ops.replicas import ThreadReplicas
from mnist_ops.train import fit
from run_records import learned


def plain_loss(model, x, y):
    logits = model(x)
    return logits, F.cross_entropy(logits, y)


def quiet(message):
    pass


def test_replicas_give_the_full_batch_gradient_for_a_net_without_batchnorm():
    torch.manual_seed(0)
    model = create_model("seed-lean-plain", dropout=0.0)
    reference = create_model("seed-lean-plain", dropout=0.0)
    reference.load_state_dict(model.state_dict())
    x, y = torch.randn(37, 1, 28, 28), torch.randint(0, 10, (37,))  # uneven shares: 13, 12, 12
    F.cross_entropy(reference(x), y).backward()
    replicas = ThreadReplicas(model, 3, plain_loss)
    logits, loss = replicas.forward_backward(x, y)
    replicas.close()
    assert logits.shape == (37, 10)
    assert loss.item() == pytest.approx(F.cross_entropy(reference(x), y).item(), rel=1e-5)
    for got, expected in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(got.grad, expected.grad, atol=1e-6, rtol=1e-4)


def test_with_batchnorm_each_share_is_normalized_alone_and_statistics_are_averaged():
    torch.manual_seed(0)
    model = create_model("lean-8k", dropout=0.0)
    copies = [create_model("lean-8k", dropout=0.0) for _ in range(2)]
    for other in copies:
        other.load_state_dict(model.state_dict())
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    for other, (xs, ys) in zip(copies, zip(x.tensor_split(2), y.tensor_split(2))):
        (F.cross_entropy(other(xs), ys) / 2).backward()  # "ghost" BatchNorm over each half
    replicas = ThreadReplicas(model, 2, plain_loss)
    replicas.forward_backward(x, y)
    summed = [a.grad + b.grad for a, b in zip(*(other.parameters() for other in copies))]
    for got, expected in zip(model.parameters(), summed):
        assert torch.allclose(got.grad, expected, atol=1e-6, rtol=1e-4)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.sub_(0.1 * parameter.grad)
    replicas.synchronize()
    replicas.close()
    second = replicas.models[1]
    for (name, got), expected in zip(second.state_dict().items(), model.state_dict().values()):
        assert torch.equal(got, expected), name
    mean_a, mean_b = copies[0].state_dict()["conv1.bn.running_mean"], copies[1].state_dict()["conv1.bn.running_mean"]
    assert torch.allclose(model.state_dict()["conv1.bn.running_mean"], (mean_a + mean_b) / 2)


@pytest.mark.integration
def test_training_with_replicas_repeats_and_learns(mnist_root, tmp_path, two_threads):
    config = build_config("lean-8k-fast", None, {"epochs": 2, "limit_train": 3_000, "batch_size": 64,
                                                 "lr": 0.1, "seed": 3})
    assert config.replicas == 2
    threads = torch.get_num_threads()
    assert threads == two_threads
    for name in ("a", "b"):
        fit(config, tmp_path / name, data_root=mnist_root, log=quiet, progress=False)

    assert learned(tmp_path / "a") == learned(tmp_path / "b")
    assert learned(tmp_path / "a")[-1]["test_accuracy"] >= 90.0
    assert torch.get_num_threads() == threads  # one thread per copy while training, then restored


@pytest.mark.parametrize("overrides, message", [
    ({"replicas": 2, "dropout": 0.05}, "replicas = 2 needs dropout = 0"),
    ({"replicas": 4, "batch_size": 2}, "more than batch_size = 2"),
    ({"replicas": 2, "device": "cuda"}, "splits batches over CPU cores"),
])
def test_replica_combinations_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(UserError, match=message):
        build_config("lean-8k", None, overrides)


def test_replicas_refuse_a_net_with_dropout_layers_of_its_own(tmp_path):
    """The dropout key guarded replicas, but a net of the user's own with nn.Dropout inside trained with them, and
    its runs no longer repeated (an audit); the same net without replicas, or with Dropout(p=0), is fine."""
    from mnist_ops.train import check_runnable

    (tmp_path / "nets.py").write_text(
        "from torch import nn\n\n\ndef build(p=0.3):\n    return nn.Sequential(nn.Flatten(), nn.Dropout(p), "
        "nn.Linear(784, 10))\n\n\ndef build_p0():\n    return build(0.0)\n")
    config = build_config("lean-8k", None, {"model": f"{tmp_path / 'nets.py'}:build", "replicas": 2})
    with pytest.raises(UserError, match="has Dropout layers of its own"):
        check_runnable(config, 10, (28, 28))
    with pytest.raises(UserError, match="has Dropout layers of its own"):  # swapped for FastDropout, it got by
        check_runnable(config.replace(fast_dropout=True), 10, (28, 28))
    check_runnable(config.replace(replicas=1), 10, (28, 28))
    check_runnable(config.replace(model=f"{tmp_path / 'nets.py'}:build_p0"), 10, (28, 28))


def test_a_batch_smaller_than_the_replica_count_uses_only_the_copies_with_a_share():
    torch.manual_seed(0)
    model = create_model("lean-8k", dropout=0.0)
    replicas = ThreadReplicas(model, 3, plain_loss)
    assert replicas.pool.submit(torch.get_num_threads).result() == 1  # one intra-op thread per copy
    idle_mean = replicas.models[2].state_dict()["conv1.bn.running_mean"].clone()
    logits, loss = replicas.forward_backward(torch.randn(2, 1, 28, 28), torch.tensor([3, 7]))
    assert replicas.active == 2 and logits.shape == (2, 10) and torch.isfinite(loss)
    used = [copy.state_dict()["conv1.bn.running_mean"].clone() for copy in replicas.models[:2]]
    replicas.synchronize()
    replicas.close()
    assert torch.allclose(model.state_dict()["conv1.bn.running_mean"], (used[0] + used[1]) / 2)
    assert not torch.allclose(idle_mean, (used[0] + used[1]) / 2)  # the idle copy's stale value was left out
    assert torch.equal(replicas.models[2].state_dict()["conv1.bn.running_mean"], model.state_dict()["conv1.bn.running_mean"])


@pytest.mark.integration
def test_runs_with_replicas_repeat_across_thread_counts(mnist_root, tmp_path):
    import os
    import subprocess
    import sys

    def metrics(threads: str) -> list[dict]:
        out = tmp_path / f"threads{threads}"
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MNIST_OPS_DATA": str(mnist_root)}
        subprocess.run([sys.executable, "-m", "mnist_ops", "train", "--preset", "lean-8k-fast", "--epochs", "1",
                        "--limit-train", "3000", "--no-progress", "--out", str(out)],
                       check=True, env=env, capture_output=True, timeout=600)
        return learned(out)

    assert metrics("1") == metrics("2")
