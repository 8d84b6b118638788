import json
import re
import shutil
import tempfile
import tomllib
from pathlib import Path

import pytest
import tomli_w
from hypothesis import example, given, strategies as st

from fuzzing import FLOATS, INTEGERS, NAMES, TEXT, TOML_VALUES, assert_one_line, assert_valid_config, config_changes
from mnist_ops.config import RANGES, stored_table
from mnist_ops.errors import UserError
from mnist_ops.presets import PRESETS
from mnist_ops.study import (DIVERGED_FILE, DONE_FILE, SPEC_FILE, VARIANT_NAME, built_in_spec, claim_study_dir,
                             directory_status, format_status, grow_spec, parse_spec, read_recorded_spec, read_spec,
                             run_study, spec_to_toml)
from mnist_ops.study_report import write_report


def spec_values(**changes):
    values = {
        "name": "tiny",
        "seeds": [1],
        "defaults": {"epochs": 1, "limit_train": 1000, "batch_size": 64, "device": "cpu"},
        "variant": [
            {"name": "plain", "preset": "seed-lean", "model": "seed-lean-plain", "augment": "none"},
            {"name": "bn", "preset": "seed-lean", "model": "seed-lean-bn", "augment": "none"},
        ],
    }
    values.update(changes)
    return values


def quiet(message):
    pass


def test_spec_resolves_presets_defaults_and_variant_keys():
    spec = parse_spec(spec_values(seeds=2, last_k=2), "tiny.toml", overrides={"epochs": 3})
    assert spec.seeds == (1, 2) and spec.last_k == 2 and spec.target_accuracy == 99.4
    plain, bn = spec.variants
    assert (plain.name, plain.config.model, plain.config.augment) == ("plain", "seed-lean-plain", "none")
    assert (bn.config.epochs, bn.config.limit_train, bn.config.momentum) == (3, 1000, 0.9)  # momentum: preset's


def test_resolved_spec_round_trips_through_toml(tmp_path):
    spec = parse_spec(spec_values(seeds=[3, 5]), "tiny.toml", overrides={"lr": 0.2})
    (tmp_path / "spec.toml").write_text(spec_to_toml(spec))
    assert read_spec(tmp_path / "spec.toml") == spec
    assert {variant.config.lr for variant in spec.variants} == {0.2}


def test_built_in_regularization_study():
    spec = built_in_spec("regularization", seeds=3)
    assert [v.name for v in spec.variants] == ["plain", "+batchnorm", "+batchnorm+dropout",
                                               "+batchnorm+dropout+augmentation"]
    assert [v.config.model for v in spec.variants] == ["seed-lean-plain", "seed-lean-bn", "seed-lean", "seed-lean"]
    assert [v.config.augment for v in spec.variants] == ["none", "none", "none", "seed"]
    assert {(v.config.schedule, v.config.lr, v.config.batch_size) for v in spec.variants} == {("onecycle", 0.05, 64)}
    assert spec.seeds == (1, 2, 3)
    with pytest.raises(UserError, match="unknown built-in study 'nope'"):
        built_in_spec("nope")


def variant_with(**keys):
    return {"variant": [{"name": "only", "preset": "seed-lean", **keys}]}


