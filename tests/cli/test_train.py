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
    for extra, says in [
        (["--also-seed", "1"], "need --also"),
        (["--also", str(data), "--also-split", "random"], "unknown --also-split"),
        (["--also", str(data), "--epochs", "1"], "the dataset being trained on"),
    ]:
        result = runner.invoke(
            app, ["train", "--data", str(data), "--out", str(tmp_path / "m.pt"), *extra]
        )
        assert result.exit_code == 1 and says in result.output, (extra, result.output)
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
        ("also_share=1.0", "[0, 1)"),
    ]:
        result = runner.invoke(
            app, ["train", "--data", str(data), "--out", str(tmp_path / "m.pt"), "--set", bad]
        )
        assert result.exit_code == 1 and says in result.output, (bad, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_export_writes_a_float16_model_of_its_own(tmp_path):
    import torch

    from karyosearch.model.checkpoint import load_encoder, save_checkpoint
    from karyosearch.model.encoder import EncoderConfig, build_encoder

    torch.manual_seed(0)
    src = save_checkpoint(tmp_path / "m.pt", build_encoder(EncoderConfig(image_size=32)))
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tmp_path / "m.pt"), "--out", str(tmp_path / "s.pt")])
    assert result.exit_code == 0, result.output
    shipped = load_encoder(tmp_path / "s.pt")
    assert shipped.fingerprint in result.stdout and shipped.fingerprint != src.fingerprint
    assert (tmp_path / "s.pt").stat().st_size < 0.6 * (tmp_path / "m.pt").stat().st_size
    bad = runner.invoke(app, ["export", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and bad.output.strip().startswith("error:")
