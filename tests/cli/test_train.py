"""`karyosearch train` through typer's CliRunner: input errors are one line."""

from __future__ import annotations

from typer.testing import CliRunner

from karyosearch.cli import app

from ..train.test_loop import make_folder_dataset


def test_cli_train_errors_are_one_line(tmp_path):
    runner = CliRunner()
    data = make_folder_dataset(tmp_path / "data")
    result = runner.invoke(
        app, ["train", "--data", str(data), "--out", str(tmp_path / "m.pt"), "--arch", "vit"]
    )
    assert result.exit_code == 1 and "unknown --arch" in result.output
    result = runner.invoke(
        app, ["train", "--data", str(data), "--out", str(tmp_path / "m.pt"), "--preset", "fastest"]
    )
    assert result.exit_code == 1 and "unknown preset" in result.output
    assert "Traceback" not in result.output
    for bad, says in [
        ("rotate", "KEY=VALUE"),
        ("rotate=abc", "KEY=VALUE"),
        ("nosuch=1", "unknown recipe field"),
        ("rotate='x'", "takes a number"),
        ("scale=(1,)", "takes 2 numbers"),
        ("epochs=2.5", "whole number"),
        ("flips=1", "True or False"),
        ("optimizer='lion'", "adamw, sgd"),
    ]:
        result = runner.invoke(
            app, ["train", "--data", str(data), "--out", str(tmp_path / "m.pt"), "--set", bad]
        )
        assert result.exit_code == 1 and says in result.output, (bad, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
