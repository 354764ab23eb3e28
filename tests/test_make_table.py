"""benchmarks/make_table.py on fake run JSONs: grouping, mean ± std, the paper's rows."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import load_benchmark


@pytest.fixture(scope="module")
def make_table() -> ModuleType:
    return load_benchmark("make_table")


def fake_run(seed: int, accuracy: float, r1: float) -> dict:
    return {
        "split": "paper",
        "seed": seed,
        "n_test": 720,
        "arch": "proxy-resnext-cbam",
        "image_size": 64,
        "preset": "default",
        "train_seconds": 600.0 + 60 * seed,
        "train_device": "cuda",
        "accuracy": accuracy,
        "precision": 0.9,
        "recall": 0.8,
        "f1": 0.85,
        "recall_at_k": {"1": r1, "2": 0.95, "4": 0.97, "8": 0.99},
        "train": {"device": "cuda", "device_name": "NVIDIA H200", "recipe": {"epochs": 16}},
        "dataset": {"root": "/data/bioimlab", "layout": "bioimlab", "images": 5474},
        "run": {
            "name": f"bioimlab-proxy-resnext-cbam-paper-s{seed}-default",
            "dataset_name": "bioimlab",
        },
    }


def test_table_averages_seeds_beside_the_paper(make_table: ModuleType, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "a.json").write_text(json.dumps(fake_run(0, 0.90, 0.91)))
    (runs / "b.json").write_text(json.dumps(fake_run(1, 0.92, 0.93)))
    (runs / "notes.json").write_text('{"not": "a run"}')  # skipped, not fatal
    out = tmp_path / "table.md"
    assert make_table.main(["--runs", str(runs), "--out", str(out)]) == 0
    text = out.read_text()
    ours = [line for line in text.splitlines() if line.startswith("| bioimlab |")]
    assert len(ours) == 1  # two seeds, one group
    cells = [c.strip() for c in ours[0].strip("|").split("|")]
    assert cells[:7] == ["bioimlab", "paper", "Proxy-ResNeXt-CBAM", "default", "64", "16", "2"]
    assert cells[7] == "91.00 ± 1.41"  # accuracy: mean and sample std over the two seeds, in %
    assert cells[8] == "90.00 ± 0.00"
    assert cells[11] == "92.00 ± 1.41"  # R@1
    assert cells[15] == "10.5"  # train minutes per run: (10 + 11) / 2
    assert cells[16] == "GPU (NVIDIA H200)"
    # every network's paper row is there, the CBAM one right above ours
    lines = text.splitlines()
    assert "95.86" in lines[lines.index(ours[0]) - 1]
    assert "90.22" in text and "95.30" in text
    header = next(line for line in lines if line.startswith("| dataset"))
    assert all(line.count("|") == header.count("|") for line in lines if line.startswith("| "))


def test_a_run_started_from_another_checkpoint_is_a_row_of_its_own(
    make_table: ModuleType,
) -> None:
    scratch = [fake_run(0, 0.90, 0.91), fake_run(1, 0.92, 0.93)]
    started = [fake_run(s, 0.97, 0.96) for s in (0, 1)]
    for r in started:
        r["train"]["init"] = {"dataset": "/data/gband612", "split": "karyo", "seed": 1}
    # a start from another checkpoint of the same dataset (another seed, a shorter training)
    # is a row of its own too, not averaged with the first
    other = [fake_run(s, 0.95, 0.94) for s in (0, 1)]
    for r in other:
        r["train"]["init"] = {"dataset": "/data/gband612", "split": "karyo", "seed": 2,
                              "recipe": {"epochs": 7}}  # fmt: skip
    results, _, by_seed = make_table.render(scratch + started + other).partition("## Seed by seed")
    rows = [line for line in results.splitlines() if line.startswith("| bioimlab |")]
    presets = sorted(line.split("|")[4].strip() for line in rows)
    assert presets == [
        "default",
        "default, from gband612 karyo s1",
        "default, from gband612 karyo s2 e7",
    ]
    # and each is compared with the same network from scratch on the seeds both ran
    pairs = [line for line in by_seed.splitlines() if line.startswith("| bioimlab |")]
    cells = [c.strip() for c in pairs[0].strip("|").split("|")]
    assert cells[4] == "Proxy-ResNeXt-CBAM from gband612 karyo s1 - from scratch"
    # differences 7 and 5 points (accuracy), 5 and 3 (R@1)
    assert cells[5:] == ["2", "6.00 ± 1.41", "4.00 ± 1.41", "2 of 2 seeds"]
    cells = [c.strip() for c in pairs[1].strip("|").split("|")]
    assert cells[4] == "Proxy-ResNeXt-CBAM from gband612 karyo s2 e7 - from scratch"
    assert cells[5:] == ["2", "4.00 ± 1.41", "2.00 ± 1.41", "2 of 2 seeds"]


def test_runs_on_another_preprocessing_are_a_row_of_their_own(make_table: ModuleType) -> None:
    """Crops made another way (a later `PREPROCESS_VERSION`) are another pipeline: not averaged
    with the v1 runs (which predate the key), nor compared with v1 runs from scratch."""
    v1 = [fake_run(s, 0.90, 0.91) for s in (0, 1)]
    v2 = [{**fake_run(s, 0.95, 0.94), "preprocess_version": 2} for s in (0, 1)]
    for r in v2:
        r["train"] = {**r["train"], "init": {"dataset": "/data/gband612", "split": "karyo",
                                             "seed": 0, "recipe": {"epochs": 14}}}  # fmt: skip
    results, _, by_seed = make_table.render(v1 + v2).partition("## Seed by seed")
    rows = [line for line in results.splitlines() if line.startswith("| bioimlab |")]
    presets = sorted(line.split("|")[4].strip() for line in rows)
    assert presets == ["default", "default, crops v2, from gband612 karyo s0 e14"]
    assert not [line for line in by_seed.splitlines() if "from scratch" in line]


def test_single_seed_shows_the_mean_only(make_table: ModuleType) -> None:
    assert make_table.mean_std([0.5]) == "50.00"
    assert make_table.mean_std([]) == ""


def test_readme_table_is_replaced_and_the_prose_kept(
    make_table: ModuleType, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "a.json").write_text(json.dumps(fake_run(0, 0.90, 0.91)))
    readme = tmp_path / "README.md"
    old_row = "| bioimlab | paper | stale row |"
    readme.write_text(f"# Title\n\nBefore.\n\n{make_table.HEADER}\n|---|\n{old_row}\n\nAfter.\n")
    out = tmp_path / "table.md"
    assert make_table.main(["--runs", str(runs), "--out", str(out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nBefore.\n\n") and text.endswith("\nAfter.\n")
    assert old_row not in text
    table_rows = [line for line in out.read_text().splitlines() if line.startswith("|")]
    assert [line for line in text.splitlines() if line.startswith("|")] == table_rows
    readme.write_text("no table here\n")
    assert make_table.main(["--runs", str(runs), "--out", str(out), "--readme", str(readme)]) == 1
    assert readme.read_text() == "no table here\n"
    missing = ["--runs", str(tmp_path / "nowhere"), "--out", str(tmp_path / "t.md")]
    assert make_table.main(missing) == 1
    assert not (tmp_path / "t.md").exists()


def test_networks_are_compared_on_the_seeds_both_ran(
    make_table: ModuleType, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    for seed, (cbam, proxy) in enumerate([(0.92, 0.90), (0.91, 0.92), (0.95, 0.91)]):
        (runs / f"c{seed}.json").write_text(json.dumps(fake_run(seed, cbam, cbam)))
        plain = {**fake_run(seed, proxy, proxy - 0.01), "arch": "proxy-resnext"}
        (runs / f"p{seed}.json").write_text(json.dumps(plain))
    (runs / "c9.json").write_text(json.dumps(fake_run(9, 0.5, 0.5)))  # no partner: left out
    readme = tmp_path / "README.md"
    stale = "| bioimlab | paper | stale pair |"
    readme.write_text(
        f"{make_table.HEADER}\n|---|\n\nProse.\n\n{make_table.PAIRED_HEADER}\n|---|\n{stale}\n"
    )
    out = tmp_path / "table.md"
    assert make_table.main(["--runs", str(runs), "--out", str(out), "--readme", str(readme)]) == 0
    pairs = [line for line in out.read_text().splitlines() if "Proxy-ResNeXt-CBAM - " in line]
    assert len(pairs) == 1  # one pair of networks ran here, on seeds 0-2
    cells = [c.strip() for c in pairs[0].strip("|").split("|")]
    # differences 2, -1, 4 points: mean 1.67, sample std 2.52; R@1 one point more each
    assert cells[5:] == ["3", "1.67 ± 2.52", "2.67 ± 2.52", "2 of 3 seeds"]
    text = readme.read_text()
    assert stale not in text and pairs[0] in text and "\nProse.\n" in text
    # the results table took only its own rows, not the pairs'
    results_block = text.split("\n\nProse.")[0]
    assert pairs[0] not in results_block


def test_audited_figures_join_a_row_where_every_run_has_them(make_table: ModuleType) -> None:
    runs = [fake_run(0, 0.90, 0.91), fake_run(1, 0.92, 0.93)]
    for r, acc in zip(runs, (0.94, 0.96), strict=True):
        r["audited"] = {"accuracy": acc, "recall_at_k": {"1": acc - 0.01}}
    key = make_table.group_key(runs[0])
    cells = [c.strip() for c in make_table.our_row(key, runs).strip("|").split("|")]
    assert cells[7] == "91.00 ± 1.41 (audited 95.00 ± 1.41)"
    assert cells[11] == "92.00 ± 1.41 (audited 94.00 ± 1.41)"
    del runs[1]["audited"]  # one run without: no audited figure for the row
    cells = [c.strip() for c in make_table.our_row(key, runs).strip("|").split("|")]
    assert cells[7] == "91.00 ± 1.41" and cells[11] == "92.00 ± 1.41"


def test_runs_with_a_recipe_change_are_a_row_of_their_own(make_table: ModuleType) -> None:
    """A run whose recipe was changed (`run_benchmarks.py --set lr=2e-4`) is not averaged with
    the preset's own runs."""
    own = [fake_run(s, 0.90, 0.91) for s in (0, 1)]
    changed = [fake_run(s, 0.95, 0.94) for s in (0, 1)]
    for r in changed:
        r["run"] = {**r["run"], "recipe_overrides": {"lr": 0.0002, "ema": 0.99}}
    results, _, _ = make_table.render(own + changed).partition("## Seed by seed")
    rows = [line for line in results.splitlines() if line.startswith("| bioimlab |")]
    presets = sorted(line.split("|")[4].strip() for line in rows)
    assert presets == ["default", "default, ema=0.99, lr=0.0002"]


