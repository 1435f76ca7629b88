"""training/ imports in one direction: ids, live → models → jobs, webhooks → job_run, launch → worker.
No module imports one that imports it back, at the top of the file or inside a function."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def training_modules():
    modules = {}
    for path in (ROOT / "training").rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(name, path, modules):
    """The training modules `name` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def test_no_training_module_is_part_of_an_import_cycle():
    modules = training_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}

    def reaches(start, goal, seen):
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    # A package's __init__ is imported with each of its modules; only module-to-module edges count.
    cyclic = sorted(name for name in graph if not name.endswith(("training", "engine"))
                    and reaches(name, name, set()))
    assert cyclic == []


def test_the_walk_sees_imports_at_the_top_and_inside_functions():
    modules = training_modules()
    assert "training.models" in imports_of("training.jobs", ROOT / "training" / "jobs.py", modules)
    assert "training.worker" in imports_of("training.management.commands.trainworker",
                                           modules["training.management.commands.trainworker"], modules)
