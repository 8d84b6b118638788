"""Export a checkpoint to ONNX for onnxruntime (`mnist-ops export`).

The graph is the eval-mode model with BatchNorm folded into the convs (where torch.fx can trace it), traced by
`torch.onnx.export(..., dynamo=True)` with a dynamic batch dimension. What a user of the
file needs besides the graph travels in its metadata: mean, std, model name, labels.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from mnist_ops.errors import UserError, require_extra

INPUT_NAME, OUTPUT_NAME = "image", "logits"


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost exception behind `error`, without terminal colour codes: the exporter's
    own message only says which of its steps failed."""
    seen = {id(error)}
    while (error.__cause__ or error.__context__) is not None and id(error.__cause__ or error.__context__) not in seen:
        error = error.__cause__ or error.__context__
        seen.add(id(error))
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def export_onnx(checkpoint_path: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Write `out` (model.onnx) from a checkpoint; returns the metadata written into it."""
    require_extra("export", "onnx", "onnxscript")
    import onnx
    import torch

    from mnist_ops.engine import fold_batchnorm, load_checkpoint, model_from_checkpoint, trained_on
    from mnist_ops.fileio import atomic_write_bytes

    out = Path(out)
    if out.suffix != ".onnx":
        raise UserError(f"--out {out}: name the file *.onnx")
    checkpoint = load_checkpoint(checkpoint_path)
    model = fold_batchnorm(model_from_checkpoint(checkpoint))
    trained = trained_on(checkpoint, checkpoint_path)
    dataset, labels, image_size = trained.dataset, trained.labels, trained.image_size
    # a batch of 2: an example batch of 1 would freeze the batch dimension
    example = torch.zeros(2, 1, *image_size)
    with torch.no_grad():
        if model(example).dtype != torch.float32:  # bf16 scores: numpy, and so onnxruntime's callers, have no bf16
            class Float32Scores(torch.nn.Module):
                def __init__(self, net: torch.nn.Module):
                    super().__init__()
                    self.net = net

                def forward(self, x: torch.Tensor) -> torch.Tensor:
                    return self.net(x).float()

            model = Float32Scores(model).eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    torch_log = logging.getLogger("torch")
    level = torch_log.level
    # the exporter logs the torchvision ops it skips, and on a failure dumps graphs and warnings to stderr: the
    # user gets one line instead (below)
    torch_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecations inside the exporter
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},),
                                        external_data=False, verbose=False)
    except Exception as error:  # a model of the user's own that torch.export cannot trace
        raise UserError(f"cannot export model {checkpoint['model_name']} to ONNX: torch.export cannot trace its "
                        f"forward() ({_root_cause(error)}); write it without Python branches on tensor values "
                        "(torch.where instead of `if`)") from None
    finally:
        torch_log.setLevel(level)
    metadata = {
        "mean": repr(float(checkpoint["mean"])), "std": repr(float(checkpoint["std"])),
        "model_name": checkpoint["model_name"], "dataset": dataset,
        "transposed": json.dumps(trained.transposed),
        "labels": json.dumps(labels),
        "epoch": str(checkpoint["epoch"]),
        "test_accuracy": str(checkpoint["metrics"].get("test_accuracy", "")),
        "producer": "mnist-ops export",
    }
    proto = program.model_proto
    if proto.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value"):  # the exporter fell back silently
        raise UserError(f"cannot export model {checkpoint['model_name']} to ONNX with a dynamic batch: its forward() "
                        "turns the batch size into a fixed number (len(x)?); write x.flatten(1) or x.size(0) instead")
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    atomic_write_bytes(out, proto.SerializeToString())
    return metadata
