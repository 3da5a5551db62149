"""The ``obliviate`` CLI registers its sub-commands lazily: a module is imported when its command runs."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from obliviate.proxy.cli import LAZY_COMMANDS, build_parser


def test_top_level_help_lists_every_command_without_importing_them() -> None:
    code = (
        "import sys; from obliviate.proxy.cli import build_parser\n"
        "text = build_parser(['serve']).format_help()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('obliviate.evals', 'obliviate.unlearn', "
        "'obliviate.guards.cli', 'obliviate.proxy.cli_forget'))))\n"
        "print(text)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded, text = out.split("\n", 1)
    assert loaded == "[]"
    for name in ["serve", "models", *LAZY_COMMANDS]:
        assert name in text


@pytest.mark.parametrize("module", sorted({module for module, _ in LAZY_COMMANDS.values()}))
def test_table_matches_what_each_module_registers(module: str) -> None:
    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(module).register(sub)
    registered = {action.dest: action.help for action in sub._choices_actions}
    assert registered == {name: help_text for name, (mod, help_text) in LAZY_COMMANDS.items() if mod == module}


def test_chosen_command_gets_its_full_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser(["unlearn", "--help"]).parse_args(["unlearn", "--help"])
    assert "--method" in capsys.readouterr().out
