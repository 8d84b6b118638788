"""Models, built by reference with `create_model(reference, **kwargs)` (timm's create_model is the model).

A reference is one of:
- a name registered here with `@register_model` (`mnist-ops list` shows them),
- a name an installed package registers under the entry point group `mnist_ops.models`,
- `path/to/nets.py:Net` or `package.module:build`: a class or a function returning an `nn.Module`.
Only the code a reference names is imported, and only when the model is built.

Keyword arguments reach the builder as in timm: one it cannot take is an error naming it. `defaults`
(a preset's values, the data's class count) are passed where the builder takes them and left out,
with a log line, where it does not: a student's `Net()` takes no `dropout`.

The built-in nets are `nn.Sequential`s of named blocks in forward order (`conv1.conv`, `conv1.bn`,
`conv1.relu`, `conv1.drop`, ..., `head`), ending in logits [N, classes]. A net with dropout keeps its
`nn.Dropout` layers at p = 0, so its state-dict keys are the same whatever the dropout; the
receptive-field table walks the layers.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
import weakref
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from mnist_ops.config import Config
from mnist_ops.errors import UserError, did_you_mean
from mnist_ops.presets import PRESETS

DEFAULT_DROPOUT = 0.05  # the value the reference repository's models use
ENTRY_POINT_GROUP = "mnist_ops.models"
MODEL_KEYS = ("dropout",)  # config keys handed to the model builder (plus the data's num_classes)

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_BUILT: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()  # model -> its build record


def register_model(name: str) -> Callable:
    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' registered twice")
        _REGISTRY[name] = builder
        return builder
    return decorator


def list_models() -> list[str]:
    """The built-in models' names."""
    return sorted(_REGISTRY)


