"""The repository tells one story: CI runs the README's commands; the CLI reads shards."""

from __future__ import annotations

import re
from pathlib import Path

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
