"""The `edgetds` entry point: help, version, and unknown commands."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgetds import __version__
from edgetds.cli import main


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"edgetds {__version__}"


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "usage: edgetds" in err
    assert "demo" in err


def test_unknown_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_module_entry_point_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edgetds", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    assert "Every subcommand has its own --help with examples." in out.stdout