@pytest.mark.parametrize("changes, message", [
    (variant_with(preset="fast"), "variant 'only': unknown preset 'fast'"),
    (variant_with(model="resnet"), "variant 'only': unknown model 'resnet'"),
    (variant_with(learning_rate=0.1), r"variant 'only': unknown key\(s\) learning_rate"),
    (variant_with(epochs=0), "variant 'only': 'epochs' must be >= 1"),
    ({"defaults": {"schedule": "cosine"}}, r"\[defaults\]: 'schedule' must be one of"),
    ({"variant": [{"name": "a", "preset": "seed-lean"}, {"name": "a", "preset": "seed-lean"}]},
     "variant name.* used twice: a"),
    ({"variant": [{"name": "../up", "preset": "seed-lean"}]}, "a variant needs a 'name'"),
    # a name the file system refuses passed, and the study failed after writing its spec (a review)
    ({"variant": [{"name": "x" * 201, "preset": "seed-lean"}]}, "a variant needs a 'name' of at most 200"),
    ({"name": "s" * 201}, "'name' must be at most 200 letters"),
    ({"variant": []}, r"at least one \[\[variant\]\]"),
    ({"seeds": 0}, "'seeds' must be"),
    ({"seeds": [1, 1]}, "lists a seed twice"),
    ({"last_k": 0}, "'last_k' must be"),
    ({"budget": 3}, r"unknown key\(s\) budget"),
    (variant_with(seed=4), "list seeds in the top-level 'seeds'"),
    (variant_with(validation=10000), "variant 'only': sets validation = 10000, but a study judges every run on the test"),
    ({"defaults": {"validation": 500}}, "sets validation = 500, .*mnist-ops tune"),
    (variant_with(replicas=2), "variant 'only': replicas = 2 needs dropout = 0"),  # seed-lean has dropout
])
def test_bad_specs_are_refused_by_name(changes, message):
    with pytest.raises(UserError, match=message):
        parse_spec(spec_values(**changes), "spec.toml")


@pytest.mark.parametrize("name", ["spec.toml", "study.json", "report.md", "index.html", "test_accuracy.png", "gap.png",
                                  "confusion.png", "misclassified.png", "optuna.db", "optuna.db-journal"])
def test_a_variant_named_like_a_file_of_the_study_directory_is_refused(name, tmp_path):
    """Its directory would take the file's place: the study failed when it wrote that file, after training."""
    with pytest.raises(UserError, match=rf"^spec.toml: variant name '{re.escape(name)}' is a file the study writes "
                                        r"beside the variants' directories \(spec.toml, .*\); rename the variant$"):
        parse_spec(variant_with(name=name), "spec.toml")
    parse_spec({"variant": [{"name": name.replace(".", "-"), "preset": "seed-lean"}]}, "spec.toml")  # a near name is fine


@pytest.mark.parametrize("state, file, content, fix", [
    ("done", "metrics.jsonl", '{"epoch": 0, "test_accuracy": 97.0}\njunk\n', "delete {run}/done.json and run"),
    ("done", "done.json", '{"seed": 1, "summ', "delete it and run"),  # once shown as done (a review)
    ("started", "metrics.jsonl", '{"epoch": 0, "test_accuracy": 97.0}\n5\n', "run"),  # resuming rewrites it
    ("diverged", "diverged.json", '{"diverged": "loss na', "delete it and run"),
    ("diverged", "diverged.json", '["loss nan"]', "delete it and run"),
])
def test_status_names_a_damaged_run_file_and_the_fix(tmp_path, state, file, content, fix):
    spec = parse_spec(spec_values(), "tiny.toml")
    run = tmp_path / "plain" / "seed1"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"epoch": 0, "test_accuracy": 97.0}\n')
    if state != "started":
        (run / (DONE_FILE if state == "done" else DIVERGED_FILE)).write_text('{"seed": 1, "summary": {}}')
    (run / file).write_text(content)
    with pytest.raises(UserError, match=re.escape(f"{run / file} is damaged (") + r"[^\n]*"
                                        + re.escape("); " + fix.format(run=run) + " the study again: it rewrites "
                                                    "the run's files from its last.pt, or trains the run again") + "$"):
        directory_status(spec, tmp_path)


def test_missing_data_fails_before_any_study_directory(tmp_path):
    spec = parse_spec(spec_values(), "tiny.toml")
    with pytest.raises(UserError, match="mnist-ops data fetch"):
        run_study(spec, tmp_path / "study", data_root=tmp_path / "no-data", log=quiet)
    assert not (tmp_path / "study").exists()


def test_a_non_empty_directory_without_a_spec_is_refused_untouched(tmp_path, mnist_root):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not empty and holds no spec.toml"):
        run_study(parse_spec(spec_values(), "tiny.toml"), tmp_path / "study", data_root=mnist_root, log=quiet)
    assert [path.name for path in (tmp_path / "study").iterdir()] == ["notes.txt"]


