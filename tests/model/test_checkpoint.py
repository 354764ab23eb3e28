"""Self-describing checkpoints: round trip, fingerprints, bad files, export."""

from __future__ import annotations

import pytest
import torch

from karyosearch.model.checkpoint import (
    CheckpointError,
    load_encoder,
    read_checkpoint,
    save_checkpoint,
)
from karyosearch.model.encoder import (
    build_encoder,
)

from .test_encoder import tiny


def test_checkpoint_round_trip_gives_identical_embeddings(tmp_path):
    torch.manual_seed(1)
    model = build_encoder(tiny()).eval()
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        before = model(x)
    ckpt = save_checkpoint(tmp_path / "m.pt", model, train={"split": "paper", "seed": 3})
    loaded = load_encoder(tmp_path / "m.pt")
    with torch.no_grad():
        after = loaded(x)
    assert torch.equal(before, after)
    assert loaded.cfg == model.cfg and loaded.fingerprint == ckpt.fingerprint
    assert loaded.train_record == {"split": "paper", "seed": 3}
    assert torch.equal(loaded.unit_proxies(), model.unit_proxies())


def test_fingerprint_differs_between_models(tmp_path):
    torch.manual_seed(1)
    a = save_checkpoint(tmp_path / "a.pt", build_encoder(tiny()))
    b = save_checkpoint(tmp_path / "b.pt", build_encoder(tiny()))
    assert a.fingerprint != b.fingerprint


def test_bad_checkpoint_files_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_encoder(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a karyosearch checkpoint"):
        load_encoder(junk)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a karyosearch checkpoint"):
        load_encoder(tmp_path / "other.pt")


def test_exported_half_checkpoint_is_smaller_and_a_model_of_its_own(tmp_path):
    torch.manual_seed(2)
    model = build_encoder(tiny()).eval()
    full = save_checkpoint(tmp_path / "m.pt", model, train={"seed": 0})
    from karyosearch.model.checkpoint import export_checkpoint

    half = export_checkpoint(tmp_path / "m.pt", tmp_path / "h.pt")
    assert (tmp_path / "h.pt").stat().st_size < 0.6 * (tmp_path / "m.pt").stat().st_size
    assert half.fingerprint != full.fingerprint
    loaded = load_encoder(tmp_path / "h.pt")
    assert loaded.fingerprint == half.fingerprint and loaded.train_record == {"seed": 0}
    from karyosearch.model.encoder import weights_fingerprint

    assert weights_fingerprint(loaded) == half.fingerprint  # what loading gives is what was named
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=2e-2)


def test_the_bundled_model_still_loads_as_it_was_trained():
    """models/bioimlab-proxy-resnext-cbam-128px.pt loads with its config's size (128 px), the
    fingerprint it was shipped with and the split its card names (`paper`, seed 1)."""
    from pathlib import Path

    models = Path(__file__).resolve().parents[2] / "models"
    bundled = models / "bioimlab-proxy-resnext-cbam-128px.pt"
    if not bundled.exists():
        pytest.skip("bundled model not in this checkout")
    model = load_encoder(bundled)
    assert model.cfg.image_size == 128 and model.cfg.arch == "proxy-resnext-cbam"
    assert model.fingerprint == read_checkpoint(bundled).fingerprint
    assert model.train_record["split"] == "paper" and model.train_record["seed"] == 1


def corrupt_copy(src, dst, n: int = 64):  # noqa: ANN001, ANN201
    """A copy of checkpoint `src` at `dst` with `n` bytes flipped inside its largest tensor's
    data (torch's zip container stores tensors uncompressed and does not check them)."""
    import shutil
    import struct
    import zipfile

    shutil.copyfile(src, dst)
    with zipfile.ZipFile(dst) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(dst, "r+b") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        fh.seek(start)
        block = bytearray(fh.read(n))
        fh.seek(start)
        fh.write(bytes(b ^ 0xFF for b in block))
    return dst


def test_corrupt_weights_are_refused_with_one_clear_line(tmp_path):
    torch.manual_seed(3)
    save_checkpoint(tmp_path / "m.pt", build_encoder(tiny()))
    bad = corrupt_copy(tmp_path / "m.pt", tmp_path / "bad.pt")
    assert bad.read_bytes() != (tmp_path / "m.pt").read_bytes()
    message = f"{bad}: the weights do not match their fingerprint: the file is corrupt"
    with pytest.raises(CheckpointError) as err:
        load_encoder(bad)
    assert str(err.value) == message
    with pytest.raises(CheckpointError, match="do not match their fingerprint"):
        read_checkpoint(bad)


def test_half_checkpoints_verify_whether_or_not_they_were_rounded_first(tmp_path):
    torch.manual_seed(4)
    model = build_encoder(tiny()).eval()
    ckpt = save_checkpoint(tmp_path / "h.pt", model, half=True)  # not rounded beforehand
    assert load_encoder(tmp_path / "h.pt").fingerprint == ckpt.fingerprint


@pytest.mark.parametrize(
    ("name", "fingerprint", "preprocess_version"),
    [
        ("bioimlab-proxy-resnext-cbam-128px.pt", "d608fd5069436e8e", 2),
        ("gband612-proxy-resnext-cbam-96px.pt", "d380549af926d687", 2),
    ],
)
def test_shipped_models_verify_and_keep_their_fingerprints(
    name: str, fingerprint: str, preprocess_version: int
):
    """The fingerprints models/README.md gives (an index records them), and the preprocessing
    each was trained on (the crops it is fed)."""
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[2] / "models" / name
    if not shipped.is_file():
        pytest.skip(f"{shipped} is not there")
    model = load_encoder(shipped)
    assert model.fingerprint == fingerprint
    assert model.cfg.preprocess_version == preprocess_version


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_every_supported_preprocessing_loads_and_no_other(tmp_path, version: int):
    """An encoder trained by an earlier karyosearch keeps loading (and is fed its own crops,
    `embed_files`); one from a version this karyosearch cannot prepare is refused."""
    from dataclasses import replace

    from karyosearch.data.image import PREPROCESS_VERSIONS

    torch.manual_seed(1)
    model = build_encoder(replace(tiny(), preprocess_version=version))
    save_checkpoint(tmp_path / "m.pt", model)
    if version in PREPROCESS_VERSIONS:
        assert load_encoder(tmp_path / "m.pt").cfg.preprocess_version == version
    else:
        with pytest.raises(CheckpointError, match=f"trained on preprocessing v{version}"):
            load_encoder(tmp_path / "m.pt")
