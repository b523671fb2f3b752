"""The `dw` entry point: the command table matches the stage modules, and help imports no stage."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

from dw_assets.cli import COMMANDS, build_parser


def test_command_table_matches_what_the_stage_modules_register() -> None:
    sub = argparse.ArgumentParser().add_subparsers()
    for module in dict.fromkeys(m for m, _ in COMMANDS.values()):
        before = set(sub.choices)
        importlib.import_module(module).register(sub)
        for name in set(sub.choices) - before:
            assert COMMANDS.get(name, ("?",))[0] == module, f"`dw {name}` is registered by {module}: add it to COMMANDS"
    assert set(sub.choices) == set(COMMANDS)
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert helps == {name: help_text for name, (_, help_text) in COMMANDS.items()}


def test_help_lists_every_command_without_importing_a_stage() -> None:
    code = ("import sys\nfrom dw_assets.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "heavy = sorted(m for m in ('dagster', 'deltalake', 'duckdb', 'polars', 'pandas', 'boto3', 'matplotlib',"
            " 'confluent_kafka', 'dw_assets.lakehouse', 'dw_assets.onboarding') if m in sys.modules)\n"
            "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    for name in COMMANDS:
        assert name in out


def test_a_command_gets_its_full_options_and_only_its_module() -> None:
    args = build_parser(["stack", "status", "--json"]).parse_args(["stack", "status", "--json"])
    assert args.command == "stack" and callable(args.func)
    code = ("import sys\nfrom dw_assets.cli import build_parser\nbuild_parser(['--home', '/x', 'stack', 'status'])\n"
            "print('LAKE', 'dw_assets.lakehouse.commands' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "LAKE False" in out
