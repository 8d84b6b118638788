import json
import re
import sys

import numpy as np
import onnx
import pytest

from idx_data import write_idx_dataset
from mnist_ops.cli import main
from mnist_ops.predict import OnnxPredictor, TorchPredictor
from mnist_ops.preprocess import normalize_pixels
from mnist_ops.engine import load_checkpoint

pytestmark = pytest.mark.integration


def test_exported_model_has_a_dynamic_batch_and_metadata(digit_checkpoint, onnx_model):
    model = onnx.load(onnx_model)
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")  # symbolic, not frozen to the example's 2
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    checkpoint = load_checkpoint(digit_checkpoint)
    assert float(metadata["mean"]) == checkpoint["mean"] and float(metadata["std"]) == checkpoint["std"]
    assert metadata["model_name"] == "lean-8k" and metadata["labels"] == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'
    assert not any(node.op_type == "BatchNormalization" for node in model.graph.node)  # folded into the convs


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_onnxruntime_agrees_with_torch_on_all_test_images(digit_checkpoint, onnx_model, mnist_test, batch_size):
    torch_predictor, onnx_predictor = TorchPredictor(digit_checkpoint), OnnxPredictor(onnx_model)
    assert (onnx_predictor.mean, onnx_predictor.std) == (torch_predictor.mean, torch_predictor.std)
    inputs = normalize_pixels(mnist_test.images.numpy(), onnx_predictor.mean, onnx_predictor.std)
    ours, theirs = [], []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size]
        ours.append(onnx_predictor.logits(batch))
        theirs.append(torch_predictor.logits(batch))
    ours, theirs = np.concatenate(ours), np.concatenate(theirs)
    assert ours.shape == theirs.shape == (10_000, 10)
    assert np.array_equal(ours.argmax(axis=1), theirs.argmax(axis=1))
    assert np.abs(ours - theirs).max() <= 1e-4


def test_predict_with_the_onnx_model_matches_the_checkpoint(digit_checkpoint, onnx_model, mnist_test, tmp_path, capsys):
    from PIL import Image

    for index in range(12):
        Image.fromarray(255 - mnist_test.images[index].numpy()).resize((150, 150)).save(tmp_path / f"{index:02d}.png")
    outputs = []
    for flag, path in (("--checkpoint", digit_checkpoint), ("--model", onnx_model)):
        assert main(["predict", flag, str(path), str(tmp_path)]) == 0
        outputs.append([line.split("(")[0] for line in capsys.readouterr().out.splitlines()])
    assert len(outputs[0]) == 12 and outputs[0] == outputs[1]


