"""How good a set of teachers is before distilling it: each checkpoint's accuracy and their average's.

    python benchmarks/teacher_accuracy.py --validation 10000 RUN1/last.pt RUN2/last.pt ...
    python benchmarks/teacher_accuracy.py docs/teachers/*.pt          # on the test set

The average is distill.py's: the teachers' softmax outputs averaged (at temperature 1 here, which
ranks classes as any temperature does), on the images as the run evaluates them. With
--validation N it reads the held-out training images, as `mnist-ops train --validation N` does, and
load_teacher refuses teachers that trained on them. It also times the teachers' forward pass on a
batch of --batch-size images (the first evaluation images: the cost is the same on any), which is
what distilling adds to every training step.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from mnist_ops.batches import load_fit_data, normalize
from mnist_ops.distill import load_teacher
from mnist_ops.engine import autocast_context
from mnist_ops.errors import UserError
from mnist_ops.presets import build_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--validation", type=int, default=0, help="held-out training images (0: the test set)")
    parser.add_argument("--dataset", default="mnist", help="the teachers' data set (as `mnist-ops train --dataset`)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--batch-size", type=int, default=128, help="images per timed forward pass")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as each run of a study or compare_on_validation (one thread per run)
    try:
        config = build_config("lean-8k", None, {"validation": args.validation, "precision": args.precision,
                                                "channels_last": True, "dataset": args.dataset})
        data = load_fit_data(config)
        inputs = normalize(data.evaluation.images, data.mean, data.std).contiguous(memory_format=torch.channels_last)
        device = torch.device("cpu")
        for paths in [[path] for path in args.checkpoints] + ([args.checkpoints] if len(args.checkpoints) > 1 else []):
            teacher = load_teacher(config.replace(teacher=",".join(paths), distill_weight=0.5, distill_temperature=1.0),
                                   data.mean, data.std, device, torch.channels_last)
            with autocast_context(device, args.precision):
                predictions = torch.cat([teacher.probabilities(inputs[start:start + 1000]).argmax(dim=1)
                                         for start in range(0, len(inputs), 1000)])
                batch = inputs[:args.batch_size]
                teacher.probabilities(batch)  # warm-up
                start = time.perf_counter()
                for _ in range(20):
                    teacher.probabilities(batch)
                milliseconds = (time.perf_counter() - start) / 20 * 1000
            accuracy = (predictions == data.evaluation.labels).double().mean().item() * 100
            what = paths[0] if len(paths) == 1 else f"the average of {len(paths)}"
            print(f"{what}: {data.evaluation_name} accuracy {accuracy:.2f}%, forward {milliseconds:.1f} ms "
                  f"per batch of {args.batch_size} ({args.precision}, 1 thread)")
    except UserError as error:
        print(f"teacher_accuracy: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
