import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_ops.cli import main
from mnist_ops.idx import write_idx
from mnist_ops.predict import NonFiniteOutputError, TorchPredictor, load_predictor
from mnist_ops.batches import normalize
from mnist_ops.engine import evaluate, load_checkpoint, model_from_checkpoint

pytestmark = pytest.mark.integration
RENDERED = 1200


def render_like_a_person(pixels: np.ndarray, rng: np.random.Generator, kind: int) -> tuple[Image.Image, str]:
    """An MNIST test digit as a person hands it over: enlarged 4-10x, dark ink on white, somewhere
    off-centre on a bigger page; as grayscale PNG, blue ink on white RGB PNG, black ink on a
    transparent RGBA PNG, or an RGB JPEG."""
    size = round(28 * rng.uniform(4, 10))
    ink = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    height, width = size + int(rng.integers(size // 4, size)), size + int(rng.integers(size // 4, size))
    top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    page = np.zeros((height, width), dtype=np.float32)
    page[top:top + size, left:left + size] = ink
    if kind == 0:
        return Image.fromarray(np.uint8(np.rint(255 * (1 - page)))), "png"
    if kind == 1:
        blue = 255 * (1 - page[..., None]) + np.array([20, 30, 120], dtype=np.float32) * page[..., None]
        return Image.fromarray(np.uint8(np.rint(blue))), "png"
    if kind == 2:
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        rgba[..., 3] = np.uint8(np.rint(255 * page))
        return Image.fromarray(rgba), "png"
    return Image.fromarray(np.uint8(np.rint(255 * (1 - page)))).convert("RGB"), "jpg"


def run_predict(capsys, *args):
    code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_rendered_digits_keep_the_accuracy_of_the_originals(digit_checkpoint, mnist_test, tmp_path, capsys):
    """The issue's acceptance test: 1,200 test digits rendered as files, through `mnist-ops predict`,
    must score within 0.5 points of the model's accuracy on the original 28x28 digits."""
    checkpoint = load_checkpoint(digit_checkpoint)
    images, labels = mnist_test.images[:RENDERED], mnist_test.labels[:RENDERED]
    original = evaluate(model_from_checkpoint(checkpoint), normalize(images, checkpoint["mean"], checkpoint["std"]),
                        labels, torch.device("cpu")).accuracy

    rng = np.random.default_rng(2024)
    kinds = {}
    for index, pixels in enumerate(images.numpy()):
        image, suffix = render_like_a_person(pixels, rng, index % 4)
        kinds[image.mode] = kinds.get(image.mode, 0) + 1
        image.save(tmp_path / f"{index:04d}.{suffix}", **({"quality": 90} if suffix == "jpg" else {"compress_level": 1}))
    assert kinds == {"L": 300, "RGB": 600, "RGBA": 300}

    code, out, err = run_predict(capsys, "--checkpoint", digit_checkpoint, "--json", tmp_path)
    assert code == 0 and err == ""
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in records] == sorted(str(p) for p in tmp_path.iterdir())
    predicted = np.array([r["digit"] for r in records])
    rendered = (predicted == labels.numpy()).mean() * 100
    assert original > 95
    assert abs(rendered - original) <= 0.5, f"rendered {rendered:.2f}% vs original {original:.2f}%"
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-4 and r["top3"][0] == [r["digit"], r["probability"]]
               for r in records)


def test_idx_input_keeps_mnist_accuracy(digit_checkpoint, mnist_root, tmp_path, capsys):
    """Already MNIST-like input (the real test-set IDX file) goes through the same preprocessing and
    keeps the accuracy the model has on it directly."""
    checkpoint = load_checkpoint(digit_checkpoint)
    test_file = mnist_root / "mnist" / "t10k-images-idx3-ubyte"
    from mnist_ops.data import load_split

    test = load_split("mnist", "test", mnist_root)
    direct = evaluate(model_from_checkpoint(checkpoint), normalize(test.images, checkpoint["mean"], checkpoint["std"]),
                      test.labels, torch.device("cpu")).accuracy
    code, out, err = run_predict(capsys, "--checkpoint", digit_checkpoint, "--json", test_file)
    assert code == 0 and err == ""
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 10_000 and records[17]["file"] == f"{test_file}[17]"
    accuracy = (np.array([r["digit"] for r in records]) == test.labels.numpy()).mean() * 100
    assert abs(accuracy - direct) <= 0.2, f"through preprocessing {accuracy:.2f}% vs direct {direct:.2f}%"

    write_idx(tmp_path / "three.idx", test.images[:3])  # the text output: digit, probability, top 3
    code, out, _ = run_predict(capsys, "--checkpoint", digit_checkpoint, tmp_path / "three.idx")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert lines[0].startswith(f"{tmp_path / 'three.idx'}[0]: 7 (") and "top 3: 7 " in lines[0]


