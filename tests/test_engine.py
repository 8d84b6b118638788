import hashlib
import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import example, given, strategies as st

from fuzzing import FLOATS, INTEGERS, NAMES, TOML_VALUES, Payload, assert_one_line
from mnist_ops.engine import (ONECYCLE_WARMUP, NonFiniteLoss, TrainStep, build_model, checkpoint_decision, evaluate,
                              find_checkpoint,
                              fold_batchnorm, load_checkpoint, make_optimizer, make_scheduler, model_from_checkpoint,
                              random_states, recompute_batchnorm, restore_random_states, save_checkpoint)
from mnist_ops.errors import UserError
from mnist_ops.models import build_record, create_model, list_models
from mnist_ops.presets import build_config

SEED_LOG = [98.73, 99.34, 99.38, 99.53, 99.44, 99.42, 99.39, 99.48, 99.53, 99.47, 99.43, 99.41, 99.61, 99.64, 99.52]


def test_checkpoint_rule_reproduces_the_seed_log():
    saved, best = [], -1.0
    for epoch, accuracy in enumerate(SEED_LOG):
        save, reason = checkpoint_decision(epoch, accuracy, best, target=99.4)
        if save:
            saved.append(epoch)
            assert "Target achieved" in reason
        best = max(best, accuracy)
    assert saved == [3, 12, 13]  # the epochs where the seed printed "Target Achieved"


def test_checkpoint_rule_needs_the_target():
    assert checkpoint_decision(5, 99.0, 98.0, target=99.4)[0] is False
    assert checkpoint_decision(5, 99.5, 98.0, 99.4, "validation")[1].startswith("Target achieved: 99.50% validation accuracy")
    assert checkpoint_decision(2, 99.9, 98.0, target=99.4)[0] is False
    assert checkpoint_decision(3, 99.5, 99.5, target=99.4)[0] is False


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = create_model("seed-lean")
    checkpoint = {"model_name": "seed-lean", "model": model.state_dict(), "config": {"dropout": 0.05},
                  "epoch": 4, "metrics": {"test_accuracy": 99.1}, "mean": 0.1307, "std": 0.3081}
    save_checkpoint(tmp_path / "best.pt", checkpoint)
    loaded = load_checkpoint(tmp_path / "best.pt")
    assert loaded["epoch"] == 4 and loaded["metrics"] == {"test_accuracy": 99.1}
    restored = model_from_checkpoint(loaded).eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(restored(x), model.eval()(x))


def test_unreadable_or_foreign_checkpoints_are_user_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not an mnist-ops checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize("name", list_models())
def test_folded_batchnorm_computes_the_same_function(name):
    torch.manual_seed(0)
    model = create_model(name)
    for module in model.modules():  # non-trivial statistics and affine parameters, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    inputs = torch.randn(64, 1, 28, 28)
    with torch.no_grad():
        expected = model.eval()(inputs)
        folded = fold_batchnorm(model)
        assert torch.allclose(folded(inputs), expected, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in folded.modules())
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    labels = torch.randint(0, 10, (64,))
    result = evaluate(model, inputs, labels, torch.device("cpu"), batch_size=16)
    assert torch.equal(result.predictions, expected.argmax(dim=1))
    assert result.loss == pytest.approx(torch.nn.functional.cross_entropy(expected, labels).item(), abs=1e-4)