def entry_point_models() -> dict[str, importlib.metadata.EntryPoint]:
    """Models that installed packages register under `mnist_ops.models` (name -> entry point, not loaded)."""
    return {entry.name: entry for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


# ----------------------------------------------------------------------- references

@dataclass(frozen=True)
class ModelSource:
    """Where a model came from; a checkpoint keeps it (plus the kwargs) to rebuild the model."""
    reference: str  # as the user wrote it
    kind: str  # "registered", "entry point", "file" or "module"
    target: str  # what to resolve again: the name, or "/absolute/path.py:Attr", or "module:attr"
    file: str | None = None  # the file that defines it (not for registered models)
    sha256: str | None = None  # of that file
    distribution: str | None = None  # an entry point's package, "name version"


def _sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


@contextmanager
def _on_sys_path(directory: str):
    """`directory` first on sys.path while the user's code imports (its sibling modules resolve)."""
    sys.path.insert(0, directory)
    try:
        yield
    finally:
        if directory in sys.path:
            sys.path.remove(directory)


def _import_file(path: Path, reference: str):
    if not path.is_file():
        raise UserError(f"model '{reference}': file {path} not found; check the path before the ':'")
    digest = _sha256(path)
    name = f"mnist_ops_user_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest[:12]}"
    if name in sys.modules:  # the same file, unchanged, imported earlier in this process
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"model '{reference}': {path} is not a Python module; name a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with _on_sys_path(str(path.parent)):
            spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:
        del sys.modules[name]
        raise UserError(f"model '{reference}': importing {path} raised {first_line(error)}") from None
    return module


def _import_module(name: str, reference: str):
    try:
        with _on_sys_path(os.getcwd()):  # as `python -m` and uvicorn do: modules in the working directory
            return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and name.startswith(error.name):
            raise UserError(f"model '{reference}': no module named '{error.name}' (for a file, write "
                            f"path/to/file.py:{reference.rpartition(':')[2]})") from None
        raise UserError(f"model '{reference}': importing {name} raised {first_line(error)}") from None
    except (Exception, SystemExit) as error:
        raise UserError(f"model '{reference}': importing {name} raised {first_line(error)}") from None


def _attribute(module, attribute: str, where: str, reference: str):
    value = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            defined = sorted(key for key, item in vars(module).items()
                             if not key.startswith("_") and callable(item)
                             and getattr(item, "__module__", None) == module.__name__)
            raise UserError(f"model '{reference}': {where} has no attribute '{attribute}'"
                            + (f"; it defines {', '.join(defined)}" if defined else ""))
        value = getattr(value, part)
    return value


def resolve_model(reference: str) -> tuple[Callable[..., nn.Module], ModelSource]:
    """The builder a reference names, and where it came from. Imports only the code it names."""
    if not isinstance(reference, str) or not reference:
        raise UserError(f"model reference must be a non-empty string, got {reference!r}")
    if ":" not in reference:
        if reference in _REGISTRY:
            return _REGISTRY[reference], ModelSource(reference, "registered", reference)
        entry_points = entry_point_models()
        if reference not in entry_points:
            known = list_models() + sorted(entry_points)
            raise UserError(f"unknown model '{reference}'{did_you_mean(reference, known)}; choose one of: "
                            f"{', '.join(known)}, "
                            "or name your own: path/to/nets.py:Net or package.module:build")
        entry = entry_points[reference]
        try:
            builder = entry.load()
        except (Exception, SystemExit) as error:
            raise UserError(f"model '{reference}': loading entry point {entry.value} raised "
                            f"{first_line(error)}") from None
        module = sys.modules.get(entry.module)
        file = getattr(module, "__file__", None)
        package = f"{entry.dist.name} {entry.dist.version}" if entry.dist else None
        return builder, ModelSource(reference, "entry point", reference, file,
                                    _sha256(file) if file else None, package)
    location, _, attribute = reference.rpartition(":")
    if not location or not attribute:
        raise UserError(f"model '{reference}': write path/to/nets.py:Net or package.module:build")
    if location.endswith(".py") or "/" in location or os.sep in location:
        path = Path(location).expanduser().resolve()
        module = _import_file(path, reference)
        builder = _attribute(module, attribute, str(path), reference)
        source = ModelSource(reference, "file", f"{path}:{attribute}", str(path), _sha256(path))
    else:
        module = _import_module(location, reference)
        builder = _attribute(module, attribute, f"module {location}", reference)
        file = getattr(module, "__file__", None)
        source = ModelSource(reference, "module", reference, file, _sha256(file) if file else None)
    if isinstance(builder, nn.Module):
        raise UserError(f"model '{reference}' is a model instance; name its class or a function that builds it")
    if inspect.isclass(builder) and not issubclass(builder, nn.Module):
        raise UserError(f"model '{reference}' is a class but not a torch.nn.Module subclass")
    if not callable(builder):
        raise UserError(f"model '{reference}' is a {type(builder).__name__}, not an nn.Module class "
                        "or a function returning one")
    return builder, source


def _takes(builder: Callable) -> Callable[[str], bool]:
    """Whether the builder takes a keyword argument of that name."""
    if inspect.isclass(builder) and builder.__init__ is nn.Module.__init__:  # no __init__ of its own:
        return lambda key: False  # nn.Module's (*args, **kwargs) takes nothing useful
    try:
        parameters = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):  # no signature to read: pass everything, as timm does
        return lambda key: True
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return lambda key: True
    names = {parameter.name for parameter in parameters
             if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)}
    return names.__contains__


def _required_parameters(builder: Callable) -> list[str]:
    """The builder's parameters without a default (none known when its signature cannot be read)."""
    try:
        parameters = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.default is inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                           inspect.Parameter.KEYWORD_ONLY)]


