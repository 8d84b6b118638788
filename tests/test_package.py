"""The package as a whole: its modules import one another without a cycle, and importing them does nothing."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import mnist_ops

PACKAGE = Path(mnist_ops.__file__).parent


def module_name(path: Path) -> str:
    parts = ("mnist_ops",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(path) for path in PACKAGE.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every mnist_ops module the file imports, at the top or inside a function (a cycle there is one too)."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return (found & set(MODULES)) - {name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of modules that import each other round in a ring, or None (depth-first search)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for child in sorted(graph[module]):
            if state.get(child) == "open":
                return path[path.index(child):] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_ring_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_import_reader_sees_imports_at_the_top_and_inside_functions():
    assert "mnist_ops.errors" in imported_modules(PACKAGE / "config.py")
    cli = imported_modules(PACKAGE / "cli.py")
    assert {"mnist_ops.train", "mnist_ops.serve.app"} <= cli  # both imported inside a command's function


def test_no_module_imports_itself_round_a_ring():
    graph = {module_name(path): imported_modules(path) for path in PACKAGE.rglob("*.py")}
    assert len(graph) == len(MODULES) > 20
    assert find_cycle(graph) is None


def test_importing_every_module_writes_no_file_and_opens_no_connection(tmp_path):
    """Importing trains, loads and downloads nothing: in a child whose home, cache, data root and working
    directory are one empty directory, and whose sockets raise, every module imports and nothing is written."""
    home = tmp_path / "home"
    home.mkdir()
    probe = ("import socket, importlib\n"
             "def refuse(*args, **kwargs): raise AssertionError('a connection at import')\n"
             "socket.socket.connect = refuse\n"
             "socket.create_connection = refuse\n"
             f"for name in {MODULES!r}: importlib.import_module(name)\n"
             "print('imported all')\n")
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
           "MNIST_OPS_DATA": str(home / "data"), "MPLCONFIGDIR": str(tmp_path / "matplotlib"), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=home, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported all"
    assert sorted(path.relative_to(home).as_posix() for path in home.rglob("*")) == []
