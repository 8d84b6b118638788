"""Hypothesis strategies shared by the fuzz tests (test_fuzz_* in test_config.py, test_study.py).

Values of every TOML type (booleans, integers past 64 bits, NaN and infinite floats, any text, dates,
times, datetimes with and without offsets, arrays, nested tables), keys drawn from the real names plus
junk, and per-key values that are close to valid, so that generated inputs reach the checks behind
the type check.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import fields
from datetime import timedelta, timezone

from hypothesis import strategies as st

from mnist_ops.config import CHOICES, FIELD_TYPES, RANGES, Config, resolve, to_toml
from mnist_ops.models import list_models
from mnist_ops.presets import PRESETS
from mnist_ops.study import SPEC_KEYS

FIELD_NAMES = [field.name for field in fields(Config)]
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)  # any text UTF-8 can hold
KEYS = st.sampled_from(FIELD_NAMES + list(SPEC_KEYS)) | TEXT
HUGE_INTS = st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, 10**400])
INTEGERS = st.integers() | HUGE_INTS | st.integers(-3, 20)
FLOATS = st.floats() | st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, 5e-324, -0.0])
# Model references import code (file.py:Net, module:build): free text never holds a ':' (it could name any
# installed module), and a few references to nothing stand in for them.
REFERENCES = ["no_such_module_xyz:Net", "no_such_file.py:Net", "lean-8k:x", ":", "a:"]
NAMES = (st.sampled_from(sorted(PRESETS) + list_models() + [n for c in CHOICES.values() for n in c] + REFERENCES)
         | TEXT.filter(lambda text: ":" not in text))
DATETIMES = st.datetimes(timezones=st.none() | st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m))))
SCALARS = st.one_of(st.booleans(), INTEGERS, FLOATS, NAMES, DATETIMES, st.dates(), st.times())
TOML_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=8)
NEAR_VALID = {float: FLOATS | INTEGERS, int: INTEGERS | st.booleans() | FLOATS, bool: st.booleans() | INTEGERS,
              str: NAMES}


def config_changes(extra_keys: bool = True, without: tuple[str, ...] = ()) -> st.SearchStrategy[dict]:
    """A few config keys with close-to-valid values (or any TOML value), sometimes plus junk keys."""
    names = [name for name in FIELD_NAMES if name not in without]
    values = {field.name: NEAR_VALID[type(field.default)] | TOML_VALUES for field in fields(Config)}
    known = st.lists(st.sampled_from(names), max_size=4, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({key: values[key] for key in keys}))
    if not extra_keys:
        return known
    junk = st.dictionaries(KEYS, TOML_VALUES, max_size=2)
    return st.tuples(known, st.just({}) | junk).map(lambda pair: {**pair[1], **pair[0]})


def assert_one_line(error: Exception) -> None:
    message = str(error)
    assert message and len(message.splitlines()) == 1 and message == message.strip(), repr(message)


def assert_valid_config(config: Config) -> None:
    """Every field has its exact type and lies in its range, and the config survives its TOML form."""
    for key, value in config.to_dict().items():
        assert type(value) is FIELD_TYPES[key], (key, value)
        if isinstance(value, float):
            assert math.isfinite(value), (key, value)
        if isinstance(value, str):
            assert value.isprintable(), (key, value)
        if key in CHOICES:
            assert value in CHOICES[key]
        if key in RANGES:
            low, high = RANGES[key]
            assert low <= value and (high is None or value <= high), (key, value)
    assert resolve(Config(), tomllib.loads(to_toml(config.to_dict())), "round trip") == config


class Payload:
    """Unpickling this runs code: it opens (creates) the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))
