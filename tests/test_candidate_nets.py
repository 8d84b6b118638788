"""benchmarks/candidate_nets.py: the nets docs/records.md compared, which its commands load with --model."""
import re
from pathlib import Path

import pytest
import torch

from mnist_ops.models import count_parameters, create_model

FILE = Path(__file__).parents[1] / "benchmarks" / "candidate_nets.py"
NETS = ["compact_2k", "separable_8k", "fast_8k", "crop_8k", "separable_1k", "separable_1k_narrow_start",
        "dilated_1k", "wide_5k", "wide_8k"]


def test_the_list_names_every_net_the_file_defines():
    source = FILE.read_text()
    defined = re.findall(r"^def (\w+)\(num_classes: int = 10\) -> nn.Module:", source, flags=re.M)
    assert sorted(defined) == sorted(NETS)


@pytest.mark.parametrize("name", NETS)
def test_each_net_is_under_the_budget_its_name_gives_and_maps_digits_to_ten_logits(name):
    model = create_model(f"{FILE}:{name}")
    budget = int(re.search(r"_(\d)k", name).group(1)) * 1000
    assert count_parameters(model) < budget
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_fast_8k_here_is_the_registered_racing_net_weight_for_weight():
    """The records' commands name benchmarks/candidate_nets.py:fast_8k; since the net is registered
    (fast-8k, the lean-8k-fast preset's), both must start from the same weights for the same seed."""
    torch.manual_seed(0)
    here = create_model(f"{FILE}:fast_8k").state_dict()
    torch.manual_seed(0)
    registered = create_model("fast-8k").state_dict()
    assert list(here) == list(registered) and all(torch.equal(here[key], registered[key]) for key in here)
    cropped = create_model(f"{FILE}:crop_8k")  # the same layers behind a crop of 2 pixels a side
    assert [name for name, _ in cropped.named_children()] == ["crop", *dict(create_model("fast-8k").named_children())]