@pytest.mark.parametrize("fast_dropout", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_precise_bn_measures_the_plain_images_with_dropout_off(fast_dropout, training):
    """With dropout on in the pass, a BatchNorm after it averaged the dropout's extra variance, which evaluation never
    sees (a review): the statistics must be those of the same net without dropout. The mode is left as found."""
    from mnist_ops.models import use_fast_dropout

    torch.manual_seed(0)
    model = create_model("seed-regularized", dropout=0.5)
    if fast_dropout:
        use_fast_dropout(model)
    plain = create_model("seed-regularized", dropout=0.0)
    plain.load_state_dict(model.state_dict())
    inputs = torch.randn(100, 1, 28, 28)
    for net in (model, plain):
        recompute_batchnorm(net.train(training), inputs, torch.device("cpu"), batch_size=50)
    assert model.training == training and all(module.training == training for module in model.modules())
    for (key, value), expected in zip(model.state_dict().items(), plain.state_dict().values()):
        assert torch.allclose(value.float(), expected.float(), atol=1e-6), key


@pytest.mark.parametrize("name", [name for name in list_models() if name in ("seed-regularized", "fast-8k", "lean-2k")])
def test_precise_bn_sets_each_batchnorms_statistics_to_their_averages_over_the_inputs(name):
    torch.manual_seed(0)
    model = create_model(name)  # seed-regularized has dropout: the pass must leave torch's random stream alone
    weights = {key: value.clone() for key, value in model.named_parameters()}
    seen = {}  # each BatchNorm's input, per batch, as the pass feeds it
    hooks = [module.register_forward_pre_hook(lambda module, args: seen.setdefault(module, []).append(args[0]))
             for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    inputs = torch.randn(100, 1, 28, 28)
    state = torch.get_rng_state()
    recompute_batchnorm(model.eval(), inputs, torch.device("cpu"), batch_size=40)  # batches of 40, 40, 20
    assert torch.equal(torch.get_rng_state(), state) and not model.training
    for hook in hooks:
        hook.remove()
    assert {key: value for key, value in model.named_parameters()}.keys() == weights.keys()
    assert all(torch.equal(value, weights[key]) for key, value in model.named_parameters())
    for module, batches in seen.items():
        assert [len(batch) for batch in batches] == [40, 40, 20]
        means = torch.stack([batch.mean(dim=(0, 2, 3)) for batch in batches])
        variances = torch.stack([batch.var(dim=(0, 2, 3), unbiased=True) for batch in batches])
        # torch's update_bn: momentum None, so each statistic is the plain average of the batches' ones
        assert torch.allclose(module.running_mean, means.mean(dim=0), atol=1e-5)
        assert torch.allclose(module.running_var, variances.mean(dim=0), rtol=1e-4, atol=1e-6)
        assert module.num_batches_tracked.item() == 3 and module.momentum == 0.1  # its momentum is given back


def test_find_checkpoint_takes_a_run_directory_and_prefers_best(tmp_path):
    messages = []
    (tmp_path / "last.pt").write_bytes(b"x")
    assert find_checkpoint(tmp_path, log=messages.append) == tmp_path / "last.pt"
    assert "no best.pt" in messages[-1]
    (tmp_path / "best.pt").write_bytes(b"x")
    assert find_checkpoint(tmp_path, log=messages.append) == tmp_path / "best.pt"
    assert find_checkpoint(tmp_path / "last.pt") == tmp_path / "last.pt"


def test_a_missing_best_pt_suggests_last_pt_and_an_empty_directory_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(UserError, match="holds no best.pt or last.pt"):
        find_checkpoint(run)
    (run / "last.pt").write_bytes(b"x")
    with pytest.raises(UserError, match="use .*last.pt or the run directory"):
        find_checkpoint(run / "best.pt")


@pytest.mark.parametrize("preset", ["lean-8k", "lean-8k-fast"])  # one model, and two copies in threads
def test_the_train_step_moves_the_weights_against_the_gradient(preset):
    config = build_config(preset, None, {"optimizer": "sgd", "lr": 0.05, "momentum": 0.0, "nesterov": False})
    torch.manual_seed(0)
    model = create_model(config.model, dropout=config.dropout)
    reference = create_model(config.model, dropout=config.dropout)
    reference.load_state_dict(model.state_dict())
    step = TrainStep(model, make_optimizer(config, model), config)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    logits, loss = step(x, y)
    step.close()
    assert logits.shape == (16, 10) and loss.dim() == 0 and not loss.requires_grad
    for (name, after), before in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(after, before - 0.05 * after.grad, atol=1e-6), name


def _schedule(config, steps_per_epoch: int, steps: int, state: dict | None = None):
    """(lr, momentum) before each of `steps` optimizer steps, the scheduler stepped after each; the optimizer's
    and scheduler's state_dicts when it ends. `state` restores a stopped pair first, as --resume does."""
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=config.lr, momentum=0.9)
    scheduler = make_scheduler(config, optimizer, steps_per_epoch)
    if state is not None:
        optimizer.load_state_dict(state[0])
        scheduler.load_state_dict(state[1])
    seen = []
    for _ in range(steps):
        seen.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["momentum"]))
        optimizer.step()
        scheduler.step()
    return seen, (optimizer.state_dict(), scheduler.state_dict())


