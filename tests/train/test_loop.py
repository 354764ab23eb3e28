"""Training smoke tests: a tiny run on 16 made-up images runs, lowers the loss, resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from karyosearch.data.image import foreground_area, load, load_prepared
from karyosearch.errors import UserError
from karyosearch.labels import CLASS_NAMES
from karyosearch.model.checkpoint import load_encoder
from karyosearch.model.embed import embed_arrays, embed_files
from karyosearch.train.loop import train
from karyosearch.train.recipe import TrainOptions

from ..conftest import chromosome_array, write_image

# No augmentation, constant learning rate, small batches: the loss must fall on 16 images.
PLAIN = {
    "m_per_class": 2,
    "classes_per_batch": 4,
    "ema": 0.0,
    "rotate": 0.0,
    "scale": (1.0, 1.0),
    "translate": 0.0,
    "flips": False,
    "vertical_flips": False,
    "intensity": 0.0,
    "schedule": "plateau",
    "lr": 1e-3,
    "proxy_lr_mult": 1.0,
    "label_smoothing": 0.0,
}


def make_folder_dataset(root, per_class: int = 5, classes: int = 4):
    """Made-up images in `<root>/<class>/`: each class a distinct length and band pattern."""
    for c in range(classes):
        for i in range(per_class):
            img = chromosome_array(h=24 + 12 * c, w=14, seed=100 * c + i)
            write_image(root / CLASS_NAMES[c] / f"{c}_{i}.png", img)
    return root


def test_one_epoch_runs_and_writes_a_self_describing_checkpoint(tmp_path):
    data = make_folder_dataset(tmp_path / "data")
    out = tmp_path / "m.pt"
    record = train(
        TrainOptions(data=str(data), out=str(out), epochs=1, image_size=32, overrides=PLAIN),
        log=lambda s: None,
    )
    model = load_encoder(out)
    assert model.cfg.image_size == 32 and model.cfg.arch == "proxy-resnext-cbam"
    assert record["split"] == "paper" and record["seed"] == 0 and len(record["curve"]) == 1
    assert model.train_record["val_accuracy"] is not None
    assert (tmp_path / "m.pt.last").exists()
    # the image size is stored once, in the config (the returned record names it too)
    assert record["image_size"] == 32
    assert "image_size" not in model.train_record
    assert "image_size" not in model.train_record["recipe"]


def test_training_lowers_the_loss_and_resume_continues(tmp_path):
    data = make_folder_dataset(tmp_path / "data")
    out = tmp_path / "m.pt"
    opts = TrainOptions(
        data=str(data), out=str(out), epochs=6, image_size=32, overrides=PLAIN, max_minutes=0.0
    )  # stops after the first epoch
    first = train(opts, log=lambda s: None)
    assert len(first["curve"]) == 1
    resumed = train(TrainOptions(data=str(data), out=str(out), resume=True), log=lambda s: None)
    losses = [p["train_loss"] for p in resumed["curve"]]
    assert [p["epoch"] for p in resumed["curve"]] == [1, 2, 3, 4, 5, 6]
    assert losses[-1] < losses[0]
    assert resumed["image_size"] == 32 and load_encoder(out).cfg.image_size == 32


def test_fixed_scale_canvas_reaches_the_checkpoint_and_embed_files(tmp_path):
    """The canvas chosen in training is stored in the checkpoint and used by embed_files."""
    data = make_folder_dataset(tmp_path / "data")
    out = tmp_path / "m.pt"
    overrides = dict(PLAIN, canvas_percentile=90.0)
    record = train(
        TrainOptions(data=str(data), out=str(out), epochs=2, image_size=32, overrides=overrides),
        log=lambda s: None,
    )
    model = load_encoder(out)
    assert model.cfg.canvas == record["canvas"] > 0
    path = sorted((data / "1").glob("*.png"))[0]
    embedded = embed_files(model, [path])
    got = embedded.embeddings
    assert embedded.areas.tolist() == [foreground_area(load(path))]  # the size the frame hides
    want, _ = embed_arrays(model, load_prepared(path, 32, canvas=model.cfg.canvas)[None])
    np.testing.assert_allclose(got, want, atol=1e-5)
    full, scaled = load_prepared(path, 32, canvas=model.cfg.canvas)
    np.testing.assert_array_equal(full, load_prepared(path, 32))  # channel 0: the filled frame
    assert scaled.sum() < full.sum()  # channel 1: the same crop smaller, at the canvas scale


@pytest.mark.parametrize("arch", ["resnext", "proxy-resnext"])
def test_baselines_train_too(tmp_path, arch):
    data = make_folder_dataset(tmp_path / "data", per_class=3)
    record = train(
        TrainOptions(
            data=str(data),
            out=str(tmp_path / "m.pt"),
            arch=arch,
            epochs=1,
            image_size=32,
            overrides=PLAIN,
        ),
        log=lambda s: None,
    )
    assert np.isfinite(record["curve"][0]["train_loss"])


def test_init_starts_from_a_checkpoint_and_refuses_a_leak_or_another_network(tmp_path):
    data = make_folder_dataset(tmp_path / "data")
    first = tmp_path / "a.pt"
    train(
        TrainOptions(data=str(data), out=str(first), epochs=1, image_size=32, overrides=PLAIN),
        log=lambda s: None,
    )
    source = load_encoder(first)
    # learning rate 0: the fine-tuned network keeps the weights it started from (a random start
    # with seed 0 would be the first network's before its epoch of training)
    frozen = {**PLAIN, "lr": 0.0}
    second = tmp_path / "b.pt"
    record = train(
        TrainOptions(
            data=str(data),
            out=str(second),
            epochs=1,
            image_size=32,
            overrides=frozen,
            init=str(first),
        ),
        log=lambda s: None,
    )
    assert record["init"]["fingerprint"] == source.fingerprint
    assert record["init"]["seed"] == 0 and record["init"]["path"] == str(first)
    started = load_encoder(second)
    key = "features.0.weight"
    assert torch.equal(started.state_dict()[key], source.state_dict()[key])

    with pytest.raises(UserError, match="split seed 0 of this dataset"):
        train(  # seed 1's test images are among the --init checkpoint's training images
            TrainOptions(
                data=str(data),
                out=str(tmp_path / "c.pt"),
                seed=1,
                epochs=1,
                image_size=32,
                overrides=PLAIN,
                init=str(first),
            ),
            log=lambda s: None,
        )
    with pytest.raises(UserError, match="another network: arch 'proxy-resnext-cbam'"):
        train(  # (another input size is allowed: the weights do not depend on it)
            TrainOptions(
                data=str(data),
                out=str(tmp_path / "d.pt"),
                arch="proxy-resnext",
                epochs=1,
                image_size=48,
                overrides=PLAIN,
                init=str(first),
            ),
            log=lambda s: None,
        )


def test_joint_training_records_the_second_dataset_and_resumes_with_it(tmp_path):
    from karyosearch.data.datasets import read_dataset
    from karyosearch.evaluation.provenance import resolve_split

    data = make_folder_dataset(tmp_path / "data")
    other = make_folder_dataset(tmp_path / "other", per_class=8)
    out = tmp_path / "m.pt"
    opts = TrainOptions(
        data=str(data),
        out=str(out),
        epochs=2,
        image_size=32,
        overrides={**PLAIN, "also_share": 0.5},
        also=str(other),
        also_seed=3,
        max_minutes=0.0,
    )  # stops after the first epoch
    first = train(opts, log=lambda s: None)
    also = first["also"]
    assert (also["split"], also["seed"], also["layout"]) == ("paper", 3, "folders")
    assert also["dataset"] == str(other.resolve()) and 0 < also["n_train"] < 32
    assert first["n_train"] < 20  # the main dataset's own count
    resumed = train(TrainOptions(data=str(data), out=str(out), resume=True), log=lambda s: None)
    assert resumed["also"] == also and len(resumed["curve"]) == 2
    # benched on the second dataset, the model tests where its joint training left off
    record = load_encoder(out).train_record
    assert resolve_split(record, read_dataset(other), None, None) == ("paper", 3, [])
    with pytest.raises(UserError, match="the dataset being trained on"):
        train(
            TrainOptions(data=str(data), out=str(tmp_path / "x.pt"), epochs=1, also=str(data)),
            log=lambda s: None,
        )


def _as_preprocessing(path, version: int) -> None:
    """Rewrite checkpoint `path` as if an earlier karyosearch, preparing images with
    `version`, had written it (the fingerprint covers the weights only)."""
    raw = torch.load(path, map_location="cpu", weights_only=True)
    raw["config"]["preprocess_version"] = version
    torch.save(raw, path)


def test_a_run_on_older_preprocessing_is_not_resumed_but_its_weights_start_a_new_one(tmp_path):
    from karyosearch.data.image import PREPROCESS_VERSION

    data = make_folder_dataset(tmp_path / "data")
    out = tmp_path / "m.pt"
    opts = TrainOptions(
        data=str(data), out=str(out), epochs=3, image_size=32, overrides=PLAIN, max_minutes=0.0
    )
    train(opts, log=lambda s: None)
    _as_preprocessing(tmp_path / "m.pt.last", 1)
    with pytest.raises(UserError, match="started on preprocessing v1"):  # one run, one pipeline
        train(TrainOptions(data=str(data), out=str(out), resume=True), log=lambda s: None)
    _as_preprocessing(out, 1)
    assert load_encoder(out).cfg.preprocess_version == 1  # still served, with its own crops
    record = train(  # its weights are a start like any other; the new model is today's
        TrainOptions(
            data=str(data), out=str(tmp_path / "n.pt"), epochs=1, image_size=32,
            overrides=PLAIN, init=str(out),
        ),
        log=lambda s: None,
    )  # fmt: skip
    assert record["init"]["path"] == str(out)
    assert load_encoder(tmp_path / "n.pt").cfg.preprocess_version == PREPROCESS_VERSION


def test_margin_trains_a_proxy_network_and_is_refused_for_a_logit_one(tmp_path):
    data = make_folder_dataset(tmp_path / "data", per_class=3)

    def run(arch: str) -> dict:
        opts = TrainOptions(
            data=str(data),
            out=str(tmp_path / arch / "m.pt"),
            arch=arch,
            epochs=1,
            image_size=32,
            overrides=PLAIN | {"margin": 0.2},
        )
        return train(opts, log=lambda s: None)

    record = run("proxy-resnext")
    assert record["recipe"]["margin"] == 0.2 and np.isfinite(record["curve"][0]["train_loss"])
    assert load_encoder(tmp_path / "proxy-resnext" / "m.pt").train_record["recipe"]["margin"] == 0.2
    with pytest.raises(UserError, match="margin applies to the proxy networks only"):
        run("resnext")
