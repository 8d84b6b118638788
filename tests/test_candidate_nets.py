"""benchmarks/candidate_nets.py: the nets docs/records.md compared, which its commands load with --model."""
import hashlib
import re
from pathlib import Path

import pytest
import torch

from mnist_ops.models import count_parameters, create_model

FILE = Path(__file__).parents[1] / "benchmarks" / "candidate_nets.py"
NETS = ["compact_2k", "separable_8k", "fast_8k", "crop_8k", "separable_1k", "separable_1k_narrow_start",
        "dilated_1k", "wide_5k", "wide_8k", "pool_first_8k", "fast_5k"]


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


def _initial_weights_digest(model) -> str:
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


# The seed-0 initial weights of the net behind every fast_8k run in docs/records.md (race-muon, race-plain,
# tune-race, the time-to-accuracy logs) and of the lean-8k-fast preset since: computed from
# benchmarks/candidate_nets.py as it was at 3f54fe0, before the net was registered as fast-8k.
FAST_8K_DIGEST = "be90af4384488d4098e6b67f9f3eeb550d1997ffa5c54e78e2be5460211819af"


@pytest.mark.parametrize("reference", ["fast-8k", f"{FILE}:fast_8k"])
def test_the_racing_net_is_the_one_its_runs_used(reference):
    """Editing models.fast_8k would change the race preset and every record command naming fast_8k,
    and a study spec names it only as a string: its layers and initial weights are pinned here."""
    torch.manual_seed(0)
    model = create_model(reference)
    assert count_parameters(model) == 7_568
    assert _initial_weights_digest(model) == FAST_8K_DIGEST


def test_the_cropped_net_is_the_racing_net_behind_a_crop():
    cropped = create_model(f"{FILE}:crop_8k")  # 2 pixels off each side: a 24x24 input
    assert [name for name, _ in cropped.named_children()] == ["crop", *dict(create_model("fast-8k").named_children())]
    assert cropped.gap.kernel_size == 3