def create_model(reference: str, *, defaults: dict[str, Any] | None = None,
                 log: Callable[[str], None] | None = None, **kwargs: Any) -> nn.Module:
    """Build the model a reference names with `kwargs`, plus those `defaults` its builder takes.

    A keyword in `kwargs` the builder cannot take is an error naming it, except `dropout = 0`
    for a model without active dropout layers (a model without dropout is a dropout-0 model).
    """
    builder, source = resolve_model(reference)
    takes = _takes(builder)
    cannot = {key: value for key, value in kwargs.items() if not takes(key)}
    zero_dropout = "dropout" in cannot and cannot["dropout"] == 0
    if zero_dropout:
        del cannot["dropout"]
    if cannot:
        key, value = next(iter(cannot.items()))
        raise UserError(f"model '{reference}' cannot take {key} = {value!r}: its builder has no '{key}' "
                        f"parameter; remove {key} from your flags or config, or use a model that has one")
    passed = {key: value for key, value in kwargs.items() if takes(key)}
    left_out = []
    for key, value in (defaults or {}).items():
        if key in kwargs:
            continue
        if takes(key):
            passed[key] = value
        else:
            left_out.append(f"{key} = {value!r}")
    dropout = passed.get("dropout")
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise UserError(f"dropout must be in [0, 1), got {dropout}")
    needed = [name for name in _required_parameters(builder) if name not in passed]
    if needed:
        raise UserError(f"model '{reference}' needs {', '.join(needed)}, and mnist-ops passes a net only num_classes and "
                        f"dropout (to one that takes them); give {needed[0]} a default, or name a function that "
                        "builds the net with the values you want")
    if left_out and log is not None:
        log(f"model {reference} takes no {', '.join(item.split(' = ')[0] for item in left_out)}: "
            f"left out {', '.join(left_out)}")
    try:
        model = builder(**passed)
    except UserError:
        raise
    except (Exception, SystemExit) as error:  # sys.exit() in a builder of yours would end the CLI without a word
        raise UserError(f"model '{reference}': building it raised {first_line(error)}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"model '{reference}' returned a {type(model).__name__}, not a torch.nn.Module")
    if zero_dropout and any(isinstance(m, DROPOUT_LAYERS) and m.p > 0 for m in model.modules()):
        raise UserError(f"model '{reference}' has dropout layers of its own and no 'dropout' parameter: "
                        "it cannot honour dropout = 0; remove dropout from your flags or config")
    _BUILT[model] = {**asdict(source), "kwargs": passed}
    return model


def model_kwargs(config) -> tuple[dict[str, Any], dict[str, Any]]:
    """(explicit, defaults): the config's model keys whose value differs from its preset's are the
    user's own (an error if the model cannot take them); the others are the preset's defaults."""
    preset = PRESETS.get(config.preset, Config())
    explicit = {key: getattr(config, key) for key in MODEL_KEYS if getattr(config, key) != getattr(preset, key)}
    defaults = {key: getattr(config, key) for key in MODEL_KEYS if key not in explicit}
    return explicit, defaults


def build_record(model: nn.Module) -> dict:
    """How `create_model` built this model: its source and the kwargs it passed (for checkpoints)."""
    return dict(_BUILT[model])


# A checkpoint names the code that builds its model; rebuilding imports that code and calls it. A
# checkpoint from elsewhere could name any file or module, so user code is rebuilt only when this
# machine trained with it (`trust` records it at train time) or the user says they trust it.
TRUST_ENV = "MNIST_OPS_TRUST_MODEL_CODE"  # set to 1: rebuild any checkpoint's model code


def _trust_file() -> Path:
    return Path(os.environ.get("MNIST_OPS_TRUSTED_MODELS") or Path.home() / ".config" / "mnist-ops" / "trusted-models")


def _trust_line(record: dict) -> str:
    return f"{record['kind']}\t{record['target']}\t{record['sha256']}"


def trust(record: dict) -> None:
    """Remember that this machine trained with this code (a file or module model), so that its
    checkpoints rebuild without asking."""
    if record.get("kind") not in ("file", "module"):
        return
    from mnist_ops.fileio import DirectoryLock, atomic_write_bytes

    path, line = _trust_file(), _trust_line(record)
    try:  # locked (its own lock file: the folder may be a run directory that fit has locked)
        with DirectoryLock(path.parent, "trust list", name=f".{path.name}.lock").acquire(wait=True):
            known = path.read_text().splitlines() if path.is_file() else []
            if line not in known:
                atomic_write_bytes(path, "".join(entry + "\n" for entry in [*known, line]).encode())
    except OSError:  # an unwritable home: checkpoints then ask for MNIST_OPS_TRUST_MODEL_CODE=1
        pass


def _check_trusted(record: dict) -> None:
    if record["kind"] not in ("file", "module") or os.environ.get(TRUST_ENV) == "1":
        return
    path = _trust_file()
    if path.is_file() and _trust_line(record) in path.read_text().splitlines():
        return
    raise UserError(f"this checkpoint's model '{record['reference']}' is built by code ({record['file']}) that was "
                    f"not trained with on this machine, and rebuilding it would run that code; if you trust it, "
                    f"set {TRUST_ENV}=1")


def rebuild_model(record: dict) -> nn.Module:
    """The model a checkpoint's build record describes, refusing a source file that moved or changed
    and code this machine did not train with (unless the user trusts it)."""
    reference = record["reference"]
    if record["kind"] == "file":
        if not Path(record["file"]).is_file():
            raise UserError(f"model '{reference}' was built from {record['file']}, which is gone (moved or "
                            "deleted); put the file back there to use this checkpoint")
        if _sha256(record["file"]) != record["sha256"]:
            raise UserError(f"model '{reference}': {record['file']} changed since this checkpoint was written "
                            "(its sha256 differs); restore the version you trained with")
    _check_trusted(record)
    with importable_as_recorded(record):
        if record["kind"] == "module":  # found before it is imported: a module of the same name elsewhere (in the
            with _on_sys_path(os.getcwd()):  # working directory) would run on import; searched as _import_module does
                origin = _module_origin(record["target"].rpartition(":")[0])
            if origin and os.path.realpath(origin) != os.path.realpath(record["file"]):
                raise UserError(f"model '{reference}' now comes from {origin}, which differs from {record['file']} "
                                "that this checkpoint was trained with (moved or changed); install or restore that "
                                "version, or run from another directory")
        model = create_model(record["target"], **record["kwargs"])
    now = _BUILT[model]
    if record["kind"] in ("module", "entry point") and (now["file"], now["sha256"]) != (record["file"], record["sha256"]):
        raise UserError(f"model '{reference}' now comes from {now['file']}, which differs from {record['file']} "
                        "that this checkpoint was trained with (moved or changed); install or restore that version")
    _BUILT[model] = dict(record)
    return model


def _module_origin(name: str) -> str | None:
    """The file `import name` would load, found without running any of it (a package's __init__ included);
    None if it is not found."""
    from importlib.machinery import PathFinder

    if name in sys.modules:
        return getattr(sys.modules[name], "__file__", None)
    path, spec, parts = None, None, name.split(".")
    for depth in range(1, len(parts) + 1):
        prefix = ".".join(parts[:depth])
        if prefix in sys.modules and depth < len(parts):  # a package imported already: search where it is
            path = getattr(sys.modules[prefix], "__path__", None)
            continue
        spec = PathFinder.find_spec(prefix, path)
        if spec is None:
            return None
        path = spec.submodule_search_locations
    return spec.origin if spec is not None else None


def importable_as_recorded(record: dict):
    """A context in which a module model (package.module:build) imports from where it was built, /proj for
    /proj/package/module.py, so a run resumes and a checkpoint loads from any working directory (which still comes
    first). Other records: no change."""
    if record.get("kind") != "module" or not record.get("file"):
        return nullcontext()
    file, depth = Path(record["file"]), record["target"].rpartition(":")[0].count(".") + 1
    parents = file.parents
    return _on_sys_path(str(parents[min(depth if file.name == "__init__.py" else depth - 1, len(parents) - 1)]))


def _eval_forward(model: nn.Module, x: torch.Tensor):
    """The model's eval-mode output for `x`, without gradients; the model is left in the mode it was in."""
    training = model.training
    try:
        with torch.no_grad():
            return model.eval()(x)
    finally:
        model.train(training)


def _runs_at_28(model: nn.Module, num_classes: int | None = None) -> bool:
    """Whether the net runs on MNIST's 28x28 images (and, given num_classes, returns [N, num_classes] there)."""
    try:
        out = _eval_forward(model, torch.zeros(2, 1, 28, 28))
    except (Exception, SystemExit):
        return False
    return num_classes is None or (isinstance(out, torch.Tensor) and tuple(out.shape) == (2, num_classes))


def _built_for_28(model: nn.Module, image_size: tuple[int, int], num_classes: int | None = None) -> str:
    """The hint for a net that fails or gives the wrong shape on images other than MNIST's 28x28, and works there:
    '' for any other net."""
    if tuple(image_size) == (28, 28) or not _runs_at_28(model, num_classes):
        return ""
    return (f"; it was built for MNIST's 28x28 images, and these are {image_size[0]}x{image_size[1]}: train a net for "
            "them (fast-8k takes 20x20 and up; your own net can end in nn.AdaptiveAvgPool2d)")


def raised_in_own_net(error: BaseException, model: nn.Module) -> bool:
    """Whether the error came from a net of the user's own: its source file is on the error's traceback."""
    import traceback

    # the recorded file, and the file its class's code was compiled from: a file imported once per process and
    # content (_import_file) keeps the path it was first imported from, which a traceback then names
    files = {build_record(model).get("file")}
    if not type(model).__module__.startswith("torch."):  # not nn.Sequential & co. that a builder returns
        files.add(getattr(sys.modules.get(type(model).__module__), "__file__", None))
    own = {os.path.realpath(file) for file in files if file}
    frames = traceback.extract_tb(error.__traceback__)
    return any(os.path.realpath(frame.filename) in own for frame in frames)


def check_output(model: nn.Module, reference: str, num_classes: int, image_size: tuple[int, int] = (28, 28)) -> None:
    """Eval-mode forwards on a [2, 1, H, W] batch and on one image: the model must return scores [N, num_classes]
    (a `.squeeze()` that also drops the batch axis of one image would fail predict, serve and a last batch of 1).
    It must also have a parameter to train."""
    x = torch.randn((2, 1, *image_size), generator=torch.Generator().manual_seed(0))
    try:
        out = _eval_forward(model, x)
    except (Exception, SystemExit) as error:
        problem = f"model '{reference}' fails on a batch of shape {list(x.shape)}: {first_line(error)}"
        raise UserError(problem + _built_for_28(model, image_size)) from None
    shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        hint = _built_for_28(model, image_size, num_classes)
        raise UserError(f"model '{reference}' returns {shape} for a batch of shape {list(x.shape)}; it must return "
                        f"[N, {num_classes}]" + (hint or f": one score per class for the data's {num_classes} classes"))
    try:
        single = _eval_forward(model, x[:1])
    except (Exception, SystemExit) as error:
        raise UserError(f"model '{reference}' takes a batch of 2 images but fails on one (shape {list(x[:1].shape)}):"
                        f" {first_line(error)}; predict and serve give it one image at a time (a .squeeze() drops "
                        "the batch axis too: use .flatten(1))") from None
    if not isinstance(single, torch.Tensor) or tuple(single.shape) != (1, num_classes):
        shape = list(single.shape) if isinstance(single, torch.Tensor) else type(single).__name__
        raise UserError(f"model '{reference}' returns {shape} for one image (shape [1, 1, {image_size[0]}, "
                        f"{image_size[1]}]); it must return [1, {num_classes}] (a .squeeze() drops the batch axis too: "
                        "use .flatten(1))")
    if not out.is_floating_point():
        raise UserError(f"model '{reference}' returns {out.dtype} scores; return floating-point logits (the loss is "
                        "cross-entropy, and its gradient needs them)")
    if (out >= 0).all() and torch.allclose(out.float().sum(dim=1), torch.ones(2), atol=1e-4):
        raise UserError(f"model '{reference}' returns probabilities (softmax: rows sum to 1); return logits or "
                        "log_softmax, since the loss is cross-entropy on scores")
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise UserError(f"model '{reference}' has no trainable parameters (none with requires_grad); "
                        "give it a layer with weights, such as nn.Conv2d or nn.Linear")
    if tuple(image_size) != (28, 28):
        check_sees_the_image(model, reference, tuple(image_size))


# A net built for 28 x 28 whose fixed pool sees only part of a larger map trains on, blind to a border strip: lean-8k
# ignores 23% of each 32 x 32 image and none of a 28 x 28 one (tests/test_models.py). A net may be blind to MNIST's empty
# border by design (an unpadded pool that drops the last row: a test's student net, 14%), so what is refused is a
# net blind to MAX_IGNORED more of the data's images than of MNIST's.
MAX_IGNORED = 0.10  # a global max-pool after unpadded convs reaches corner pixels rarely: 1% unreached in 64 probes
PROBES = 64  # a max-pool or a ReLU passes one probe's gradient to only some pixels; 64 probes reach nearly all


def check_sees_the_image(model: nn.Module, reference: str, image_size: tuple[int, int]) -> None:
    """UserError for a net built for 28 x 28 that would be blind to part of images of another size."""
    try:
        at_28 = ignored_share(model, (28, 28), strict=True)
    except (Exception, SystemExit):  # a net for another size only: its blindness there is by its design
        return
    ignored = ignored_share(model, image_size)
    if ignored - at_28 > MAX_IGNORED:
        raise UserError(f"model '{reference}' ignores {ignored:.0%} of each {image_size[0]}x{image_size[1]} image (no "
                        f"score depends on those pixels; {at_28:.0%} at 28x28): it was built for MNIST's size; train a "
                        "net that pools its whole last map (fast-8k, or your own with nn.AdaptiveAvgPool2d)")


def ignored_share(model: nn.Module, image_size: tuple[int, int], strict: bool = False) -> float:
    """The share of an image's pixels that no score depends on: zero gradient for every one of PROBES random
    eval-mode inputs. A net the input's gradient cannot reach (a threshold, a detach) is not this check's to judge."""
    x = torch.randn((PROBES, 1, *image_size), generator=torch.Generator().manual_seed(0), requires_grad=True)
    training = model.training
    try:
        (gradient,) = torch.autograd.grad(model.eval()(x).float().sum(), x, allow_unused=True)
    except (Exception, SystemExit):
        if strict:  # the caller asks whether the net runs at this size at all
            raise
        return 0.0
    finally:
        model.train(training)
    return 0.0 if gradient is None else float((gradient == 0).all(dim=0).float().mean())


# ----------------------------------------------------------------------- dropout

class FastDropout(nn.Module):
    """Dropout whose mask comes from random bytes of a numpy PCG64 generator, seeded by one draw
    from torch's generator (so `torch.manual_seed` still fixes every mask).

    torch's CPU dropout draws each element from one serial generator: masks take 42% of
    seed-regularized's bf16 channels_last train step, and one layer's forward + backward on a
    [128, 16, 26, 26] bf16 tensor takes 5.86 ms against 2.49 ms here (`python benchmarks/dropout.py`,
    docs/speed.md). The drop probability is rounded to a multiple of 1/65536 and
    kept values are scaled by 1 / (keep probability), so the layer stays unbiased.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.threshold = round(p * 65536)  # a uint16 below it drops the element
        self.scale = 65536 / (65536 - self.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        import numpy as np

        seed = int(torch.randint(0, 2**62, (1,)).item())
        bits = np.frombuffer(np.random.default_rng(seed).bytes(2 * x.numel()), dtype=np.uint16)
        keep = torch.from_numpy(bits >= self.threshold)
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            n, c, h, w = x.shape
            keep = keep.view(n, h, w, c).permute(0, 3, 1, 2)  # the mask in x's own layout
        else:
            keep = keep.view(x.shape)
        return x * keep.to(x.device, x.dtype).mul_(self.scale)  # the mask is drawn on the CPU, x may be on a GPU

    def extra_repr(self) -> str:
        return f"p={self.p}"


DROPOUT_LAYERS = (nn.modules.dropout._DropoutNd, FastDropout)  # torch's dropout layers of every kind, and ours


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every nn.Dropout in `model` by FastDropout with the same p; returns how many."""
    replaced = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Dropout):
                setattr(parent, name, FastDropout(child.p))
                replaced += 1
    return replaced


