"""Export a checkpoint to ONNX for onnxruntime (`mnist-ops export`).

The graph is the eval-mode model with BatchNorm folded into the convs (where torch.fx can trace it), traced by
`torch.onnx.export(..., dynamo=True)` with a dynamic batch dimension. What a user of the
file needs besides the graph travels in its metadata: mean, std, model name, labels.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

from mnist_ops.errors import UserError, require_extra

INPUT_NAME, OUTPUT_NAME = "image", "logits"


def export_onnx(checkpoint_path: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Write `out` (model.onnx) from a checkpoint; returns the metadata written into it."""
    require_extra("export", "onnx", "onnxscript")
    import onnx
    import torch

    from mnist_ops.data import dataset_info
    from mnist_ops.engine import fold_batchnorm, load_checkpoint, model_from_checkpoint
    from mnist_ops.fileio import atomic_write_bytes

    out = Path(out)
    if out.suffix != ".onnx":
        raise UserError(f"--out {out}: name the file *.onnx")
    checkpoint = load_checkpoint(checkpoint_path)
    model = fold_batchnorm(model_from_checkpoint(checkpoint))
    dataset = checkpoint["config"].get("dataset", "mnist")
    # a batch of 2: an example batch of 1 would freeze the batch dimension
    example = torch.zeros(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # it lists torchvision ops it skips, which do not concern these models
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecations inside the exporter
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},),
                                        external_data=False, verbose=False)
    except Exception as error:  # a model of the user's own that torch.export cannot trace
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"cannot export model {checkpoint['model_name']} to ONNX ({first[:200]}); "
                        "torch.export must be able to trace its forward()") from None
    finally:
        exporter_log.setLevel(level)
    metadata = {
        "mean": repr(float(checkpoint["mean"])), "std": repr(float(checkpoint["std"])),
        "model_name": checkpoint["model_name"], "dataset": dataset,
        "labels": json.dumps(list(dataset_info(dataset).classes)),
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
