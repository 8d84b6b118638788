"""Predict digits in image files with a trained model, through one interface and two backends.

`TorchPredictor` runs a checkpoint (`best.pt`/`last.pt`), `OnnxPredictor` runs a model written
by `mnist-ops export` through onnxruntime. Both take pictures through `preprocess.preprocess`
and return `Prediction`s; `mnist-ops predict` and `mnist-ops serve` use them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from mnist_ops.errors import UserError, require_extra, show
from mnist_ops.preprocess import normalize_pixels, open_image, preprocess

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".webp")  # Pillow's, for FORMATS
# Pixels are 0..1, so a data set's std below this is one shade throughout: nothing a net learns from. A smaller std
# scales inputs past 1e6, where a net's sums can overflow float32 (std = 1e-300 is 0 in float32: infinite inputs).
MIN_STD = 1e-6


class NonFiniteOutputError(UserError):
    """The model's output for an image is NaN or infinite: it has no answer to give."""


@dataclass
class Prediction:
    digit: int
    probability: float
    probabilities: np.ndarray  # float [classes]
    pixels: np.ndarray  # uint8 [H, W] (28 x 28 for a digit model): the image the model saw

    def top(self, k: int = 3) -> list[tuple[int, float]]:
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(int(index), float(self.probabilities[index])) for index in order]

    def to_dict(self) -> dict:
        return {"digit": self.digit, "probability": round(self.probability, 6),
                "top3": [[digit, round(p, 6)] for digit, p in self.top(3)],
                "probabilities": [round(float(p), 6) for p in self.probabilities]}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class Predictor:
    """A trained classifier. Subclasses set `backend`, `model_name`, `mean`, `std`, `labels`, `dataset` and
    `image_size`, and implement `logits` on normalized float32 inputs [N, 1, H, W].

    A model of MNIST's handwritten digits (`digits`) takes any picture: `preprocess` rebuilds MNIST's form from
    it. A model of another data set takes the data set's own images, from IDX files, as they are: how to turn a
    photo into that data set's form is not known here."""

    backend: str
    model_name: str
    mean: float
    std: float
    labels: list[str]
    dataset: str = "mnist"  # what it was trained on; MNIST's unless a subclass says otherwise
    image_size: tuple[int, int] = (28, 28)
    transposed: bool = False  # its data set's IDX files hold images transposed (EMNIST's)

    @property
    def digits(self) -> bool:
        return self.dataset == "mnist"

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def probabilities(self, pixels: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """uint8 [N, 28, 28] MNIST-style images -> float [N, classes], in batches."""
        parts = [softmax(self.logits(normalize_pixels(pixels[start:start + batch_size], self.mean, self.std)))
                 for start in range(0, len(pixels), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict(self, image: Image.Image, name: str = "image") -> Prediction:
        """One picture of a digit, any size or colour; NoDigitError for a blank one, NonFiniteOutputError when
        the model's output is not finite."""
        [(_, result)] = self.predict_many([(name, image)])  # one path for serve's single image and predict's many
        if isinstance(result, UserError):
            raise result
        return result

    def model_input(self, name: str, image: Image.Image | np.ndarray) -> np.ndarray:
        """uint8 [H, W], the image as the model takes it: a digit model's through `preprocess`; another model's
        an IDX image of its size, as it is (a picture file is refused: see the class's note)."""
        if self.digits:
            picture = Image.fromarray(image) if isinstance(image, np.ndarray) else image
            return preprocess(picture, self.mean, self.std, name).pixels
        height, width = self.image_size
        if isinstance(image, np.ndarray) and self.transposed:
            image = image.T  # as load_split turns EMNIST's files upright
        if not isinstance(image, np.ndarray):
            raise UserError(f"{name}: model {self.model_name} was trained on {self.dataset}, not on MNIST's "
                            f"handwritten digits, so it takes its data set's own {height}x{width} images from IDX "
                            "files, not pictures; pass an IDX file (FILE-idx3-ubyte)")
        if image.shape != (height, width):
            raise UserError(f"{name}: a {image.shape[0]}x{image.shape[1]} image, and model {self.model_name} takes "
                            f"{height}x{width} images (those of {self.dataset}); pass images of that size")
        return image

    def predict_many(self, images: Iterable[tuple[str, Image.Image | np.ndarray | UserError]],
                     batch_size: int = 256) -> Iterator[tuple[str, Prediction | UserError]]:
        """(name, image) pairs -> (name, Prediction), or (name, UserError) for an image that cannot be used.
        An image is a picture (PIL) or an IDX file's uint8 [H, W]. Images are prepared one by one
        (`model_input`) and run through the model in batches."""
        batch: list[tuple[str, np.ndarray | UserError]] = []

        def flush():
            good = [pixels for _, pixels in batch if not isinstance(pixels, UserError)]
            probabilities = iter(self.probabilities(np.stack(good)) if good else [])
            for name, pixels in batch:
                if isinstance(pixels, UserError):
                    yield name, pixels
                else:
                    p = next(probabilities)
                    yield name, (Prediction(int(p.argmax()), float(p.max()), p, pixels) if np.isfinite(p).all()
                                 else self._non_finite(name))
            batch.clear()

        for name, image in images:
            if isinstance(image, UserError):
                batch.append((name, image))
            else:
                try:
                    batch.append((name, self.model_input(name, image)))
                except UserError as error:
                    batch.append((name, error))
            if len(batch) == batch_size:
                yield from flush()
        yield from flush()

    def _non_finite(self, name: str) -> NonFiniteOutputError:
        # Loading refuses NaN weights and a mean/std that overflow the inputs; finite weights can still overflow
        # float32 on the way through the net, and a NaN must never reach a JSON answer.
        return NonFiniteOutputError(f"{name}: model {self.model_name} gives no finite answer (its output holds NaN "
                                    "or infinity: its weights overflow float32 or are broken); use another model")


def normalization_problem(mean: float, std: float) -> str | None:
    """What keeps a model's mean and std from normalizing pixels to finite inputs, if anything."""
    if not (math.isfinite(mean) and math.isfinite(std)):
        return f"its mean {mean!r} and std {std!r} must be finite numbers"
    if std <= MIN_STD:
        return f"its std {std!r} is not above {MIN_STD:g} (pixels would normalize to infinity)"
    with np.errstate(all="ignore"):  # a mean past float32's range
        inputs = normalize_pixels(np.array([[0, 255]], dtype=np.uint8), mean, std)
    if not np.isfinite(inputs).all():
        return f"its mean {mean!r} and std {std!r} normalize pixels to infinity"
    return None


def intra_op_threads() -> int | None:
    """Honour OMP_NUM_THREADS for onnxruntime as torch does; None lets onnxruntime choose."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


class TorchPredictor(Predictor):
    """A checkpoint run by PyTorch: eval mode, BatchNorm folded, no autograd."""

    backend = "torch"

    def __init__(self, checkpoint_path: str | os.PathLike):
        import torch

        from mnist_ops.engine import fold_batchnorm, load_checkpoint, model_from_checkpoint, trained_on

        checkpoint = load_checkpoint(checkpoint_path)
        trained = trained_on(checkpoint, checkpoint_path)  # as export reads it
        self.dataset, self.labels, self.image_size = trained.dataset, trained.labels, trained.image_size
        self.transposed = trained.transposed
        self.model_name = checkpoint["model_name"]
        self.mean, self.std = float(checkpoint["mean"]), float(checkpoint["std"])
        problem = normalization_problem(self.mean, self.std)
        if problem:
            raise UserError(f"checkpoint {checkpoint_path}: {problem}; pass a best.pt or last.pt written by "
                            "mnist-ops train")
        # Weights of a diverged run (or an edited file) make every answer NaN: refuse them here, not per image.
        for name, tensor in checkpoint["model"].items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                what = "NaN" if torch.isnan(tensor).any() else "infinite values"
                raise UserError(f"checkpoint {checkpoint_path}: its weights hold {what} ({name}): the run diverged; "
                                "use an earlier checkpoint")
        self.model = fold_batchnorm(model_from_checkpoint(checkpoint))
        self._torch = torch

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(np.ascontiguousarray(inputs))).float().numpy()


class OnnxPredictor(Predictor):
    """A model written by `mnist-ops export`, run by onnxruntime; mean, std and labels come from its metadata."""

    backend = "onnxruntime"
    FIX = "export it again with `mnist-ops export`"  # the fix for metadata that cannot be used

    def __init__(self, model_path: str | os.PathLike, threads: int | None = None):
        path = Path(model_path)
        if path.is_dir():
            raise UserError(f"model {path} is a directory; --model takes an .onnx file (a run directory goes "
                            "to --checkpoint)")
        if not path.is_file():
            raise UserError(f"model {path} not found; write one with `mnist-ops export --checkpoint RUN/best.pt "
                            f"--out {path}`")
        require_extra("export", "onnxruntime")
        import onnxruntime
        options = onnxruntime.SessionOptions()
        threads = threads or intra_op_threads()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types for a corrupt or foreign file
            raise UserError(f"model {path} is not a readable ONNX model ({type(error).__name__}); "
                            "export one with `mnist-ops export`") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if not {"mean", "std", "model_name", "labels"} <= set(metadata):
            raise UserError(f"model {path} has no mnist-ops metadata (mean, std, labels); "
                            "export it with `mnist-ops export`")
        self.dataset = metadata.get("dataset", "mnist")
        from mnist_ops.data import stored_transposed

        self.transposed = metadata.get("transposed", json.dumps(stored_transposed(self.dataset))) == "true"
        self.model_name = metadata["model_name"]
        self._path = path
        try:
            self.mean, self.std = float(metadata["mean"]), float(metadata["std"])
        except ValueError:
            raise UserError(f"model {path}: its metadata mean {show(metadata['mean'])} and std {show(metadata['std'])} "
                            f"must be numbers; {self.FIX}") from None
        problem = normalization_problem(self.mean, self.std)
        if problem:
            raise UserError(f"model {path}: {problem}; {self.FIX}")
        try:
            self.labels = json.loads(metadata["labels"])
        except ValueError:  # JSONDecodeError
            self.labels = None
        if not (isinstance(self.labels, list) and all(isinstance(label, str) for label in self.labels)):
            raise UserError(f"model {path}: its metadata labels {show(metadata['labels'])} are not a JSON list of "
                            f"strings; {self.FIX}")
        inputs = self.session.get_inputs()
        shape = inputs[0].shape if len(inputs) == 1 else []
        fixed = lambda dim: isinstance(dim, int)  # onnxruntime names a free dimension by a string (or None)
        if (len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(shape) != 4 or fixed(shape[0])
                or (fixed(shape[1]) and shape[1] != 1)):
            takes = (f"{len(inputs)} inputs" if len(inputs) != 1 else
                     f"its input is {inputs[0].type} [{', '.join(map(str, shape))}]")
            raise UserError(f"model {path}: {takes}, where mnist-ops gives one float32 batch [N, 1, H, W] of any N; "
                            f"{self.FIX}")
        self.input_name = inputs[0].name
        size = shape[2:]  # [batch, 1, H, W]: export fixes H and W
        self.image_size = tuple(size) if len(size) == 2 and all(isinstance(s, int) for s in size) else (28, 28)
        # The output count, where the graph fixes it (export does); a dynamic one is checked at the first answer.
        classes = (self.session.get_outputs()[0].shape or [None])[-1]
        self._classes = classes if isinstance(classes, int) else None
        if self._classes is not None:
            self._check_classes(self._classes)

    def _check_classes(self, classes: int) -> None:
        if classes != len(self.labels):  # an answer would have no label, or labels no answer
            raise UserError(f"model {self._path}: its metadata has {len(self.labels)} labels for its {classes} "
                            f"outputs; {self.FIX}")

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        logits = self.session.run(None, {self.input_name: np.ascontiguousarray(inputs, dtype=np.float32)})[0]
        if self._classes is None:
            self._check_classes(logits.shape[-1])
            self._classes = logits.shape[-1]
        return logits


def load_predictor(checkpoint: str | os.PathLike | None = None, model: str | os.PathLike | None = None) -> Predictor:
    """`--checkpoint RUN/best.pt` (torch) or `--model model.onnx` (onnxruntime): exactly one."""
    if (checkpoint is None) == (model is None):
        raise UserError("pass exactly one of --checkpoint RUN/best.pt (PyTorch) or --model model.onnx (onnxruntime)")
    return TorchPredictor(checkpoint) if checkpoint is not None else OnnxPredictor(model)


# ---------------------------------------------------------------------------- input files

IDX_SUFFIXES = ("-ubyte", "-ubyte.gz", ".idx")


def _is_idx(path: Path) -> bool:
    """An IDX file by its name (so a bad one is named as a bad IDX file, not as a bad image) or its magic."""
    if path.name.endswith((".gz", *IDX_SUFFIXES)):
        return True
    if path.suffix.lower() in IMAGE_SUFFIXES:  # named as a picture: a damaged one is "not an image", not bad IDX
        return False
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x00\x00"  # IDX magic; no image format starts with two zero bytes


def _is_idx_labels(path: Path) -> bool:
    """An IDX file of one dimension (a data set's labels), by its header; a file whose header does not read is
    not (reading it says what is wrong)."""
    from mnist_ops.idx import read_idx_shape

    try:
        return len(read_idx_shape(path)) == 1
    except (UserError, OSError):
        return False


def expand_inputs(paths: Iterable[str | os.PathLike], log: Callable[[str], None] | None = None) -> list[Path]:
    """Files as given; a directory contributes its image and IDX image files (sorted, not recursive). What a
    directory holds besides (its IDX label files too: a data set's folder) is said to `log`, so that nothing is left
    out unnoticed."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            entries = sorted(path.iterdir())
            found = [p for p in entries if p.is_file() and (
                p.suffix.lower() in IMAGE_SUFFIXES or p.name.endswith(IDX_SUFFIXES))]
            labels = [p for p in found if p.name.endswith(IDX_SUFFIXES) and _is_idx_labels(p)]
            found = [p for p in found if p not in labels]
            if not found and labels:
                raise UserError(f"{path}: only IDX label files here ({', '.join(p.name for p in labels[:2])}), no "
                                "images; pass the images file beside them (...-images-idx3-ubyte)")
            if not found:
                raise UserError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) or IDX image files in this "
                                "directory; pass the files themselves, or a folder that holds them")
            if labels and log is not None:
                log(f"{path}: left out {len(labels)} IDX label file(s) ({', '.join(p.name for p in labels[:2])}"
                    f"{', ...' if len(labels) > 2 else ''}): predict reads images, not labels")
            chosen = set(found + labels)
            skipped = [p for p in entries if p not in chosen and not p.name.startswith(".")]
            if skipped and log is not None:
                folders = sum(p.is_dir() for p in skipped)
                shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in skipped[:3])
                log(f"{path}: left out {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} that are not image or "
                    f"IDX files ({shown}{', ...' if len(skipped) > 3 else ''}; {folders} folder(s), not searched); "
                    "name them to read them")
            files += found
        elif path.is_file():
            files.append(path)
        elif path.exists():  # a device or a pipe: reading it could block or never end
            raise UserError(f"{path}: not a regular file or a directory; pass image files, IDX files or folders")
        else:
            raise UserError(f"{path}: no such file or directory")
    return files


def read_images(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[str, Image.Image | np.ndarray | UserError]]:
    """(name, picture) for each picture file, (name FILE[i], uint8 [H, W] as stored) for each image in an IDX file;
    (name, UserError) for a file that is not a usable image."""
    from mnist_ops.idx import read_idx

    for path in expand_inputs(paths):
        try:
            if not _is_idx(path):
                yield str(path), open_image(path.read_bytes(), str(path))
                continue
            images = read_idx(path)
        except UserError as error:
            yield str(path), error
            continue
        except OSError as error:  # a file that cannot be read is one bad input among many, not the end of the run
            yield str(path), UserError(f"{path}: cannot read it ({error.strerror or error})")
            continue
        if images.dim() == 1:
            yield str(path), UserError(f"{path}: an IDX file of labels (shape {tuple(images.shape)}), not of images; "
                                       "pass the images file beside it (...-images-idx3-ubyte)")
            continue
        if images.dim() != 3:
            yield str(path), UserError(f"{path}: IDX shape {tuple(images.shape)} is not a stack of images [N, H, W]")
            continue
        if len(images) == 0:  # nothing to print would look like success
            yield str(path), UserError(f"{path}: IDX file holds no images (shape {tuple(images.shape)})")
            continue
        for index, pixels in enumerate(images.numpy()):
            yield f"{path}[{index}]", pixels