def test_bad_files_get_one_line_each_and_the_good_ones_are_still_predicted(digit_checkpoint, mnist_test, tmp_path,
                                                                        capsys):
    Image.fromarray(255 - mnist_test.images[0].numpy()).resize((140, 140)).save(tmp_path / "a-seven.png")
    Image.new("L", (200, 200), 255).save(tmp_path / "b-blank.png")
    (tmp_path / "c-notes.gif").write_text("not an image")
    (tmp_path / "d-none.idx").write_bytes(bytes([0, 0, 8, 3]) + (0).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
    (tmp_path / "e-magic.idx").write_bytes(bytes([8, 3, 0, 0]) + (1).to_bytes(4, "big") + bytes(8 + 784))
    (tmp_path / "f-zeros.png").write_bytes(bytes(100))  # named a picture: not read as IDX by its two zero bytes
    code, out, err = run_predict(capsys, "--checkpoint", digit_checkpoint, tmp_path)
    assert code == 2
    assert out.splitlines()[0].startswith(f"{tmp_path / 'a-seven.png'}: 7 (") and len(out.splitlines()) == 1
    errors = err.splitlines()
    assert len(errors) == 5 and "Traceback" not in err and "f-zeros.png: not an image" in errors[4]
    assert "b-blank.png: no digit found" in errors[0] and "c-notes.gif: not an image" in errors[1]
    assert "d-none.idx: IDX file holds no images (shape (0, 28, 28))" in errors[2]  # once silent, and exit 0
    assert "e-magic.idx: bad magic number 08030000: not an IDX file" in errors[3]  # once "not an image"

    code, out, err = run_predict(capsys, "--checkpoint", digit_checkpoint.parent, tmp_path / "a-seven.png")
    assert code == 0 and out.startswith(f"{tmp_path / 'a-seven.png'}: 7 (")  # a run directory: its last.pt here
    assert err.startswith(f"using {digit_checkpoint}") and len(err.splitlines()) == 1

    broken_run = tmp_path / "broken-run"
    broken_run.mkdir()
    (broken_run / "last.pt").write_bytes(b"not a checkpoint")
    code, out, err = run_predict(capsys, "--checkpoint", broken_run, tmp_path / "a-seven.png")
    assert code == 2 and out == "" and err.splitlines() == [  # the error alone: not "using ..." before it
        f"mnist-ops: error: checkpoint {broken_run / 'last.pt'} is unreadable (UnpicklingError); "
        "pass a best.pt or last.pt written by mnist-ops train"]

    code, out, err = run_predict(capsys, "--checkpoint", digit_checkpoint, "/proc/self/mem", tmp_path / "a-seven.png")
    assert code == 2 and out.startswith(f"{tmp_path / 'a-seven.png'}: 7 (")  # a regular file whose read fails (EIO)
    assert err == "mnist-ops: error: /proc/self/mem: cannot read it (Input/output error)\n"  # once ended the run

    for args, fragment in [((tmp_path / "absent.png",), "no such file"),
                           ((tmp_path / "empty-dir",), "no image files")]:
        (tmp_path / "empty-dir").mkdir(exist_ok=True)
        code, out, err = run_predict(capsys, "--checkpoint", digit_checkpoint, *args)
        assert code == 2 and out == "" and len(err.splitlines()) == 1 and fragment in err


def test_a_folder_says_what_it_leaves_out(digit_checkpoint, mnist_test, tmp_path, capsys):
    """Only image and IDX files are read, not subfolders: what else the folder holds is named, not skipped unseen.
    A phone's .jfif is a JPEG."""
    Image.fromarray(255 - mnist_test.images[0].numpy()).resize((140, 140)).convert("RGB").save(tmp_path / "a.jfif",
                                                                                                "JPEG")
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.txt").write_text("the 7 is a.jfif")
    (tmp_path / ".DS_Store").write_bytes(b"")
    code, out, err = run_predict(capsys, "--checkpoint", digit_checkpoint, tmp_path)
    assert code == 0 and out.startswith(f"{tmp_path / 'a.jfif'}: 7 (") and len(out.splitlines()) == 1
    assert err == (f"mnist-ops: note: {tmp_path}: left out 2 entries that are not image or IDX files (notes.txt, sub/; "
                   "1 folder(s), not searched); name them to read them\n")


def test_one_predictor_interface(digit_checkpoint, mnist_test):
    predictor = load_predictor(checkpoint=digit_checkpoint)
    assert isinstance(predictor, TorchPredictor) and predictor.labels == [str(d) for d in range(10)]
    digit = Image.fromarray(255 - mnist_test.images[1].numpy()).resize((300, 300))
    prediction = predictor.predict(digit)
    assert prediction.digit == 2 and prediction.pixels.shape == (28, 28)
    assert prediction.top(3)[0] == (2, prediction.probability)
    probabilities = predictor.probabilities(mnist_test.images[:50].numpy(), batch_size=7)
    assert probabilities.shape == (50, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_a_checkpoint_that_cannot_answer_is_refused_in_one_line(altered_checkpoint, mnist_test, tmp_path, capsys):
    """NaN or infinite weights (a diverged run), or a mean/std that normalize pixels to infinity: each once
    printed '0 (nan%)' with exit 0."""
    Image.fromarray(255 - mnist_test.images[0].numpy()).resize((140, 140)).save(tmp_path / "seven.png")
    for name, weights, changes, problem in [
            ("nan.pt", lambda tensor: tensor * float("nan"), {},
             "its weights hold NaN (conv1.conv.weight): the run diverged; use an earlier checkpoint"),
            ("inf.pt", lambda tensor: tensor.clone().fill_(float("inf")), {},
             "its weights hold infinite values (conv1.conv.weight): the run diverged; use an earlier checkpoint"),
            ("tiny-std.pt", None, {"std": 1e-300}, "its std 1e-300 is not above 1e-06"),  # 0 in float32
            ("small-std.pt", None, {"std": 1e-7}, "its std 1e-07 is not above 1e-06"),
            ("huge-mean.pt", None, {"mean": 1e300}, "its mean 1e+300 and std 0.308"),  # inf in float32
    ]:
        path = altered_checkpoint(name, weights, **changes)
        code, out, err = run_predict(capsys, "--checkpoint", path, tmp_path / "seven.png")
        assert code == 2 and out == "" and len(err.splitlines()) == 1, err
        assert err.startswith(f"mnist-ops: error: checkpoint {path}: {problem}"), err


def test_a_model_whose_output_overflows_gives_an_error_not_nan(altered_checkpoint, mnist_test, tmp_path, capsys):
    """Finite weights can still overflow float32 inside the net: that image gets an error line, never NaN."""
    Image.fromarray(255 - mnist_test.images[0].numpy()).resize((140, 140)).save(tmp_path / "seven.png")
    path = altered_checkpoint("huge.pt", lambda tensor: tensor * 1e30)
    for flags in ([], ["--json"]):
        code, out, err = run_predict(capsys, "--checkpoint", path, *flags, tmp_path / "seven.png")
        assert code == 2 and out == "" and err == (
            f"mnist-ops: error: {tmp_path / 'seven.png'}: model lean-8k gives no finite answer (its output holds NaN "
            "or infinity: its weights overflow float32 or are broken); use another model\n")
    predictor = TorchPredictor(path)
    with pytest.raises(NonFiniteOutputError):
        predictor.predict(Image.open(tmp_path / "seven.png"))


def _onnx_with_metadata(path, input_type, input_shape, nodes, initializers):
    """A hand-built ONNX model carrying mnist-ops metadata (MNIST's mean and std, 10 labels), output y [N, 10]."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", input_type, input_shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 10])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"mean": "0.1307", "std": "0.3081", "model_name": "by-hand",
                                   "labels": json.dumps([str(i) for i in range(10)])})
    onnx.save(model, path)
    return path


def test_an_onnx_model_whose_input_is_not_an_image_batch_is_refused_when_it_loads(tmp_path, mnist_test, capsys):
    """A flat [N, 784] input, a float64 one or a batch fixed to 1 ended predict in onnxruntime's traceback at the
    first answer, and serve in a 500 (a review)."""
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((784, 10), np.float32), "w")
    flat = numpy_helper.from_array(np.array([-1, 784], np.int64), "flat")
    reshaped = [helper.make_node("Reshape", ["x", "flat"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])]
    Image.fromarray(255 - mnist_test.images[0].numpy()).save(tmp_path / "seven.png")
    for name, input_type, shape, nodes, takes in [
            ("flat.onnx", TensorProto.FLOAT, ["N", 784], [helper.make_node("MatMul", ["x", "w"], ["y"])],
             "tensor(float) [N, 784]"),
            ("double.onnx", TensorProto.DOUBLE, ["N", 1, 28, 28],
             [helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT),
              helper.make_node("Reshape", ["c", "flat"], ["r"]), reshaped[1]], "tensor(double) [N, 1, 28, 28]"),
            ("batch-1.onnx", TensorProto.FLOAT, [1, 1, 28, 28], reshaped, "tensor(float) [1, 1, 28, 28]"),
            ("three-channels.onnx", TensorProto.FLOAT, ["N", 3, 28, 28], reshaped, "tensor(float) [N, 3, 28, 28]")]:
        path = _onnx_with_metadata(tmp_path / name, input_type, shape, nodes, [weights, flat])
        code, out, err = run_predict(capsys, "--model", path, tmp_path / "seven.png")
        assert (code, out) == (2, ""), err
        assert err == (f"mnist-ops: error: model {path}: its input is {takes}, where mnist-ops gives one float32 "
                       "batch [N, 1, H, W] of any N; export it again with `mnist-ops export`\n")
    path = _onnx_with_metadata(tmp_path / "fits.onnx", TensorProto.FLOAT, ["N", 1, 28, 28], reshaped, [weights, flat])
    code, out, err = run_predict(capsys, "--model", path, tmp_path / "seven.png")
    assert code == 0 and out.startswith(f"{tmp_path / 'seven.png'}: "), err


def test_bad_onnx_metadata_is_refused_in_one_line_when_the_model_loads(edited_onnx, mnist_test, tmp_path, capsys):
    """Hand-edited metadata once gave a traceback (ValueError, JSONDecodeError), an IndexError after the
    model had loaded, or 'nan%' answers with exit 0."""
    Image.fromarray(255 - mnist_test.images[0].numpy()).resize((140, 140)).save(tmp_path / "seven.png")
    for name, changes, problem in [
            ("std-abc.onnx", {"std": "abc"}, "its metadata mean '0.1306604762738429' and std 'abc' must be numbers"),
            ("std-0.onnx", {"std": "0"}, "its std 0.0 is not above 1e-06"),
            ("mean-nan.onnx", {"mean": "nan"}, "its mean nan and std 0.3081078071314181 must be finite numbers"),
            ("labels-json.onnx", {"labels": "[1,"}, "its metadata labels '[1,' are not a JSON list of strings"),
            ("labels-int.onnx", {"labels": "[0, 1]"}, "its metadata labels '[0, 1]' are not a JSON list of strings"),
            ("labels-few.onnx", {"labels": '["a"]'}, "its metadata has 1 labels for its 10 outputs"),
            ("labels-dynamic.onnx", {"labels": '["a"]', "dynamic_outputs": True},  # counted at the first answer
             "its metadata has 1 labels for its 10 outputs"),
    ]:
        path = edited_onnx(name, **changes)
        code, out, err = run_predict(capsys, "--model", path, tmp_path / "seven.png")
        assert code == 2 and out == "" and len(err.splitlines()) == 1, err
        assert err.startswith(f"mnist-ops: error: model {path}: {problem}") and \
            err.endswith("; export it again with `mnist-ops export`\n"), err
    code, out, err = run_predict(capsys, "--model", edited_onnx("dynamic.onnx", dynamic_outputs=True),
                                 tmp_path / "seven.png")
    assert code == 0 and out.startswith(f"{tmp_path / 'seven.png'}: 7 (")  # a dynamic output count that fits


def test_pictures_whose_exif_does_not_parse_are_read_without_it(digit_checkpoint, broken_exif_sevens, tmp_path,
                                                                  capsys, recwarn):
    """A PNG's or WebP's unreadable EXIF ended predict in a traceback before the files after it (and serve in a
    500); a JPEG's or a PNG's damaged one printed Pillow's warnings with their file and line (a review)."""
    files = []
    for name, content in broken_exif_sevens.items():
        files.append(tmp_path / name)
        files[-1].write_bytes(content)
    code, out, err = run_predict(capsys, "--checkpoint", digit_checkpoint, *files)
    assert (code, err) == (0, "")
    assert [line.split(" (")[0] for line in out.splitlines()] == [f"{file}: 7" for file in files]
    pillow = os.path.dirname(Image.__file__)
    assert [str(warning.message) for warning in recwarn if warning.filename.startswith(pillow)] == []


def test_a_data_sets_folder_webp_and_a_photos_broken_exif_are_read_and_files_may_follow_a_flag(
        digit_checkpoint, mnist_root, mnist_test, tmp_path, capsys, recwarn):
    """A folder holding a data set's IDX files (images beside labels) once ended in an error for its labels file; a
    WebP was "not an image"; a JPEG whose EXIF does not parse printed Pillow's warning with its file and line; a
    file named after --json was "unrecognized"."""
    import io

    from mnist_ops.data import load_split

    data = tmp_path / "data"
    data.mkdir()
    test = load_split("mnist", "test", mnist_root)
    write_idx(data / "t10k-images-idx3-ubyte", test.images[:3])
    write_idx(data / "t10k-labels-idx1-ubyte", test.labels[:3].to(torch.uint8))
    seven = Image.fromarray(255 - mnist_test.images[0].numpy()).resize((140, 140)).convert("RGB")
    seven.save(data / "seven.webp")
    buffer = io.BytesIO()
    seven.save(buffer, "JPEG", quality=95)
    jpeg = buffer.getvalue()  # an APP1 segment whose EXIF ends at once, after the JPEG's start marker
    (tmp_path / "seven.jpg").write_bytes(jpeg[:2] + b"\xff\xe1\x00\x10Exif\x00\x00MM\x00*\x00\x00\x00\x08" + jpeg[2:])

    code, out, err = run_predict(capsys, "--checkpoint", digit_checkpoint, data, "--json", tmp_path / "seven.jpg")
    assert code == 0, err
    assert err == (f"mnist-ops: note: {data}: left out 1 IDX label file(s) (t10k-labels-idx1-ubyte): predict reads "
                   "images, not labels\n")
    records = [json.loads(line) for line in out.splitlines()]
    assert [record["file"] for record in records] == [  # the folder's files sorted, then the file after --json
        str(data / "seven.webp"), *(f"{data / 't10k-images-idx3-ubyte'}[{i}]" for i in range(3)),
        str(tmp_path / "seven.jpg")]
    assert [record["digit"] for record in records] == [7, *test.labels[:3].tolist(), 7]
    assert [str(warning.message) for warning in recwarn if "EXIF" in str(warning.message)] == []

    (tmp_path / "labels-only").mkdir()
    (data / "t10k-labels-idx1-ubyte").rename(tmp_path / "labels-only" / "t10k-labels-idx1-ubyte")
    code, out, err = run_predict(capsys, "--checkpoint", digit_checkpoint, tmp_path / "labels-only")
    assert code == 2 and out == "" and err == (
        f"mnist-ops: error: {tmp_path / 'labels-only'}: only IDX label files here (t10k-labels-idx1-ubyte), no images; "
        "pass the images file beside them (...-images-idx3-ubyte)\n")
    (tmp_path / "labels-only" / "t10k-labels-idx1-ubyte").rename(data / "t10k-labels-idx1-ubyte")
    code, out, err = run_predict(capsys, "--checkpoint", digit_checkpoint, data / "t10k-labels-idx1-ubyte")
    assert code == 2 and out == "" and err == (
        f"mnist-ops: error: {data / 't10k-labels-idx1-ubyte'}: an IDX file of labels (shape (3,)), not of images; "
        "pass the images file beside it (...-images-idx3-ubyte)\n")