@pytest.mark.parametrize("optimizer", ["sgd", "muon", "adam"])
def test_onecycle_runs_the_momentum_key_against_the_lr(optimizer):
    """torch's OneCycleLR cycles momentum 0.95 -> 0.85 -> 0.95 whatever the optimizer was given: the key did nothing
    under onecycle. Now it is the cycle's middle; at 0.9 the cycle is torch's own, so earlier runs repeat exactly."""
    def momenta(momentum, steps=20):
        config = build_config("lean-8k", None, {"optimizer": optimizer, "momentum": momentum, "epochs": 2})
        model = create_model("lean-2k")
        torch_optimizer = make_optimizer(config, model)
        scheduler = make_scheduler(config, torch_optimizer, steps // 2)
        seen = []
        for _ in range(steps):
            group = torch_optimizer.param_groups[0]
            seen.append(group["betas"][0] if optimizer == "adam" else group["momentum"])
            torch_optimizer.step()
            scheduler.step()
        return seen

    half = momenta(0.5)
    assert half[0] == pytest.approx(0.55) and min(half) == pytest.approx(0.45) and half[-1] == pytest.approx(0.55, abs=1e-3)
    assert momenta(0.0) == [0.0] * 20  # no momentum means none, not 0.95
    model = create_model("lean-2k")
    default = build_config("lean-8k", None, {"optimizer": optimizer, "epochs": 2})
    reference = torch.optim.lr_scheduler.OneCycleLR(  # torch's defaults: base 0.85, max 0.95
        make_optimizer(default, model), max_lr=default.lr, epochs=2, steps_per_epoch=10, pct_start=ONECYCLE_WARMUP,
        anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0)
    expected = []
    for _ in range(20):
        group = reference.optimizer.param_groups[0]
        expected.append(group["betas"][0] if optimizer == "adam" else group["momentum"])
        reference.optimizer.step()
        reference.step()
    assert momenta(0.9) == expected  # bit for bit


@pytest.mark.parametrize("epochs, cycles, steps_per_epoch", [(1, 1, 5), (2, 2, 5), (5, 1, 1)])
def test_a_onecycle_schedule_whose_warm_up_would_end_at_step_0_is_one_clear_error(epochs, cycles, steps_per_epoch):
    # 5 steps made torch's OneCycleLR divide by zero in its first step: a traceback, not a message
    config = build_config("lean-8k-fast", None, {"epochs": epochs, "cycles": cycles, "plain_epochs": 0})
    with pytest.raises(UserError, match=f"^schedule onecycle over 5 steps{' per cycle' if cycles > 1 else ''} makes "
                                        "torch's OneCycleLR divide by zero .*or set schedule = \"constant\"$"):
        _schedule(config, steps_per_epoch, 1)
    one_epoch_a_cycle = config.replace(epochs=cycles)
    for steps in (4, 6):  # no warm-up at all, or one of more than a step: both run
        assert len(_schedule(one_epoch_a_cycle, steps, steps)[0]) == steps


def test_cycles_repeat_the_onecycle_schedule_step_for_step_and_resume_mid_cycle():
    one = build_config("lean-8k-fast", None, {"epochs": 3})
    two = one.replace(epochs=6, cycles=2)
    single, _ = _schedule(one, 5, 15)
    assert max(lr for lr, _ in single) == pytest.approx(one.lr) and single[-1][0] < one.lr / 100
    straight, _ = _schedule(two, 5, 30)
    assert straight == single + single  # the lr and the cycled momentum start over after 3 epochs
    first, state = _schedule(two, 5, 22)  # stopped in the second cycle, then resumed from its state
    rest, _ = _schedule(two, 5, 8, state)
    assert first + rest == straight


def test_a_non_finite_loss_stops_the_step_before_the_weights_change():
    config = build_config("lean-8k", None, {})
    model = create_model("lean-8k", dropout=0.0)
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    step = TrainStep(model, make_optimizer(config, model), config)
    x = torch.full((4, 1, 28, 28), float("nan"))
    with pytest.raises(NonFiniteLoss):
        step(x, torch.arange(4))
    for name, value in model.named_parameters():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("replicas", [1, 2])
def test_ema_follows_the_trained_weights_and_batchnorm_statistics_step_by_step(replicas):
    from mnist_ops.engine import make_ema

    torch.manual_seed(0)
    config = build_config("lean-8k", None, {"ema": 0.75, "replicas": replicas})
    model = create_model("lean-8k", dropout=0.0)
    assert make_ema(config.replace(ema=0.0), model) is None
    ema = make_ema(config, model)
    step = TrainStep(model, make_optimizer(config, model), config, ema=ema)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8)
    try:
        step(x, y)  # the first update copies
        first = {name: value.detach().clone() for name, value in model.state_dict().items()}
        assert all(torch.equal(ema.module.state_dict()[name], value) for name, value in first.items())
        step(x, y)
    finally:
        step.close()
    for name, value in model.state_dict().items():
        if value.is_floating_point():  # weights, biases, running mean and variance
            expected = 0.75 * first[name] + 0.25 * value
            assert torch.allclose(ema.module.state_dict()[name], expected, atol=1e-6), name
            assert not torch.equal(value, first[name]), name  # the step changed it: the average means something