# ----------------------------------------------------------------------- layers

def conv_block(in_channels: int, out_channels: int, kernel_size: int = 3, *, batch_norm: bool,
               dropout: float | None, bias: bool = True, order: str = "bn-relu-drop", padding: int = 0) -> nn.Sequential:
    """Conv, then BatchNorm / ReLU / Dropout in the given order, named conv, bn, relu, drop.
    `dropout=None` leaves Dropout out (a net without dropout); p = 0 keeps the layer, so keys never shift.

    The ReLU works in place: none of the layers before it needs its own output for the backward pass (a conv
    and BatchNorm keep their inputs, Dropout its mask), so the numbers are the same, bit for bit
    (tests/test_models.py), and one allocation and pass over memory less: fast-8k's train step ran 1.07x
    faster (9,417 and 9,909 against 8,856 and 8,981 img/s, one thread, bf16, channels_last, batch 128;
    a scratch script alternating the two, nothing else running)."""
    parts = {"bn": nn.BatchNorm2d(out_channels) if batch_norm else None, "relu": nn.ReLU(inplace=True),
             "drop": nn.Dropout(dropout) if dropout is not None else None}
    layers = [("conv", nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias))]
    layers += [(part, parts[part]) for part in order.split("-") if parts[part] is not None]
    return nn.Sequential(OrderedDict(layers))


