"""The scripts in benchmarks/ as modules, for the tests that call their functions or their main() in-process
(test_time_to_accuracy, test_train_loop, test_startup)."""
import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def load_script(name: str):
    """benchmarks/NAME.py as a module; a script defines functions only, so nothing runs on import."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exit_code_of_main(name: str, flags: list[str], monkeypatch) -> int:
    """The exit code benchmarks/NAME.py's main() ends with when given `flags`: it must end in SystemExit."""
    script = load_script(name)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *flags])
    with pytest.raises(SystemExit) as stopped:
        script.main()
    return stopped.value.code