def test_random_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    generator = torch.Generator().manual_seed(7)
    torch.manual_seed(3), np.random.seed(4), random.seed(5)
    torch.randn(3, generator=generator)
    save_checkpoint(tmp_path / "state.pt", {"random_states": random_states(generator)})
    expected = (torch.randn(5, generator=generator), torch.randn(5), np.random.rand(5), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    generator = torch.Generator().manual_seed(99)
    restore_random_states(torch.load(tmp_path / "state.pt", weights_only=True)["random_states"], generator)
    got = (torch.randn(5, generator=generator), torch.randn(5), np.random.rand(5), random.random())
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert np.array_equal(got[2], expected[2]) and got[3] == expected[3]


# ---------------------------------------------------------------------------- fuzzed (hypothesis)
# A checkpoint file is untrusted input: random bytes, a truncated or damaged real checkpoint, a
# well-formed one holding the wrong types, or a pickle that runs code when unpickled unsafely. Loading
# it gives a model or one UserError of one line, and the code in a malicious pickle never runs.


def _real_checkpoint() -> dict:
    """What fit writes for the smallest model (optimizer and random states left out: load ignores them)."""
    config = build_config("lean-8k", None, {"model": "lean-5k"})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(config)
    return {"model_name": "lean-5k", "model_source": build_record(model), "model": model.state_dict(),
            "config": config.to_dict(), "epoch": 3, "metrics": {"test_accuracy": 99.1}, "mean": 0.1307, "std": 0.3081}


REAL = io.BytesIO()
torch.save(_real_checkpoint(), REAL)
REAL = REAL.getvalue()


# torch.load warns about what it then refuses (an unknown pickle protocol, old storages)
QUIET_LOAD = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning",
                                        "ignore:TypedStorage is deprecated:UserWarning")