class GlobalAvgPool(nn.Module):
    """The mean over each channel's whole map, whatever its size: a net that ends with it takes images of any
    size, as the race's training crops (config train_crop). The same kernel as nn.AvgPool2d given the map's
    size, so the same bits (tests/test_models.py)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, x.shape[-2:])


class Classifier(nn.Sequential):
    """Named blocks in forward order; the output is flattened to logits [N, classes]."""

    def __init__(self, **blocks: nn.Module):
        super().__init__(OrderedDict(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).flatten(1)


# ----------------------------------------------------------------------- the seed's nets

def _seed_net(batch_norm: bool, dropout: float | None, num_classes: int) -> Classifier:
    def block(cin: int, cout: int, k: int = 3) -> nn.Sequential:
        return conv_block(cin, cout, k, batch_norm=batch_norm, dropout=dropout)

    return Classifier(
        conv1=block(1, 32), conv2=block(32, 64), conv3=block(64, 128),
        pool1=nn.MaxPool2d(2, 2),
        conv4=block(128, 16, 1), conv5=block(16, 32), conv6=block(32, 64), conv7=block(64, 128),
        conv8=block(128, 256),
        head=nn.Conv2d(256, num_classes, 3),
    )


@register_model("seed-baseline")
def seed_baseline(num_classes: int = 10) -> nn.Module:
    """The seed's previous step: 9 convs, no BatchNorm, no Dropout (509,946 parameters)."""
    return _seed_net(batch_norm=False, dropout=None, num_classes=num_classes)