def test_export_mistakes_and_a_missing_extra_give_one_line(digit_checkpoint, onnx_model, tmp_path, capsys,
                                                           monkeypatch):
    def one_line_error(*args):
        assert main([*map(str, args)]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        return err

    assert "not found" in one_line_error("export", "--checkpoint", tmp_path / "absent.pt")
    assert "*.onnx" in one_line_error("export", "--checkpoint", digit_checkpoint, "--out", tmp_path / "model.txt")
    (tmp_path / "broken-run").mkdir()
    (tmp_path / "broken-run" / "last.pt").write_bytes(b"not a checkpoint")  # no "using ..." line before the error
    assert "is unreadable" in one_line_error("export", "--checkpoint", tmp_path / "broken-run", "--out", tmp_path / "b.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    image = tmp_path / "digit.png"  # predict checks its inputs first: this one exists
    image.write_bytes(b"")
    assert "not a readable ONNX model" in one_line_error("predict", "--model", tmp_path / "junk.onnx", image)
    for module in ("onnxscript", "onnxruntime"):  # as if the export extra were not installed
        monkeypatch.setitem(sys.modules, module, None)
    assert one_line_error("export", "--checkpoint", digit_checkpoint, "--out", tmp_path / "m.onnx") == \
        "mnist-ops: error: this command needs the onnxscript package: pip install 'mnist-ops[export]' (from a " \
        "checkout: pip install -c constraints.txt -e '.[export]')\n"
    assert not (tmp_path / "m.onnx").exists()
    assert "pip install 'mnist-ops[export]'" in one_line_error("predict", "--model", onnx_model, image)


def test_export_command_writes_a_working_model(digit_checkpoint, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(digit_checkpoint), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert OnnxPredictor(tmp_path / "m.onnx").model_name == "lean-8k"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temp files or external data left behind


def test_export_keeps_an_existing_file_unless_forced(digit_checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export")
    assert main(["export", "--checkpoint", str(digit_checkpoint), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"mnist-ops: error: {out} already exists; pass another --out, or --force to overwrite it\n"
    assert out.read_bytes() == b"an earlier export"
    (tmp_path / "dir.onnx").mkdir()
    assert main(["export", "--checkpoint", str(digit_checkpoint), "--out", str(tmp_path / "dir.onnx"), "--force"]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(digit_checkpoint), "--out", str(out), "--force"]) == 0
    assert OnnxPredictor(out).model_name == "lean-8k"


def test_a_model_of_your_own_data_exports_with_its_classes_and_size_after_the_data_moved(tmp_path, capsys):
    """The checkpoint keeps the class names and the image size: export needs neither the data set's directory
    (moved here after training) nor 28 x 28 images."""
    import onnxruntime
    import torch

    from mnist_ops.config import Config
    from mnist_ops.export import export_onnx
    from mnist_ops.idx import write_idx
    from mnist_ops.train import fit

    data = write_idx_dataset(tmp_path / "shapes", (64, 16), size=(20, 24))
    (data / "dataset.toml").write_text('classes = ["circle", "square", "star"]\n')
    config = Config(dataset=str(data), model="fast-8k", dropout=0.0, epochs=1, batch_size=16, augment="none")
    fit(config, tmp_path / "run", data_root=tmp_path / "root", log=lambda line: None, progress=False)
    data.rename(tmp_path / "moved")
    metadata = export_onnx(tmp_path / "run" / "last.pt", tmp_path / "m.onnx")
    assert metadata["labels"] == '["circle", "square", "star"]'
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    assert [dim.dim_value for dim in onnx.load(tmp_path / "m.onnx").graph.input[0].type.tensor_type.shape.dim[1:]] \
        == [1, 20, 24]
    assert session.run(None, {"image": np.zeros((5, 1, 20, 24), np.float32)})[0].shape == (5, 3)
    # predict reads its data set's IDX images as they are, with its class names, through torch and onnxruntime alike
    from PIL import Image

    answers = []
    for flag, model in (("--checkpoint", tmp_path / "run"), ("--model", tmp_path / "m.onnx")):
        assert main(["predict", flag, str(model), str(tmp_path / "moved" / "t10k-images-idx3-ubyte")]) == 0
        answers.append([line.split("(")[0] for line in capsys.readouterr().out.splitlines()])
    assert len(answers[0]) == 16 and answers[0] == answers[1]
    assert {line.split(": ")[1].strip() for line in answers[0]} <= {"circle", "square", "star"}
    assert main(["predict", "--model", str(tmp_path / "m.onnx"), "--json",
                 str(tmp_path / "moved" / "t10k-images-idx3-ubyte")]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["label"] == ["circle", "square", "star"][first["digit"]]  # the class name, beside its index
    Image.new("L", (24, 20), 255).save(tmp_path / "photo.png")  # a picture: MNIST's preprocessing is for digits
    write_idx(tmp_path / "wrong-idx3-ubyte", torch.zeros(50, 28, 28, dtype=torch.uint8))
    assert main(["predict", "--checkpoint", str(tmp_path / "run"), str(tmp_path / "photo.png"),
                 str(tmp_path / "wrong-idx3-ubyte")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("using ")]
    assert len(err) == 3 and "not on MNIST's handwritten digits" in err[0] and "pass an IDX file" in err[0]
    assert "wrong-idx3-ubyte[0]: a 28x28 image, and model fast-8k takes 20x24 images" in err[1]
    assert err[2] == f"mnist-ops: error: {tmp_path / 'wrong-idx3-ubyte'}: the same for 49 more of its images"
    assert main(["serve", "--checkpoint", str(tmp_path / "run"), "--port", "0"]) == 2
    assert "serve reads pictures of digits" in capsys.readouterr().err
    # a net of one's own whose head takes exactly 20 x 24 images trains too (the receptive-field table fed it 20 x 20)
    (tmp_path / "flat.py").write_text("import torch\n"
                                      "def net(num_classes=10):\n"
                                      "    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(),\n"
                                      "                               torch.nn.Linear(4 * 18 * 22, num_classes))\n")
    fit(Config(dataset=str(tmp_path / "moved"), model=f"{tmp_path / 'flat.py'}:net", dropout=0.0, epochs=1,
               batch_size=16, augment="none"), tmp_path / "flat-run", data_root=tmp_path / "root",
        log=lambda line: None, progress=False)
    assert re.search(r"\| 20\*24 \| +18\*22 \|", (tmp_path / "flat-run" / "summary.txt").read_text())


def test_a_forward_torch_export_cannot_trace_is_one_line_naming_the_cause(tmp_path, mnist_root, capfd):
    """torch.export's own message only says which of its steps failed, in terminal colours, after dumping
    graphs to stderr: the user gets one plain line with the cause."""
    from mnist_ops.presets import build_config
    from mnist_ops.train import fit

    (tmp_path / "branchy.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(784, num_classes)\n"
        "    def forward(self, x):\n"
        "        if x.sum() > 0:\n"
        "            return self.fc(x.flatten(1))\n"
        "        return -self.fc(x.flatten(1))\n")
    config = build_config("seed-lean", None, {"model": f"{tmp_path / 'branchy.py'}:Net", "epochs": 1,
                                              "limit_train": 256, "augment": "none", "dropout": 0.0})
    fit(config, tmp_path / "run", data_root=mnist_root, log=lambda line: None, progress=False)
    capfd.readouterr()
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "m.onnx")]) == 2
    captured = capfd.readouterr()
    assert len(captured.err.splitlines()) == 1 and "\x1b[" not in captured.err
    assert "torch.export cannot trace its forward() (GuardOnDataDependentSymNode" in captured.err
    assert "torch.where instead of `if`" in captured.err
    assert not (tmp_path / "m.onnx").exists()


def test_a_model_of_transposed_idx_files_reads_them_upright_after_the_data_moved(tmp_path, capsys):
    """EMNIST stores images transposed. The checkpoint and the ONNX file record it, so predict turns the files'
    images upright with no data set at hand (without the record: 'a 24x20 image, and the model takes 20x24')."""
    from mnist_ops.config import Config
    from mnist_ops.export import export_onnx
    from mnist_ops.train import fit

    data = write_idx_dataset(tmp_path / "letters", (64, 16), size=(20, 24), emnist_names=True)
    config = Config(dataset=str(data), model="fast-8k", dropout=0.0, epochs=1, batch_size=16, augment="none")
    fit(config, tmp_path / "run", data_root=tmp_path / "root", log=lambda line: None, progress=False)
    export_onnx(tmp_path / "run" / "last.pt", tmp_path / "m.onnx")
    stored = tmp_path / "emnist-digits-test-images-idx3-ubyte"
    data.joinpath(stored.name).rename(stored)
    data.rename(tmp_path / "moved")
    for flag, model in (("--checkpoint", tmp_path / "run" / "last.pt"), ("--model", tmp_path / "m.onnx")):
        assert main(["predict", flag, str(model), str(stored)]) == 0, capsys.readouterr().err
        assert len(capsys.readouterr().out.splitlines()) == 16