def _load_from_bytes(content: bytes):
    """load_checkpoint + model_from_checkpoint on a file holding `content`: the model or the UserError."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.pt"
        path.write_bytes(content)
        try:
            return model_from_checkpoint(load_checkpoint(path))
        except UserError as error:
            assert_one_line(error)
            return error


@QUIET_LOAD
@given(st.binary(max_size=2048) | st.binary(max_size=512).map(lambda tail: b"PK\x03\x04" + tail)
       | st.binary(max_size=512).map(lambda tail: b"\x80\x02" + tail))
def test_fuzz_load_checkpoint_random_bytes(content):
    assert isinstance(_load_from_bytes(content), UserError)


@QUIET_LOAD
@given(st.integers(0, len(REAL) - 1))
def test_fuzz_load_checkpoint_truncated(length):
    assert isinstance(_load_from_bytes(REAL[:length]), UserError)


@QUIET_LOAD
@given(st.lists(st.tuples(st.integers(0, len(REAL) - 1), st.integers(1, 255)), min_size=1, max_size=4))
def test_fuzz_load_checkpoint_damaged(flips):
    content = bytearray(REAL)
    for position, mask in flips:
        content[position] ^= mask
    result = _load_from_bytes(bytes(content))
    assert isinstance(result, (UserError, torch.nn.Module))  # a flip inside the weights goes unnoticed


TENSORS = st.builds(lambda shape, dtype: torch.zeros(shape, dtype=dtype),
                    st.lists(st.integers(0, 3), max_size=3), st.sampled_from([torch.float32, torch.int64, torch.bool,
                                                                                torch.complex64, torch.float16]))


def _containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3)


ANY_VALUE = st.recursive(st.none() | st.booleans() | INTEGERS | FLOATS | NAMES | TENSORS, _containers, max_leaves=6)


MARKER = Path(tempfile.gettempdir()) / f"mnist-ops-fuzz-payload-{os.getpid()}"  # what a payload would create
SOURCE_VALUES = st.sampled_from(["registered", "entry point", "file", "module", "subprocess:getoutput",
                                 "os:getcwd", "lean-5k", "lean-5k:x", {"cmd": f"touch {MARKER}"},
                                 {"dropout": 0.5}, {"num_classes": 3}, {}, None])


@st.composite
def checkpoint_dicts(draw) -> dict:
    """The real checkpoint with some fields replaced, its weights renamed or reshaped, its config changed."""
    checkpoint = _real_checkpoint()
    for key in draw(st.lists(st.sampled_from(sorted(checkpoint)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del checkpoint[key]
        else:
            checkpoint[key] = draw(ANY_VALUE)
    if isinstance(checkpoint.get("model"), dict) and checkpoint["model"] and draw(st.booleans()):
        name = draw(st.sampled_from(sorted(checkpoint["model"])))
        checkpoint["model"][draw(st.just(name) | NAMES)] = draw(TENSORS | ANY_VALUE)
    if isinstance(checkpoint.get("config"), dict) and draw(st.booleans()):
        checkpoint["config"][draw(st.sampled_from(sorted(checkpoint["config"]) or ["dropout"]) | NAMES)] = draw(
            TOML_VALUES)
    if isinstance(checkpoint.get("model_source"), dict) and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(checkpoint["model_source"]) or ["kind"]) | NAMES)
        checkpoint["model_source"][key] = draw(SOURCE_VALUES | ANY_VALUE)
    return checkpoint


@QUIET_LOAD
@given(checkpoint_dicts())
@example({**_real_checkpoint(), "model_source": None})  # found by the soak
def test_fuzz_load_checkpoint_holding_wrong_types(checkpoint):
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    result = _load_from_bytes(buffer.getvalue())
    assert not MARKER.exists()
    if isinstance(result, torch.nn.Module):  # then everything evaluate reads is usable
        with torch.no_grad():
            assert result.eval()(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def _malicious_files(directory: Path, marker: Path) -> dict[str, bytes]:
    """Ways a .pt file can carry the payload."""
    zip_format, legacy_format, nested = io.BytesIO(), io.BytesIO(), io.BytesIO()
    torch.save(Payload(marker), zip_format)
    torch.save(Payload(marker), legacy_format, _use_new_zipfile_serialization=False)
    torch.save({**_real_checkpoint(), "metrics": Payload(marker)}, nested)
    swapped = io.BytesIO()  # a real checkpoint's archive with its data.pkl replaced
    with zipfile.ZipFile(io.BytesIO(REAL)) as real, zipfile.ZipFile(swapped, "w") as fake:
        for item in real.infolist():
            data = real.read(item)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps({**_real_checkpoint(), "model": Payload(marker)}, protocol=2)
            fake.writestr(item, data)
    return {"plain pickle": pickle.dumps(Payload(marker), protocol=2), "zip": zip_format.getvalue(),
            "legacy": legacy_format.getvalue(), "nested": nested.getvalue(), "swapped data.pkl": swapped.getvalue()}


def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    files = _malicious_files(tmp_path, marker)
    pickle.loads(files["plain pickle"]).close()  # the payload is real: unsafe unpickling creates the marker
    assert marker.exists()
    marker.unlink()
    for kind, content in files.items():
        (tmp_path / "evil.pt").write_bytes(content)
        with pytest.raises(UserError, match="unreadable") as error:
            load_checkpoint(tmp_path / "evil.pt")
        assert_one_line(error.value)
        assert not marker.exists(), kind


def test_a_model_source_that_would_run_a_command_is_refused_and_never_runs(tmp_path):
    """weights_only cannot help here: the record that tells model_from_checkpoint which code builds the
    model is plain strings, so a crafted one names `subprocess:getoutput` and a shell command."""
    import subprocess

    marker = tmp_path / "payload-ran"
    command = {"cmd": f"touch {marker}"}
    sha256 = hashlib.sha256(Path(subprocess.__file__).read_bytes()).hexdigest()
    records = {
        "module": {"kind": "module", "target": "subprocess:getoutput", "kwargs": command},
        "registered": {"kind": "registered", "target": "subprocess:getoutput", "kwargs": command},
        "entry point": {"kind": "entry point", "target": "subprocess:getoutput", "kwargs": command},
        "file": {"kind": "file", "target": f"{subprocess.__file__}:getoutput", "kwargs": command,
                 "file": subprocess.__file__, "sha256": sha256},  # a file that is there, with its true sha256
    }
    for kind, record in records.items():
        checkpoint = {**_real_checkpoint(), "model_source": {"reference": "nets.py:Net", "file": None, "sha256": None,
                                                             "distribution": None, **record}}
        save_checkpoint(tmp_path / "evil.pt", checkpoint)
        with pytest.raises(UserError) as error:
            model_from_checkpoint(load_checkpoint(tmp_path / "evil.pt"))
        assert_one_line(error.value)
        assert not marker.exists(), kind
    save_checkpoint(tmp_path / "good.pt", _real_checkpoint())  # what fit writes still loads
    assert model_from_checkpoint(load_checkpoint(tmp_path / "good.pt")) is not None



@pytest.mark.integration
def test_a_checkpoint_from_elsewhere_does_not_run_its_model_code_unless_trusted(mnist_root, tmp_path):
    """Rebuilding a file model imports the file: only for code this machine trained with, or when the
    user sets MNIST_OPS_TRUST_MODEL_CODE=1. The model file counts its own imports."""
    import os
    import subprocess
    import sys

    imports = tmp_path / "imports.txt"
    model_file = tmp_path / "nets.py"
    model_file.write_text(f"open({str(imports)!r}, 'a').write('imported\\n')\n"
                          "import torch.nn as nn\n"
                          "def Net():\n"
                          "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n")
    here = {**os.environ, "OMP_NUM_THREADS": "1", "MNIST_OPS_DATA": str(mnist_root),
            "MNIST_OPS_TRUSTED_MODELS": str(tmp_path / "here-trusted")}
    elsewhere = {**here, "MNIST_OPS_TRUSTED_MODELS": str(tmp_path / "elsewhere-trusted")}

    def mnist_ops(env, *args):
        return subprocess.run([sys.executable, "-m", "mnist_ops", *args], env=env, capture_output=True, text=True,
                              timeout=300)

    trained = mnist_ops(here, "train", "--preset", "lean-8k", "--model", f"{model_file}:Net", "--epochs", "1",
                        "--limit-train", "500", "--validation", "500", "--no-progress", "--out", str(tmp_path / "run"))
    assert trained.returncode == 0, trained.stderr
    assert mnist_ops(here, "evaluate", "--checkpoint", str(tmp_path / "run")).returncode == 0  # trained here
    count = len(imports.read_text().splitlines())
    refused = mnist_ops(elsewhere, "evaluate", "--checkpoint", str(tmp_path / "run"))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "rebuilding it would run that code; if you trust it, set MNIST_OPS_TRUST_MODEL_CODE=1" in refused.stderr
    assert len(imports.read_text().splitlines()) == count  # the file was not imported
    trusted = mnist_ops({**elsewhere, "MNIST_OPS_TRUST_MODEL_CODE": "1"}, "evaluate", "--checkpoint",
                        str(tmp_path / "run"))
    assert trusted.returncode == 0 and len(imports.read_text().splitlines()) == count + 1


def test_sam_steps_from_the_unmoved_weights_with_the_gradient_at_the_moved_ones_and_updates_batchnorm_once():
    import copy

    import torch.nn.functional as F

    from mnist_ops.config import Config

    torch.manual_seed(0)
    model = create_model("lean-2k")
    start = copy.deepcopy(model)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))

    # by hand: the gradient g at w, the gradient at w + rho g / |g|, one SGD step from w with the latter
    once = copy.deepcopy(start).train()
    g = torch.autograd.grad(F.cross_entropy(once(x), y), list(once.parameters()))
    norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
    moved = copy.deepcopy(start).train()
    with torch.no_grad():
        for p, gi in zip(moved.parameters(), g):
            p.add_(gi * 0.05 / norm)
    g_moved = torch.autograd.grad(F.cross_entropy(moved(x), y), list(moved.parameters()))
    expected = [p - 0.1 * gi for p, gi in zip(start.parameters(), g_moved)]

    config = Config(model="lean-2k", dropout=0.0, optimizer="sgd", lr=0.1, momentum=0.0, sam=0.05)
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), config)
    step(x, y)
    for got, want in zip(model.parameters(), expected):
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(next(model.parameters()), next(start.parameters()) - 0.1 * g[0], atol=1e-6)
    for name, buffer in model.named_buffers():  # the statistics of one pass, the unmoved one's
        assert torch.equal(buffer, dict(once.named_buffers())[name]), name
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_sam_puts_the_weights_back_bit_for_bit():
    """w + e - e is w only up to float rounding; SAM copies w back, so a step of lr 0 leaves every bit."""
    from mnist_ops.config import Config

    torch.manual_seed(0)
    model = create_model("lean-2k")
    start = [p.detach().clone() for p in model.parameters()]
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.0), Config(model="lean-2k", dropout=0.0, sam=0.5))
    step(torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), start))


def test_random_states_keep_the_cuda_generators_of_a_process_that_used_cuda(monkeypatch):
    """No GPU here: torch.cuda's generator functions are stood in for, to check what is saved and restored when."""
    from mnist_ops.engine import random_states, restore_random_states

    saved, restored = torch.arange(8, dtype=torch.uint8), []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: saved)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state", restored.append)
    generator = torch.Generator().manual_seed(0)
    states = random_states(generator)
    assert states["cuda"] is saved
    restore_random_states(states, generator)
    assert restored == [saved]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # resumed on the CPU: its numbers differ anyway
    restore_random_states(states, generator)
    assert len(restored) == 1
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # a CPU run on a machine with a GPU
    assert "cuda" not in random_states(generator)