@register_model("seed-regularized")
def seed_regularized(dropout: float = DEFAULT_DROPOUT, num_classes: int = 10) -> nn.Module:
    """The seed's network: Conv -> BatchNorm -> ReLU -> Dropout blocks (511,386 parameters)."""
    return _seed_net(batch_norm=True, dropout=dropout, num_classes=num_classes)


# ------------------------------------------------------------------- the 7,758 lean net

def _lean_net(dropout: float | None, num_classes: int, batch_norm: bool = True) -> Classifier:
    def block(cin: int, cout: int) -> nn.Sequential:
        return conv_block(cin, cout, batch_norm=batch_norm, dropout=dropout, bias=not batch_norm,
                          order="bn-drop-relu")

    return Classifier(
        conv1=block(1, 10), conv2=block(10, 10), conv3=block(10, 10), conv4=block(10, 10),
        pool1=nn.MaxPool2d(2, 2),
        conv5=block(10, 10), conv6=block(10, 16), conv7=block(16, 16),
        gap=nn.AvgPool2d(4),
        head=nn.Conv2d(16, num_classes, 1, bias=False),
    )


@register_model("seed-lean")
def seed_lean(dropout: float = DEFAULT_DROPOUT, num_classes: int = 10) -> nn.Module:
    """The reference repository's 7,758-parameter net: 7 bias-free convs + BN + Dropout + ReLU, GAP, 1x1."""
    return _lean_net(dropout, num_classes)