def test_a_study_grows_by_variants_and_seeds_but_refuses_a_changed_recipe_by_key():
    old = parse_spec(spec_values(), "tiny.toml")
    grown = grow_spec(old, parse_spec(spec_values(seeds=[2, 1], variant=[
        {"name": "bn", "preset": "seed-lean", "model": "seed-lean-bn", "augment": "none"},
        {"name": "adam", "preset": "seed-lean", "optimizer": "adam", "augment": "none"}]), "tiny.toml"), Path("s"))
    assert grown.seeds == (1, 2)
    assert [variant.name for variant in grown.variants] == ["plain", "bn", "adam"]
    assert grown.variants[:2] == old.variants
    with pytest.raises(UserError, match="variant 'bn' changes model 'seed-lean-bn' -> 'seed-lean', "
                                        "augment 'none' -> 'seed'. A study grows by seeds and variants only"):
        grow_spec(old, parse_spec(spec_values(variant=[{"name": "bn", "preset": "seed-lean"}]), "tiny.toml"),
                  Path("s"))
    with pytest.raises(UserError, match="holds study last_k = 3, this spec has 2"):
        grow_spec(old, parse_spec(spec_values(last_k=2), "tiny.toml"), Path("s"))


@pytest.fixture(scope="module")
def tiny_study(mnist_root, tmp_path_factory):
    """A 2-variant x 1-seed study of 1 epoch on 1,000 images; the last test interrupts and resumes it."""
    directory = tmp_path_factory.mktemp("studies") / "tiny"
    run_study(parse_spec(spec_values(), "tiny.toml"), directory, data_root=mnist_root, command="test", log=quiet)
    return directory


@pytest.mark.integration
def test_study_writes_spec_and_one_finished_run_per_variant_and_seed(tiny_study):
    spec = read_spec(tiny_study / SPEC_FILE)
    assert [variant.name for variant in spec.variants] == ["plain", "bn"]
    for name in ("plain", "bn"):
        done = json.loads((tiny_study / name / "seed1" / DONE_FILE).read_text())
        assert done["seed"] == 1 and done["summary"]["epochs"] == 1
        assert (tiny_study / name / "seed1" / "last.pt").is_file()
        environment = json.loads((tiny_study / name / "seed1" / "environment.json").read_text())
        assert done["environment"] == environment and environment["threads"] >= 1  # the report's machine line


@pytest.mark.integration
def test_a_different_spec_in_the_same_directory_is_refused(tiny_study, mnist_root):
    before = (tiny_study / SPEC_FILE).read_text()
    other = parse_spec(spec_values(), "tiny.toml", overrides={"lr": 0.3})
    with pytest.raises(UserError, match="holds runs of another recipe: variant 'plain' changes lr 0.015 -> 0.3; "
                                        "variant 'bn' changes lr 0.015 -> 0.3"):
        run_study(other, tiny_study, data_root=mnist_root, log=quiet)
    assert (tiny_study / SPEC_FILE).read_text() == before


@pytest.mark.integration
def test_rerun_with_another_seed_trains_only_the_new_run(tiny_study, mnist_root, tmp_path):
    study = tmp_path / "tiny"
    shutil.copytree(tiny_study, study)
    kept = {path: path.read_bytes() for path in study.glob("*/seed1/metrics.jsonl")}
    messages = []
    only_bn = spec_values(seeds=[1, 2], variant=[spec_values()["variant"][1]])
    run_study(parse_spec(only_bn, "tiny.toml"), study, data_root=mnist_root, log=messages.append)
    assert "study tiny grows: adds seed(s) 2; finished runs are kept" in messages
    assert "study tiny: 2 runs, 1 finished earlier, 1 to train" in messages
    assert {path: path.read_bytes() for path in kept} == kept
    assert (study / "bn" / "seed2" / DONE_FILE).is_file() and not (study / "plain" / "seed2").exists()
    whole = read_spec(study / SPEC_FILE)
    assert whole.seeds == (1, 2) and [variant.name for variant in whole.variants] == ["plain", "bn"]


@pytest.mark.integration
@pytest.mark.parametrize("content", ['{"invocations": [', '[1, 2]', '{"invocations": 3}'])
def test_a_damaged_study_json_is_one_line_naming_it_when_the_study_runs_again(tiny_study, mnist_root, tmp_path,
                                                                              content):
    study = tmp_path / "tiny"
    shutil.copytree(tiny_study, study)
    (study / "study.json").write_text(content)
    with pytest.raises(UserError, match=r"study.json is damaged .*; delete it") as error:
        run_study(read_spec(study / SPEC_FILE), study, data_root=mnist_root, log=lambda line: None)
    assert "\n" not in str(error.value) and (study / "study.json").read_text() == content


