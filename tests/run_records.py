"""What a run learned: its metrics.jsonl without the wall-clock fields, which no rerun repeats
(test_train, test_replicas, test_faults compare runs by it)."""
from pathlib import Path

from mnist_ops.fileio import read_jsonl
from mnist_ops.train import TIMING_KEYS


def learned(run: Path) -> list[dict]:
    return [{key: value for key, value in record.items() if key not in TIMING_KEYS}
            for record in read_jsonl(Path(run) / "metrics.jsonl")]