def test_a_non_finite_loss_at_sams_moved_weights_stops_before_the_step(monkeypatch):
    from mnist_ops.config import Config

    torch.manual_seed(0)
    model = create_model("lean-2k")
    before = {key: value.clone() for key, value in model.state_dict().items()}
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), Config(model="lean-2k", dropout=0.0, sam=0.05))
    calls = []

    def forward_loss(net, x, y):  # the first pass as usual, the second at the moved weights overflows
        logits, loss = TrainStep.forward_loss(step, net, x, y)
        calls.append(1)
        return logits, loss * float("inf") if len(calls) == 2 else loss

    monkeypatch.setattr(step, "forward_loss", forward_loss)
    with pytest.raises(NonFiniteLoss):
        step(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    after = dict(model.named_parameters())
    # no step: the weights are where they were, up to the rounding of w + e - e (an SGD step moves them by ~1e-3)
    assert all(torch.allclose(after[key], before[key], atol=1e-6, rtol=0) for key in after)


def test_evaluating_a_checkpoint_on_a_data_set_that_changed_since_is_refused():
    """A data set directory whose files were replaced after training: other sizes crashed in the net (a traceback)
    or, through a fixed pool, gave a silent wrong accuracy; labels past the classes failed in the loss."""
    from mnist_ops.engine import evaluate_checkpoint

    checkpoint = {"image_size": [20, 24], "classes": ["a", "b", "c"], "config": {"dataset": "/data/shapes"}}
    with pytest.raises(UserError, match=r"test images of /data/shapes are 28x28 now, and the checkpoint's model "
                                        r"was trained on 20x24"):
        evaluate_checkpoint(checkpoint, torch.zeros(2, 28, 28, dtype=torch.uint8), torch.tensor([0, 1]), "cpu")
    with pytest.raises(UserError, match=r"test labels of /data/shapes go up to 3 now, and the checkpoint's model "
                                        r"knows 3 classes"):
        evaluate_checkpoint(checkpoint, torch.zeros(2, 20, 24, dtype=torch.uint8), torch.tensor([0, 3]), "cpu")


def test_evaluation_never_changes_its_inputs_even_for_a_net_that_changes_its_input_in_place():
    class Doubling(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(784, 10)

        def forward(self, x):
            return self.head(x.mul_(2).flatten(1))

    model, inputs = Doubling(), torch.randn(50, 1, 28, 28)
    held, labels = inputs.clone(), torch.randint(0, 10, (50,))
    first = evaluate(model, inputs, labels, torch.device("cpu"), batch_size=16)
    second = evaluate(model, inputs, labels, torch.device("cpu"), batch_size=16)
    assert torch.equal(inputs, held) and first.loss == second.loss and first.correct == second.correct