@pytest.mark.integration
def test_restart_resumes_only_the_unfinished_run(tiny_study, mnist_root):
    spec = read_spec(tiny_study / SPEC_FILE)
    kept, interrupted = tiny_study / "plain" / "seed1", tiny_study / "bn" / "seed1"
    kept_metrics = (kept / "metrics.jsonl").read_bytes()
    kept_mtime = (kept / "metrics.jsonl").stat().st_mtime_ns
    interrupted_metrics = (interrupted / "metrics.jsonl").read_bytes()
    (interrupted / DONE_FILE).unlink()  # as if the process died after the last epoch
    (interrupted / ".last.pt.k1ll3d.tmp").write_text("partial")  # a write cut short by SIGKILL
    messages = []
    run_study(spec, tiny_study, data_root=mnist_root, log=messages.append)
    assert (kept / "metrics.jsonl").read_bytes() == kept_metrics
    assert (kept / "metrics.jsonl").stat().st_mtime_ns == kept_mtime
    assert (interrupted / DONE_FILE).is_file() and not (interrupted / ".last.pt.k1ll3d.tmp").exists()
    assert (interrupted / "metrics.jsonl").read_bytes() == interrupted_metrics  # resumed, nothing retrained
    assert "study tiny: 2 runs, 1 finished earlier, 1 to train" in messages
    assert any("[1/1] bn seed 1: unfinished run found, resuming it from its last.pt" in m for m in messages)
    assert len(json.loads((tiny_study / "study.json").read_text())["invocations"]) == 2


@pytest.mark.integration
def test_an_interrupted_invocation_still_records_its_wall_time(mnist_root, tmp_path):
    """Also one killed outright (SIGKILL runs no `finally`): its entry is written when it starts and after each run,
    so the report counted it (once neither its time nor itself)."""
    spec = parse_spec(spec_values(), "tiny.toml")
    recorded_before_the_second_run = []

    def interrupt_second_run(message):
        if message.startswith("[2/2]"):
            recorded_before_the_second_run.extend(
                json.loads((tmp_path / "study" / "study.json").read_text())["invocations"])
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(spec, tmp_path / "study", data_root=mnist_root, command="test", log=interrupt_second_run)
    [killed_there] = recorded_before_the_second_run
    assert killed_there["completed"] is False and killed_there["seconds"] > 0  # the first run's time
    invocations = json.loads((tmp_path / "study" / "study.json").read_text())["invocations"]
    assert len(invocations) == 1 and invocations[0]["id"] == killed_there["id"]
    assert invocations[0]["completed"] is False and invocations[0]["seconds"] >= killed_there["seconds"]
    assert (tmp_path / "study" / "plain" / "seed1" / DONE_FILE).is_file()
    assert not (tmp_path / "study" / "bn" / "seed1").exists()
    assert [(row.state, row.epochs) for row in directory_status(spec, tmp_path / "study")] == \
        [("done", 1), ("not started", 0)]
    run_study(spec, tmp_path / "study", data_root=mnist_root, command="test", log=quiet)  # resume, finish
    report = write_report(tmp_path / "study", data_root=mnist_root).read_text()
    assert "wall clock over 2 invocation(s), 1 of them interrupted)" in report