# The same lean net without its regularizers: the rungs of the regularization study.
@register_model("seed-lean-plain")
def seed_lean_plain(num_classes: int = 10) -> nn.Module:
    """seed-lean without BatchNorm and Dropout (convs get biases instead of BN shifts).

    He (kaiming-normal) init: with PyTorch's default init this 8-conv net without BatchNorm
    stays at chance (11.7% after 156 SGD steps at lr 0.05 or 0.01; He init: 66.1%), and the
    study would measure "BatchNorm makes it trainable" instead of what it regularizes.
    """
    model = _lean_net(dropout=None, num_classes=num_classes, batch_norm=False)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


@register_model("seed-lean-bn")
def seed_lean_bn(num_classes: int = 10) -> nn.Module:
    """seed-lean with BatchNorm but no Dropout."""
    return _lean_net(dropout=None, num_classes=num_classes)


# ------------------------------------------------------------- the < 8k challenge nets

def compact_net(widths: tuple[int, ...], dropout: float, num_classes: int) -> Classifier:
    """Three 3x3 convs, max-pool, a 1x1 squeeze, three 3x3 convs, global average pool, 1x1 to logits.

    widths = (c1, c2, c3, squeeze, c4, c5, c6); every conv is bias-free and followed by BN, ReLU, Dropout.
    28 -> 26 -> 24 -> 22 -> pool 11 -> 11 -> 9 -> 7 -> 5 -> GAP 1; receptive field 28.
    """
    c1, c2, c3, squeeze, c4, c5, c6 = widths

    def block(cin: int, cout: int, k: int = 3) -> nn.Sequential:
        return conv_block(cin, cout, k, batch_norm=True, dropout=dropout, bias=False)

    return Classifier(
        conv1=block(1, c1), conv2=block(c1, c2), conv3=block(c2, c3),
        pool1=nn.MaxPool2d(2, 2),
        conv4=block(c3, squeeze, 1), conv5=block(squeeze, c4), conv6=block(c4, c5), conv7=block(c5, c6),
        gap=nn.AvgPool2d(5),
        head=nn.Conv2d(c6, num_classes, 1, bias=False),
    )


@register_model("lean-8k")
def lean_8k(dropout: float = DEFAULT_DROPOUT, num_classes: int = 10) -> nn.Module:
    """7,588 parameters: the < 8,000 challenge net."""
    return compact_net((8, 10, 16, 8, 12, 16, 16), dropout, num_classes)


