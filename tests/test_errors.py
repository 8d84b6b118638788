from mnist_ops.errors import did_you_mean


def test_did_you_mean_names_close_matches_and_aliases_only():
    assert did_you_mean("seed-lea", ["seed-lean", "lean-8k"]) == " (did you mean 'seed-lean'?)"
    assert did_you_mean("learning_rate", ["lr", "epochs"], {"learning_rate": "lr"}) == " (did you mean 'lr'?)"
    assert did_you_mean("learning_rate", ["lr", "epochs"]) == ""
    assert did_you_mean("zzz", ["seed-lean"]) == ""