@pytest.mark.integration
def test_a_diverging_run_is_recorded_and_the_study_goes_on(mnist_root, tmp_path):
    from mnist_ops.study_report.records import records_markdown

    # seed-baseline at lr 10: NaN within epoch 0 (test_faults), on every seed
    spec = parse_spec(spec_values(seeds=[1, 2], variant=[
        {"name": "hot", "preset": "seed-baseline", "augment": "none", "lr": 10.0},
        {"name": "bn", "preset": "seed-lean", "model": "seed-lean-bn", "augment": "none"}]), "tiny.toml")
    messages = []
    run_study(spec, tmp_path / "study", data_root=mnist_root, command="test", log=messages.append)
    for seed in (1, 2):
        diverged = json.loads((tmp_path / "study" / "hot" / f"seed{seed}" / DIVERGED_FILE).read_text())
        assert diverged["seed"] == seed and diverged["diverged"].startswith("training loss became nan at epoch 0")
        assert (tmp_path / "study" / "bn" / f"seed{seed}" / DONE_FILE).is_file()
    assert sum("diverged, training loss became nan" in message for message in messages) == 2
    messages.clear()
    run_study(spec, tmp_path / "study", data_root=mnist_root, command="test", log=messages.append)
    assert "4 runs, 4 finished earlier, 0 to train" in messages[0]  # a seeded divergence is not retried
    status = format_status(spec.name, directory_status(spec, tmp_path / "study")).splitlines()
    assert status[0] == "study tiny: 4 runs: 2 diverged, 2 done"
    assert status[1].split()[:4] == ["hot/seed1", "diverged", "0/1", "epochs"] and "loss became nan" in status[1]
    assert status[3].split()[:3] == ["bn/seed1", "done", "1/1"] and "epochs, last " in status[3]
    report = write_report(tmp_path / "study", data_root=mnist_root).read_text()
    assert "| hot | seed-baseline |  | none |" in report and "| 0 of 2, 2 diverged |" in report
    assert "Diverged (the loss became NaN or infinite" in report and "hot seed 2: training loss became nan" in report
    assert "| hot | diverged |" in report and "0/2 seeds |" in report
    assert "**hot**: held ≥ 99.4% on 0 of 2 seeds. Seed 1 diverged: training loss became nan" in \
        records_markdown(tmp_path / "study")


# ---------------------------------------------------------------------------- fuzzed (hypothesis)
# Random spec dicts and TOML files: a Spec that round-trips and whose runs can all start, or one
# UserError of one line, raised by parsing (nothing runs, nothing is written).


GOOD_NAMES = st.from_regex(VARIANT_NAME, fullmatch=True).filter(lambda name: len(name) < 30)
RUN_NAMES = GOOD_NAMES | TEXT | st.sampled_from(["a\n", "a/b", "..", ".hidden", "a b", ""])
SEEDS = INTEGERS | st.lists(INTEGERS | st.booleans(), max_size=4) | TOML_VALUES
VARIANT = st.tuples(
    st.fixed_dictionaries({"name": GOOD_NAMES, "preset": st.sampled_from(sorted(PRESETS))})
    | st.fixed_dictionaries({"name": RUN_NAMES, "preset": NAMES})
    | st.fixed_dictionaries({}, optional={"name": RUN_NAMES | TOML_VALUES, "preset": NAMES | TOML_VALUES}),
    config_changes(without=("seed",)) | config_changes(),
).map(lambda pair: {**pair[1], **pair[0]})
SPEC = st.tuples(
    st.fixed_dictionaries({"variant": st.lists(VARIANT, min_size=1, max_size=3)},
                          optional={"name": GOOD_NAMES | RUN_NAMES, "seeds": SEEDS,
                                    "defaults": config_changes(without=("seed",)) | config_changes(),
                                    "target_accuracy": FLOATS | INTEGERS, "last_k": INTEGERS})
    | st.fixed_dictionaries({}, optional={key: TOML_VALUES | st.lists(VARIANT, max_size=2)
                                          for key in ("name", "seeds", "defaults", "target_accuracy", "last_k",
                                                      "variant")}),
    st.just({}) | st.dictionaries(TEXT, TOML_VALUES, max_size=2),
).map(lambda pair: {**pair[1], **pair[0]})


def _check_spec(parse) -> None:
    try:
        spec = parse()
    except UserError as error:
        assert_one_line(error)
        return
    for name in [spec.name] + [variant.name for variant in spec.variants]:
        assert VARIANT_NAME.fullmatch(name) and Path(name).name == name not in (".", "..")
    assert 1 <= len(spec.seeds) <= 10_000 and all(0 <= seed <= RANGES["seed"][1] for seed in spec.seeds)
    for variant in spec.variants:
        assert_valid_config(variant.config.replace(seed=spec.seeds[-1]))  # every run's config is valid
    assert parse_spec(tomllib.loads(spec_to_toml(spec)), "round trip") == spec


