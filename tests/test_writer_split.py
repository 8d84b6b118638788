import torch

from benchmark_scripts import load_script


def test_nearest_neighbour_error_and_distance_agree_with_a_direct_search():
    nearest_neighbour = load_script("writer_split").nearest_neighbour
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(2500, 20, generator=generator)
    reference_labels = torch.randint(0, 3, (2500,), generator=generator)
    queries = reference[:1500] + 0.01 * torch.randn(1500, 20, generator=generator)
    error, distance = nearest_neighbour(queries, reference_labels[:1500], reference, reference_labels)
    closest = torch.cdist(queries, reference).min(1)
    assert error == 100 * float((reference_labels[closest.indices] != reference_labels[:1500]).float().mean())
    assert abs(distance - float(closest.values.median())) < 1e-4
    wrong_labels = (reference_labels[:1500] + 1) % 3  # every query's label differs from its twin's
    assert nearest_neighbour(queries, wrong_labels, reference, reference_labels)[0] > 90