@register_model("lean-5k")
def lean_5k(dropout: float = DEFAULT_DROPOUT, num_classes: int = 10) -> nn.Module:
    """The < 5,000 stretch net."""
    return compact_net((6, 8, 12, 6, 10, 12, 12), dropout, num_classes)


# ------------------------------------------------------------- the racing net

@register_model("fast-8k")
def fast_8k(num_classes: int = 10) -> nn.Module:
    """7,568 parameters: a 3x3 conv to 8 channels, a max-pool, 3x3 convs to 12, 16, 16, 16, GAP, 1x1 head.

    28 -> 26 -> pool 13 -> 11 -> 9 -> 7 -> 5 -> GAP; its GAP pools the whole map, so it also takes smaller
    training crops (train_crop: 24 -> 22 -> 11 -> 9 -> 7 -> 5 -> 3 -> GAP). Pooling after the first conv does lean-8k's
    costliest convs at a quarter of the pixels: 15,035 against 7,522 img/s for lean-8k's train step
    (bf16, channels_last, 2 copies, batch 256; docs/records.md). The lean-8k-fast race's net.
    """
    return early_pool_net((8, 12, 16, 16, 16), num_classes)


def early_pool_net(widths: tuple[int, ...], num_classes: int) -> Classifier:
    """A 3x3 conv, a max-pool, four 3x3 convs, global average pool, 1x1 head; every conv bias-free with BN, ReLU.

    widths = (c1, c2, c3, c4, c5). 28 -> 26 -> pool 13 -> 11 -> 9 -> 7 -> 5 -> GAP; receptive field 20 before the GAP,
    which averages whatever map it gets (GlobalAvgPool): images from 20 x 20 up.
    """
    c1, c2, c3, c4, c5 = widths

    def block(cin: int, cout: int) -> nn.Sequential:
        return conv_block(cin, cout, batch_norm=True, dropout=None, bias=False)

    return Classifier(conv1=block(1, c1), pool1=nn.MaxPool2d(2, 2), conv2=block(c1, c2), conv3=block(c2, c3),
                      conv4=block(c3, c4), conv5=block(c4, c5), gap=GlobalAvgPool(),
                      head=nn.Conv2d(c5, num_classes, 1, bias=False))


# ------------------------------------------------------------- the < 2k net: separable convs

def separable_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Depthwise 3x3 (one filter per channel), pointwise 1x1 (mixes channels), BatchNorm, ReLU.

    9c + c*c' weights where a full 3x3 conv has 9*c*c': what buys width below 2,000 parameters.
    """
    return nn.Sequential(OrderedDict([
        ("depthwise", nn.Conv2d(in_channels, in_channels, 3, groups=in_channels, bias=False)),
        ("pointwise", nn.Conv2d(in_channels, out_channels, 1, bias=False)),
        ("bn", nn.BatchNorm2d(out_channels)), ("relu", nn.ReLU(inplace=True)),  # as in conv_block
    ]))


def separable_net(widths: tuple[int, ...], num_classes: int) -> Classifier:
    """A full 3x3 conv, a separable block, max-pool, three separable blocks, global average pool, 1x1.

    28 -> 26 -> 24 -> pool 12 -> 10 -> 8 -> 6 -> GAP 1. On the validation split, seed 1, with the
    lean-2k recipe, widths (8, 12, 16, 20, 20) (1,936 parameters) ended at 99.20%, and `compact_net`
    at widths (4, 4, 8, 4, 6, 8, 8) (1,888 parameters) at 99.06%. At 8k the full convs win: widths
    (12, 24, 32, 48, 48) (6,856 parameters) read 99.41, 99.46, 99.45% in the last 3 epochs, against
    99.51, 99.48, 99.49% for lean-8k, both with rotation alone. Commands: benchmarks/candidate_nets.py.
    """
    c1, c2, c3, c4, c5 = widths
    return Classifier(
        conv1=conv_block(1, c1, batch_norm=True, dropout=None, bias=False), conv2=separable_block(c1, c2),
        pool1=nn.MaxPool2d(2, 2),
        conv3=separable_block(c2, c3), conv4=separable_block(c3, c4), conv5=separable_block(c4, c5),
        gap=nn.AvgPool2d(6),
        head=nn.Conv2d(c5, num_classes, 1, bias=False),
    )


@register_model("lean-2k")
def lean_2k(num_classes: int = 10) -> nn.Module:
    """1,936 parameters: the < 2,000 net (no dropout)."""
    return separable_net((8, 12, 16, 20, 20), num_classes)