@given(SPEC, st.none() | INTEGERS, st.none() | config_changes(extra_keys=False))
@example({"variant": [{"name": "a\n", "preset": "seed-lean"}]}, None, None)
@example({"variant": [{"name": "a", "preset": "seed-lean"}], "seeds": 10**12}, None, None)
@example({"variant": [{"name": "a", "preset": "seed-lean"}], "seeds": [2**64]}, None, None)
@example({"variant": [{"name": "a", "preset": "seed-lean"}], "target_accuracy": 10**400}, None, None)
@example({"variant": [{"name": "a", "preset": "seed-lean\n"}]}, None, None)
@example({"variant": [{"name": "a", "preset": "seed-lean"}], "bad\nkey": 1}, None, None)
@example({"variant": [{"name": "a", "preset": "seed-lean"}], "defaults": {"preset": "custom"}}, None, None)
@example({"variant": [{"name": "a", "preset": "seed-lean"}]}, None, {"preset": "lean-5k"})  # found by the soak
def test_fuzz_parse_spec(values, seeds, overrides):
    _check_spec(lambda: parse_spec(values, "fuzz.toml", seeds, overrides))


@given(SPEC)
def test_fuzz_read_spec_from_a_toml_file(values):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.toml"
        path.write_text(tomli_w.dumps(values), encoding="utf-8")
        _check_spec(lambda: read_spec(path))


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
@example(b"[[variant]]\nname = 'a'\npreset = 'seed-lean'\nseeds = 99999999999\n")
def test_fuzz_read_spec_random_bytes(content):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.toml"
        path.write_bytes(content)
        _check_spec(lambda: read_spec(path))


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_every_committed_spec_parses(path):
    """The specs in studies/ are what README and docs tell users to run: each must parse as it stands."""
    from mnist_ops.tune import read_tune_spec

    if "space" in tomllib.loads(path.read_text()):
        assert read_tune_spec(path, None).space
    else:
        assert read_spec(path).variants


def _committed_reports():
    root = Path(__file__).parents[1]
    for path in sorted((root / "studies").glob("*.toml")):
        values = tomllib.loads(path.read_text())
        report = root / "docs" / str(values.get("name", path.stem)) / "spec.toml"
        if report.is_file():
            yield pytest.param(path, report, id=path.name)


def test_the_committed_reports_are_found():
    assert len(list(_committed_reports())) >= 15  # the studies and searches behind docs/ on 2026-11-26


# Reports whose onecycle runs recorded a momentum that had no effect then: torch's OneCycleLR cycled it 0.95 -> 0.85
# -> 0.95, which momentum 0.9 gives since the key took effect (docs/records.md, "The momentum key under onecycle").
INERT_MOMENTUM = {"lean-5k-ema.toml"}


@pytest.mark.parametrize("path, report", list(_committed_reports()))
def test_a_committed_spec_still_runs_the_recipe_of_its_committed_report(path, report):
    """A preset may change (lean-5k took an EMA); the studies and searches behind docs/ pin what they
    ran, so rerunning one reproduces its report instead of silently training another recipe. A report's
    spec.toml stores every config key its code had; a key it lacks came later, so it ran its default."""
    from mnist_ops.tune import read_tune_spec

    stored = tomllib.loads(report.read_text())
    if "space" in stored:
        ran = stored_table({**stored["base"], "preset": stored["preset"], "validation": stored["validation"]})
        assert read_tune_spec(path, None).base.to_dict() == ran
        return
    committed = read_spec(path).variants
    assert [variant.name for variant in committed] == [table["name"] for table in stored["variant"]]
    for variant, table in zip(committed, stored["variant"]):
        config, ran = variant.config.to_dict(), stored_table({k: v for k, v in table.items() if k != "name"})
        if path.name in INERT_MOMENTUM:
            assert ran["schedule"] == "onecycle" and ran["momentum"] != 0.9
            ran["momentum"] = 0.9
        # teacher files are recorded by absolute path, so the report holds the checkout it ran in: the same
        # files (by name), and they are committed here (a spec names them relative to the repository)
        names = [[Path(file).name for file in values["teacher"].split(",") if file] for values in (config, ran)]
        assert names[0] == names[1] and all(Path(file).is_file() for file in config["teacher"].split(",") if file)
        config["teacher"] = ran["teacher"]
        assert config == ran, variant.name


