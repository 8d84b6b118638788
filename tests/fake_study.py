"""A finished study written by hand, so every number in a report is known (test_study_report*.py)."""

import json

from mnist_ops.engine import build_model, save_checkpoint
from mnist_ops.fileio import atomic_write_bytes, write_jsonl
from mnist_ops.models import count_parameters
from mnist_ops.study import parse_spec, spec_to_toml

# Test accuracy per epoch, one list per seed. 'bn' reaches 99.0% in epoch 2 in every seed, 99.4% in
# 2 of 3 seeds, and holds 99.4% over the last 2 epochs in those 2.
CURVES = {
    "plain": [[97.0, 97.8, 98.0], [97.1, 98.0, 98.2], [97.3, 98.1, 98.4]],
    "bn": [[98.9, 99.42, 99.45], [98.8, 99.45, 99.5], [98.7, 99.2, 99.3]],
}
TRAIN_GAP = {"plain": 1.5, "bn": 0.25}  # train accuracy = test accuracy + gap


def write_fake_run(directory, config, seed, accuracies):
    records = [{"epoch": epoch, "train_loss": 0.1, "train_accuracy": accuracy + TRAIN_GAP[directory.parent.name],
                "test_loss": 0.12, "test_accuracy": accuracy, "lr": 0.05, "seconds": 2.0,
                "train_images_per_second": 500.0} for epoch, accuracy in enumerate(accuracies)]
    model = build_model(config)
    summary = {"parameters": count_parameters(model), "best_test_accuracy": max(accuracies),
               "epochs": len(accuracies), "seconds": 6.0}
    write_jsonl(directory / "metrics.jsonl", records)
    save_checkpoint(directory / "last.pt", {"model_name": config.model, "model": model.state_dict(),
                                            "config": config.to_dict(), "epoch": len(accuracies) - 1,
                                            "metrics": records[-1], "mean": 0.1307, "std": 0.3081})
    atomic_write_bytes(directory / "done.json", json.dumps({"seed": seed, "summary": summary}).encode())


VARIANTS = {
    "plain": {"name": "plain", "preset": "seed-lean", "model": "seed-lean-plain", "augment": "none", "epochs": 3},
    "bn": {"name": "bn", "preset": "seed-lean", "model": "seed-lean-bn", "augment": "none", "epochs": 3},
}


def write_fake_study(directory, curves=CURVES, seeds=(1, 2, 3), last_k=2):
    """The variants of `curves` ('plain' and 'bn'), the seeds given, last_k 2;
    curves[variant][seed index] = test accuracy per epoch."""
    spec = parse_spec({"name": "fake", "seeds": list(seeds), "last_k": last_k,
                       "variant": [VARIANTS[name] for name in curves]}, "fake.toml")
    atomic_write_bytes(directory / "spec.toml", spec_to_toml(spec).encode())
    for variant in spec.variants:
        for seed, accuracies in zip(spec.seeds, curves[variant.name]):
            write_fake_run(directory / variant.name / f"seed{seed}", variant.config, seed, accuracies)
    return directory
