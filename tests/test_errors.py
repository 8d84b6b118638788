import subprocess
import sys

import pytest

from mnist_ops.errors import did_you_mean


def test_did_you_mean_names_close_matches_and_aliases_only():
    assert did_you_mean("seed-lea", ["seed-lean", "lean-8k"]) == " (did you mean 'seed-lean'?)"
    assert did_you_mean("learning_rate", ["lr", "epochs"], {"learning_rate": "lr"}) == " (did you mean 'lr'?)"
    assert did_you_mean("learning_rate", ["lr", "epochs"]) == ""
    assert did_you_mean("zzz", ["seed-lean"]) == ""


INTERRUPTED_IN_TORCHS_IMPORT = """
import os, signal, sys
from importlib.abc import MetaPathFinder


class InterruptOnNumpy(MetaPathFinder):
    \"\"\"Ctrl-C at the moment torch's C extension imports numpy: where a real one was lost.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name == "numpy" and "torch" in sys.modules:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIG{signal})
        return None


sys.meta_path.insert(0, InterruptOnNumpy())
from mnist_ops.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signal, code", [("INT", 130), ("TERM", 143)])
def test_an_interrupt_while_torch_imports_stops_the_command(mnist_root, tmp_path, signal, code):
    """torch's C extension swallowed a KeyboardInterrupt raised in its import of numpy: the run trained on and
    exited 0, or failed later in its plots with "Failed to initialize NumPy" (a review)."""
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED_IN_TORCHS_IMPORT.replace("{signal}", signal))
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, str(script), "train", "--preset", "lean-2k", "--epochs", "1",
                             "--limit-train", "256", "--data-root", str(mnist_root), "--out", str(run),
                             "--no-progress"], capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stderr) == (code, "mnist-ops: interrupted\n"), result.stderr
    assert not run.exists()


def test_importing_torch_whole_leaves_the_signal_mask_as_it_found_it():
    """It unblocked SIGINT and SIGTERM after the import even where they had been blocked before (a review)."""
    script = ("import signal\n"
              "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
              "from mnist_ops.errors import import_torch_whole\n"
              "import_torch_whole()\n"
              "blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set())\n"
              "print(signal.SIGINT in blocked, signal.SIGTERM in blocked)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout == "True False\n", result.stderr