def test_a_variant_whose_teacher_cannot_teach_fails_before_any_run(tmp_path, mnist_root, digit_checkpoint):
    """Checked up front: not after the runs of the variants listed before it."""
    import torch

    picked = torch.load(digit_checkpoint, weights_only=True)
    picked["config"]["epochs"] = 3  # epoch 0 of 3: a best.pt picked on the test set the study judges on
    torch.save(picked, tmp_path / "best.pt")
    for teacher, problem in ((tmp_path / "missing.pt", "teacher: checkpoint .*missing.pt not found"),
                             (tmp_path / "best.pt", "teacher .*best.pt holds epoch 0 of 3")):
        values = spec_values()
        values["variant"][1].update(teacher=str(teacher), distill_weight=0.5)
        with pytest.raises(UserError, match=f"variant 'bn': {problem}"):
            run_study(parse_spec(values, "tiny.toml"), tmp_path / "study", data_root=mnist_root, log=quiet)
        assert not (tmp_path / "study").exists()


@pytest.mark.integration
def test_a_variant_that_cannot_train_fails_before_the_study_directory_is_written(mnist_root, tmp_path):
    """precise BN on a net with no BatchNorm failed in fit, after spec.toml and study.json were written: the corrected
    spec was then refused as "another recipe" of a directory that held no run."""
    values = spec_values(variant=[{"name": "a", "preset": "seed-lean", "model": "seed-lean-plain",
                                   "precise_bn": 100}])
    with pytest.raises(UserError, match="^variant 'a': precise_bn = 100 recomputes BatchNorm statistics, and model "
                                        "seed-lean-plain has no BatchNorm; set precise_bn = 0$"):
        run_study(parse_spec(values, "tiny.toml"), tmp_path / "study", data_root=mnist_root, log=quiet)
    assert not (tmp_path / "study").exists()
    values["variant"][0]["precise_bn"] = 0
    run_study(parse_spec(values, "tiny.toml"), tmp_path / "study", data_root=mnist_root, log=quiet)
    assert (tmp_path / "study" / "a" / "seed1" / DONE_FILE).is_file()


def test_a_tune_spec_given_as_a_study_spec_is_named_as_such():
    with pytest.raises(UserError, match=r"^tune.toml is a tune spec \(it has \[base\] and \[space\]\), not a study "
                                        r"spec; use it with `mnist-ops tune --spec`"):
        parse_spec({"name": "t", "preset": "seed-lean", "base": {}, "space": {}}, "tune.toml")
    with pytest.raises(UserError, match=r"'last_k' must be an integer in \[1, 10000\], got 'three'"):
        parse_spec(spec_values(last_k="three"), "tiny.toml")


def test_a_study_directory_written_before_a_key_existed_reads_that_key_at_its_default_not_todays_preset(tmp_path):
    """seed-regularized's preset draws black rotation corners since rotation_fill existed; a study directory
    written before then filled with the mean, and must read so: resuming it with the spec pinned to the mean
    is the same study, and with today's preset another recipe."""
    def spec(fill):
        values = {"name": "old", "seeds": 1, "variant": [{"name": "reg", "preset": "seed-regularized"}]}
        if fill:
            values["variant"][0]["rotation_fill"] = fill
        return parse_spec(values, "test")

    study_dir = tmp_path / "old"
    study_dir.mkdir()
    text = spec_to_toml(spec("mean"))
    assert 'rotation_fill = "mean"' in text
    (study_dir / SPEC_FILE).write_text(text.replace('rotation_fill = "mean"\n', ""))  # as older code wrote it
    assert read_recorded_spec(study_dir / SPEC_FILE).variants[0].config.rotation_fill == "mean"
    assert claim_study_dir(spec("mean"), study_dir, write=False).variants[0].config.rotation_fill == "mean"
    with pytest.raises(UserError, match="rotation_fill"):
        claim_study_dir(spec(None), study_dir, write=False)
