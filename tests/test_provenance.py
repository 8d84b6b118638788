import json
import subprocess

import pytest
import torch

from mnist_ops import __version__
from mnist_ops.errors import UserError
from mnist_ops.provenance import code_version, run_provenance, write_results


def test_provenance_names_code_torch_and_threads():
    record = run_provenance()
    assert record["torch"] == torch.__version__ and record["threads"] == torch.get_num_threads()
    assert record["code_version"] == code_version() and code_version().startswith(__version__)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head:  # in a git checkout (the tests' normal place): the commit that ran
        assert record["commit"] == head and head[:7] in record["code_version"]


def test_results_are_written_once_with_their_provenance(tmp_path):
    path = write_results(tmp_path / "r.json", {"img_per_s": [1.0]})
    record = json.loads(path.read_text())
    assert record["img_per_s"] == [1.0] and record["provenance"]["torch"] == torch.__version__
    with pytest.raises(UserError, match="never overwritten"):
        write_results(path, {"img_per_s": [2.0]})
    assert json.loads(path.read_text())["img_per_s"] == [1.0]
