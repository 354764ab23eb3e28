"""Dataset readers: the real folders agree with their independent manifests image for image;
made-up layouts (class folders, CSV manifest) are read, autodetected and overridden; files
that cannot be labelled are rejected with a reason, never fatal."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from karyosearch.data.datasets import LAYOUTS, Dataset, DatasetError, Item, read_dataset
from karyosearch.data.survey import survey
from karyosearch.labels import CLASS_NAMES, class_name

from ..conftest import (
    BIOIMLAB,
    FOLDER_NAMES,
    GBAND,
    chromosome_array,
    make_folders_layout,
    need,
    read_manifest,
    write_image,
)

# --- real data against the manifests (no image decoding: fast) ------------------------------


@pytest.fixture(scope="module")
def bioimlab_ds() -> Dataset:
    return read_dataset(need(BIOIMLAB))


@pytest.fixture(scope="module")
def gband_ds() -> Dataset:
    """Read once for the module: listing 28k files takes a second or two."""
    return read_dataset(need(GBAND))


def by_path(dataset: Dataset) -> dict[str, Item]:
    items = {it.path: it for it in dataset.items}
    assert len(items) == len(dataset.items), "an image is listed twice"
    return items


def assert_agrees_with_manifest(dataset: Dataset, root: Path) -> list[dict[str, str]]:
    """Every manifest row with a class is an item with its label, cell and patient, and the
    reader found nothing else. Returns the rows with no class (label_name INVALID_*)."""
    items = by_path(dataset)
    invalid = []
    seen = set()
    base = str(root.resolve())
    for row in read_manifest(root):
        path = os.path.join(base, row["path"])
        if row["label_name"] not in CLASS_NAMES:
            invalid.append(row)
            assert path not in items, f"{path} has no class but was read as one"
            continue
        assert path in items, f"manifest image missing from the reader: {row['path']}"
        item = items[path]
        assert class_name(item.label) == row["label_name"], row["path"]
        assert item.cell_id == row["cell_id"], row["path"]
        assert item.patient_id == row["patient_id"], row["path"]
        seen.add(path)
    assert seen == set(items), f"reader found images not in the manifest: {set(items) - seen}"
    return invalid


def test_bioimlab_agrees_with_manifest(bioimlab: Path, bioimlab_ds: Dataset) -> None:
    ds = bioimlab_ds
    assert ds.layout == "bioimlab"
    assert ds.root == bioimlab.resolve()
    assert assert_agrees_with_manifest(ds, bioimlab) == []
    assert ds.rejected == []
    assert len(ds) == 5474
    assert len({it.cell_id for it in ds.items}) == 119
    assert len({it.patient_id for it in ds.items}) == 119
    counts = Counter(class_name(label) for label in ds.labels)
    assert all(counts[str(k)] == 238 for k in range(1, 23))
    assert counts["X"] == 193 and counts["Y"] == 45


def test_bioimlab_reader_from_inner_folder(bioimlab: Path, bioimlab_ds: Dataset) -> None:
    inner = read_dataset(bioimlab / "single_chromosomes")
    assert inner.layout == "bioimlab"
    assert inner.items == bioimlab_ds.items


def test_gband_agrees_with_manifest(gband: Path, gband_ds: Dataset) -> None:
    ds = gband_ds
    assert ds.layout == "gband"
    invalid = assert_agrees_with_manifest(ds, gband)
    assert [row["label"] for row in invalid] == ["25"]
    assert len(ds) == 28135
    assert len({it.cell_id for it in ds.items}) == 612
    assert len({it.patient_id for it in ds.items}) == 372


def test_gband_rejects_exactly_the_clase25_file(gband_ds: Dataset) -> None:
    ds = gband_ds
    assert len(ds.rejected) == 1
    (rejected,) = ds.rejected
    assert Path(rejected.path).parent.name == "clase25"
    assert "97002569.11" in rejected.path
    assert "25" in rejected.reason and "class" in rejected.reason


def test_items_are_sorted_and_absolute(bioimlab_ds: Dataset) -> None:
    ds = bioimlab_ds
    paths = [it.path for it in ds.items]
    assert paths == sorted(paths)
    assert all(Path(p).is_absolute() for p in paths[:50])


def test_groups_are_patients(gband_ds: Dataset) -> None:
    assert gband_ds.groups() == [it.patient_id for it in gband_ds.items]


def test_real_manifest_read_as_csv_layout(bioimlab: Path, bioimlab_ds: Dataset) -> None:
    """The CSV reader over the ground-truth manifest gives the same items as the folder reader."""
    via_csv = read_dataset(bioimlab / "manifest.csv")
    assert via_csv.layout == "csv"
    assert via_csv.items == bioimlab_ds.items
    assert via_csv.rejected == []


@pytest.mark.slow
def test_gband_survey(gband_ds: Dataset) -> None:
    """Decodes all 28,135 images (~30 s): every one loads, all dark-on-light."""
    report = survey(gband_ds)
    assert report["layout"] == "gband"
    assert report["images"] == 28135
    assert report["cells"] == 612 and report["patients"] == 372
    assert list(report["classes"]) == list(CLASS_NAMES)
    assert sum(report["classes"].values()) == 28135
    assert len(report["rejected"]) == 1
    assert report["polarity"]["dark"] == 28135


# --- made-up layouts ------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    return make_folders_layout(tmp_path / "folders", per_class=2)


def test_folders_layout(folders: Path) -> None:
    ds = read_dataset(folders)
    assert ds.layout == "folders"
    assert len(ds) == 48
    counts = Counter(class_name(label) for label in ds.labels)
    assert counts == {name: 2 for name in CLASS_NAMES}
    for item in ds.items:
        folder = Path(item.path).parent.name
        assert class_name(item.label) == {"23": "X", "24": "Y"}.get(folder, folder)
        assert item.cell_id is None and item.patient_id is None
    assert ds.groups() == [it.path for it in ds.items]  # no cells known: each file alone


def test_folders_junk_is_rejected_not_fatal(folders: Path) -> None:
    ds = read_dataset(folders)
    assert len(ds.rejected) == 1
    assert Path(ds.rejected[0].path).parent.name == "junk"
    assert "junk" in ds.rejected[0].reason


def test_folders_accept_x_y_and_23_24(tmp_path: Path) -> None:
    for name in ("X", "Y", "23", "24", "7"):
        write_image(tmp_path / name / "a.png", chromosome_array(seed=1))
    ds = read_dataset(tmp_path)
    got = sorted((Path(it.path).parent.name, class_name(it.label)) for it in ds.items)
    assert got == [("23", "X"), ("24", "Y"), ("7", "7"), ("X", "X"), ("Y", "Y")]


def test_folders_non_image_file_is_rejected(folders: Path) -> None:
    (folders / "5" / "notes.txt").write_text("scanned on Tuesday\n")
    ds = read_dataset(folders)
    assert len(ds) == 48
    reasons = {Path(r.path).name: r.reason for r in ds.rejected}
    assert "not an image" in reasons["notes.txt"]


def test_folder_names_cover_all_classes() -> None:
    assert len(FOLDER_NAMES) == 24


def write_manifest(root: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    lines = ["path,label,cell_id,patient_id"] + [",".join(r) for r in rows]
    path = root / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def csv_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "csvset"
    rows = []
    for i, label in enumerate(["1", "2", "22", "23", "24", "X", "Y", "25"]):
        name = f"imgs/c{i % 3}_{i}.png"
        write_image(root / name, chromosome_array(seed=i))
        rows.append((name, label, f"cell{i % 3}", f"pat{i % 2}"))
    write_manifest(root, rows)
    return root


def test_csv_layout(csv_dataset: Path) -> None:
    ds = read_dataset(csv_dataset)
    assert ds.layout == "csv"
    assert len(ds) == 7
    assert sorted(class_name(label) for label in ds.labels) == sorted(
        ["1", "2", "22", "X", "Y", "X", "Y"]
    )
    for item in ds.items:
        assert Path(item.path).is_absolute() and Path(item.path).is_file()
        i = int(Path(item.path).stem.split("_")[1])
        assert item.cell_id == f"cell{i % 3}" and item.patient_id == f"pat{i % 2}"


def test_csv_label_25_is_rejected(csv_dataset: Path) -> None:
    ds = read_dataset(csv_dataset)
    assert len(ds.rejected) == 1
    assert ds.rejected[0].path.endswith("c1_7.png")
    assert "25" in ds.rejected[0].reason


def test_csv_file_path_is_autodetected(csv_dataset: Path) -> None:
    ds = read_dataset(csv_dataset / "manifest.csv")
    assert ds.layout == "csv" and len(ds) == 7


def test_csv_without_group_columns(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", chromosome_array())
    (tmp_path / "list.csv").write_text("path,label\na.png,Y\n")
    ds = read_dataset(tmp_path / "list.csv")
    assert [(class_name(it.label), it.cell_id, it.patient_id) for it in ds.items] == [
        ("Y", None, None)
    ]


def test_csv_missing_column(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("file,class\na.png,1\n")
    with pytest.raises(DatasetError, match="missing column"):
        read_dataset(tmp_path)


def test_explicit_layout_overrides_detection(folders: Path) -> None:
    """A folder with class folders and a manifest: auto picks folders, csv can be forced."""
    write_manifest(folders, [("1/img0.png", "5", "c", "p")])
    assert read_dataset(folders).layout == "folders"
    forced = read_dataset(folders, layout="csv")
    assert forced.layout == "csv"
    assert [class_name(it.label) for it in forced.items] == ["5"]


def test_wrong_explicit_layout_is_an_error(folders: Path) -> None:
    for layout in ("bioimlab", "gband"):
        with pytest.raises(DatasetError):
            read_dataset(folders, layout=layout)  # type: ignore[arg-type]


def test_unknown_layout_name(folders: Path) -> None:
    with pytest.raises(DatasetError, match="unknown layout"):
        read_dataset(folders, layout="zip")  # type: ignore[arg-type]
    assert set(LAYOUTS) == {"bioimlab", "gband", "folders", "csv"}


def test_made_up_bioimlab_layout(tmp_path: Path) -> None:
    base = tmp_path / "single_chromosomes"
    for name in ("3 1a.bmp", "3 1b.bmp", "3 23.bmp", "3 24.bmp", "3 7c.bmp", "4 2a.bmp"):
        write_image(base / "3" / name, chromosome_array(seed=2))
    ds = read_dataset(tmp_path)
    assert ds.layout == "bioimlab"
    assert sorted(class_name(it.label) for it in ds.items) == ["1", "1", "X", "Y"]
    assert {it.cell_id for it in ds.items} == {"3"}
    reasons = sorted(r.reason for r in ds.rejected)
    assert len(reasons) == 2 and any("folder 3" in r for r in reasons)


def test_made_up_gband_layout(tmp_path: Path) -> None:
    cell = tmp_path / "single_clase" / "1234.5.tiff"
    for k, i in [(1, 0), (1, 1), (23, 0), (24, 0), (25, 0)]:
        name = f"clase{k}/clase{k}_{i}_1234.5.tiff"
        write_image(cell / name, 255 - chromosome_array(seed=k))
    ds = read_dataset(tmp_path)
    assert ds.layout == "gband"
    assert sorted(class_name(it.label) for it in ds.items) == ["1", "1", "X", "Y"]
    assert {(it.cell_id, it.patient_id) for it in ds.items} == {("1234.5.tiff", "1234")}
    assert [Path(r.path).parent.name for r in ds.rejected] == ["clase25"]


@pytest.mark.parametrize("content", ["empty", "junk_only", "loose_images", "text_file"])
def test_no_dataset_is_an_error(content: str, tmp_path: Path) -> None:
    root = tmp_path / "nothing"
    root.mkdir()
    target = root
    if content == "junk_only":
        write_image(root / "junk" / "a.png", chromosome_array())
    elif content == "loose_images":
        write_image(root / "a.png", chromosome_array())
    elif content == "text_file":
        target = root / "readme.txt"
        target.write_text("no images here\n")
    with pytest.raises(DatasetError) as info:
        read_dataset(target)
    assert str(target) in str(info.value)


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        read_dataset(tmp_path / "absent")


def test_class_folders_without_images_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "X").mkdir()
    with pytest.raises(DatasetError, match="no labelled chromosome images"):
        read_dataset(tmp_path)


def test_survey_of_made_up_folders(folders: Path) -> None:
    (folders / "2" / "broken.png").write_bytes(b"")
    report = survey(read_dataset(folders))
    assert report["layout"] == "folders"
    assert report["images"] == 48
    assert report["classes"] == {name: 2 for name in CLASS_NAMES}
    assert report["cells"] == 0 and report["patients"] == 0
    reasons = {Path(r["path"]).name: r["reason"] for r in report["rejected"]}
    assert reasons["broken.png"] == "empty file"
    assert "junk" in reasons["img0.png"]
    assert report["polarity"] == {"bright": 48, "dark": 0}


# --- entries that are no readable regular file -----------------------------------------------


def test_folders_layout_lists_fifos_loops_and_image_named_folders(folders: Path) -> None:
    from ..conftest import make_special_entries

    made = make_special_entries(folders / "5")
    ds = read_dataset(folders)
    assert len(ds) == 48
    reasons = {Path(r.path).name: r.reason for r in ds.rejected}
    for name, words in made.items():
        assert words in reasons[name], (name, reasons.get(name))


def test_csv_manifest_lists_fifos_loops_and_folders_without_raising(csv_dataset: Path) -> None:
    from ..conftest import make_special_entries

    made = make_special_entries(csv_dataset / "odd")
    rows = (csv_dataset / "manifest.csv").read_text()
    rows += "".join(f"odd/{name},3,cell9,pat9\n" for name in made)
    rows += "imgs/not-there.png,4,cell9,pat9\n"
    (csv_dataset / "manifest.csv").write_text(rows)
    ds = read_dataset(csv_dataset)  # a symlink loop raised RuntimeError in Path.resolve
    assert len(ds) == 7
    reasons = {Path(r.path).name: r.reason for r in ds.rejected}
    for name, words in made.items():
        if name == "folder.png":
            words = "folder"
        assert words in reasons[name], (name, reasons.get(name))
    assert reasons["not-there.png"] == "no such file"