def test_runs_trained_jointly_on_a_second_dataset_are_a_row_of_their_own(
    make_table: ModuleType,
) -> None:
    joint = fake_run(0, 0.95, 0.94)
    joint["train"]["also"] = {"dataset": "/data/gband612", "split": "karyo", "seed": 0}
    assert make_table.preset_of(joint) == "default, with gband612 karyo s0"
    assert make_table.group_key(joint) != make_table.group_key(fake_run(0, 0.95, 0.94))


def test_a_staged_recipe_groups_its_seeds(make_table: ModuleType) -> None:
    """Each seed's second stage starts from that seed's own first stage: one recipe, one row;
    a start from another seed (or dataset) stays apart."""

    def staged(seed: int, init_seed: int) -> dict:
        r = fake_run(seed, 0.9, 0.9)
        r["train"]["init"] = {
            "dataset": "/data/bioimlab",
            "split": "paper",
            "seed": init_seed,
            "recipe": {"epochs": 21},
        }
        return r

    keys = {make_table.group_key(staged(s, s)) for s in (0, 1, 2)}
    assert len(keys) == 1
    assert make_table.preset_of(staged(1, 1)) == "default, from the same split and seed e21"
    assert make_table.preset_of(staged(1, 0)) == "default, from bioimlab paper s0 e21"


def test_a_start_made_in_stages_names_each_stage(make_table: ModuleType) -> None:
    """A run started from the second stage of another recipe (21 epochs, then 6 more on the
    same split and seed) names both stages; a stage's own start from another split does not
    count among them."""
    r = fake_run(0, 0.9, 0.9)
    first = {"dataset": "/data/gband612", "split": "karyo", "seed": 0, "recipe": {"epochs": 21}}
    second = {**first, "recipe": {"epochs": 6}, "init": first}
    r["train"]["init"] = second
    assert make_table.preset_of(r) == "default, from gband612 karyo s0 e21+6"
    first["init"] = {"dataset": "/data/bioimlab", "split": "paper", "seed": 0}
    assert make_table.preset_of(r) == "default, from gband612 karyo s0 e21+6"
    r["train"]["init"] = first
    assert make_table.preset_of(r) == "default, from gband612 karyo s0 e21"
