"""The repository tells one story: CI runs the README's commands, dvc.yaml lists what each
stage imports, the tasks are records, the import graph has no circles; the CLI reads shards."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from ganlib.cli import main

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_readme_quickstart_has_exactly_two_commands_and_ci_runs_them():
    install_and_run, test = quickstart_commands()
    assert install_and_run.endswith("&& dvc repro")
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert install_and_run.removesuffix(" && dvc repro") in ci
    assert test in ci


def test_shards_info_prints_counts_classes_and_keys(digit_shards, capsys):
    assert main(["shards", "info", str(digit_shards)]) == 0
    out = capsys.readouterr().out
    assert "256 samples (png)" in out
    assert "classes (10)" in out and "digits-00000" in out


def test_shards_info_on_a_missing_path_is_one_line(tmp_path, capsys):
    assert main(["shards", "info", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


# -- lists that cannot drift: what the code says, dvc.yaml and the layout agree ---------------


def _module_file(name: str) -> Path | None:
    base = ROOT / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, *, eager_only: bool = False) -> set[Path]:
    """The project files ``path`` imports (every import, or only those run at import time:
    not inside functions or ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if not eager_only else _eager(tree.body)
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative: from this package
                parts = package.split(".")[: -node.level]
                base = ".".join([*parts, node.module])
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("ganlib", "pipeline"):
                found = _module_file(name)
                if found is not None and found != path:  # a package importing its modules
                    out.add(found)
    return out


def _eager(body):
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        yield node
        if isinstance(node, ast.ClassDef):
            yield from _eager(node.body)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    yield from _eager([child] if not isinstance(child, list) else child)


def _closure(entry: Path) -> set[Path]:
    seen, todo = set(), [entry]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += _imports(path)
    return seen


TOP_PACKAGES = (ROOT / "ganlib", ROOT / "pipeline")
SUBPACKAGES = {p.parent for top in TOP_PACKAGES for p in top.rglob("*/__init__.py")}


def _no_code(path: Path) -> bool:
    """A docstring and constants only (``ganlib/__init__.py``'s version): nothing a stage runs."""
    body = ast.parse(path.read_text()).body
    return all(
        isinstance(n, (ast.Expr, ast.Assign)) and isinstance(n.value, ast.Constant) for n in body
    )


def test_dvc_deps_list_exactly_the_code_each_stage_imports():
    """DVC re-runs a stage only when a listed dep changes: each stage's deps must cover every
    project file its entry point imports (at any depth, lazy imports included), and list no
    code it does not import (which would re-run it for nothing)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        entry = ROOT / stage["cmd"].split("-m ")[1].replace(".", "/")
        imported = _closure(entry.with_suffix(".py"))
        # Importing a.b.c runs a/b/__init__.py too: a subpackage's __init__ is a dep, docstring
        # or not; only the top packages' docstring-only ones (every stage's) are left out.
        imported |= {p / "__init__.py" for f in imported for p in f.parents if p in SUBPACKAGES}
        files = {
            p.relative_to(ROOT).as_posix()
            for p in imported
            if not (p.parent in TOP_PACKAGES and p.name == "__init__.py" and _no_code(p))
        }
        deps = [d for d in stage["deps"] if d.split("/")[0] in ("ganlib", "pipeline")]

        def covers(dep: str, file: str) -> bool:
            return file == dep or file.startswith(dep.rstrip("/") + "/")

        missing = sorted(f for f in files if not any(covers(d, f) for d in deps))
        stale = sorted(d for d in deps if not any(covers(d, f) for f in files))
        assert not missing, f"dvc.yaml stage {name} misses {missing}"
        assert not stale, f"dvc.yaml stage {name} lists code it does not import: {stale}"


SWITCH = re.compile(r"task ?[!=]= ?|\.task in |mode ?== ?.unpaired.")


def test_only_the_task_modules_decide_by_task_name():
    """A task is a record (ganlib.tasks.TASKS): no module outside ganlib/tasks/ compares a
    task's name or the translation mode."""
    hits = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for top in ("ganlib", "pipeline")
        for path in sorted((ROOT / top).rglob("*.py"))
        if "tasks" not in path.relative_to(ROOT).parts
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if SWITCH.search(line)
    ]
    assert not hits, "\n".join(hits)


def test_no_import_circles():
    """No module imports, at import time, a module that imports it back (at any depth)."""
    graph = {p: _imports(p, eager_only=True) for p in (ROOT / "ganlib").rglob("*.py")}
    state: dict[Path, int] = {}  # 1 on the stack, 2 done

    def visit(node: Path, stack: list[Path]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError(" -> ".join(str(p.relative_to(ROOT)) for p in cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_metrics_are_pure():
    """ganlib.metrics computes numbers from arrays, features and networks: it imports no task,
    training, evaluation or stage code (not even lazily)."""
    banned = ("tasks", "training", "evaluation", "featurize", "tuning", "registry", "serving")
    for path in sorted((ROOT / "ganlib" / "metrics").rglob("*.py")):
        for dep in _imports(path):
            parts = dep.relative_to(ROOT).parts
            assert parts[0] != "pipeline" and parts[1].removesuffix(".py") not in banned, (
                f"{path.relative_to(ROOT)} imports {dep.relative_to(ROOT)}"
            )


RUN_LENGTH = ("steps", "ckpt_every", "log_every", "sample_every")  # a trial sets its own


def training_params(stage: str) -> list[str]:
    """The params the ``tune`` or ``train`` stage reads, as dvc.yaml must list them: a task
    section's own keys but those that only say what is evaluated (its ``EVAL_ONLY``), its
    ``train`` and ``tune`` profiles and its variant profiles; not its ``eval``, ``register``
    or ``data`` profiles, which only other stages read (``data`` through the shards)."""
    import dataclasses
    import typing

    from ganlib.config import Params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    hints = typing.get_type_hints(Params)
    out = ["task", "seed", "mlflow", "storage"]
    if stage == "tune":  # the sweep does not depend on how long the final run trains
        out += ["tune", *(f"train.{k}" for k in raw["train"] if k not in RUN_LENGTH)]
    else:
        out += ["tune.enabled", "train"]
    for field in dataclasses.fields(Params):
        cls = hints[field.name]
        if getattr(cls, "FAMILY", False):  # an architecture's own section (r3gan:)
            out.append(field.name)
        if not getattr(cls, "PROFILE", False):
            continue
        name, section = field.name, raw[field.name]
        own = [f.name for f in dataclasses.fields(cls) if f.name not in cls.EVAL_ONLY]
        assert set(own) <= set(section), f"params.yaml: {name} lacks some of {own}"
        out += [f"{name}.{k}" for k in own]
        out += [f"{name}.{k}" for k in ("train", "tune") if k in section]
        key = getattr(cls, "VARIANT", None)
        variants = typing.get_args(typing.get_type_hints(cls)[key]) if key else ()
        out += [f"{name}.{v}" for v in variants if v in section]
    return out


def test_dvc_params_of_training_stages_leave_out_what_only_evaluation_reads():
    """Changing an evaluate-only key (``inpainting.eval_images``) re-runs no sweep and no
    training: the tune and train stages list every key they read, and no other."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in ("tune", "train"):
        assert sorted(stages[stage]["params"]) == sorted(training_params(stage)), stage
