import os
import shutil

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipeline.data.generate import class_wnid
from pipeline.data.labels import parse_synset_mapping, parse_val_solution
from pipeline.data.sources import list_source

from images import jpeg


def _labels_by_key(listing):
    return {r.key: (r.split, r.wnid, r.label) for r in listing.records}


def test_kaggle_layout(kaggle_tree):
    listing = list_source("imagenet_kaggle", kaggle_tree)
    assert len(listing.classes) == 6 and listing.classes.wnids[0] == class_wnid(0)
    assert len(listing.split("train")) == 48 and len(listing.split("val")) == 12 and not listing.errors
    for r in listing.split("train"):
        assert r.key.startswith(r.wnid) and listing.classes.wnids[r.label] == r.wnid


def test_official_tars_agree_with_kaggle_on_every_label(kaggle_tree, tars_tree):
    kaggle = _labels_by_key(list_source("imagenet_kaggle", kaggle_tree))
    tars = list_source("imagenet_tars", tars_tree)
    assert not tars.errors
    # same seed, same images: val labels went through ILSVRC2012_IDs and meta.mat, train through synset tars
    assert _labels_by_key(tars) == kaggle
    assert "n99999999" not in tars.classes.wnids  # the non-leaf synset of meta.mat is no class


def test_imagefolder_with_and_without_splits(imagefolder_tree, tmp_path):
    listing = list_source("imagefolder", imagefolder_tree)
    assert len(listing.split("train")) == 48 and len(listing.split("val")) == 12
    flat = tmp_path / "flat"
    shutil.copytree(os.path.join(imagefolder_tree, "train"), flat)
    a = list_source("imagefolder", str(flat), val_fraction=0.25, seed=3)
    b = list_source("imagefolder", str(flat), val_fraction=0.25, seed=3)
    assert [(r.key, r.split) for r in a.records] == [(r.key, r.split) for r in b.records]
    assert len(a.split("val")) == 12  # 2 of 8 per class


def test_digits_split_is_deterministic_and_stratified():
    a = list_source("digits", None, val_fraction=0.1, seed=0)
    b = list_source("digits", None, val_fraction=0.1, seed=0)
    c = list_source("digits", None, val_fraction=0.1, seed=1)
    assert len(a.records) == 1797 and len(a.classes) == 10
    def val_keys(listing):
        return {r.key for r in listing.split("val")}

    assert val_keys(a) == val_keys(b) and val_keys(a) != val_keys(c)
    assert 170 <= len(a.split("val")) <= 190
    assert {r.label for r in a.split("val")} == set(range(10))


def test_max_images_per_class():
    listing = list_source("digits", None, val_fraction=0.1, max_images_per_class=5)
    assert len(listing.split("train")) == 50 and len(listing.split("val")) == 50


def test_parquet_hugging_face_layout(tmp_path):
    names = ["tench", "goldfish", "shark"]
    metadata = {b"huggingface": ('{"info": {"features": {"label": {"names": %s, "_type": "ClassLabel"}}}}' % str(names).replace("'", '"')).encode()}
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image_type), ("label", pa.int64())], metadata=metadata)
    for split, n in (("train", 7), ("validation", 3)):
        rows = {"image": [{"bytes": jpeg(20 + i, 20), "path": f"{split}_{i}.JPEG"} for i in range(n)],
                "label": [i % 3 for i in range(n)]}
        rows["label"][0] = 7  # out of range: counted, not fatal
        pq.write_table(pa.table(rows, schema=schema), tmp_path / f"{split}-00000-of-00001.parquet", row_group_size=2)
    pq.write_table(pa.table({"image": [{"bytes": jpeg(), "path": "t.JPEG"}], "label": [-1]}, schema=schema), tmp_path / "test-00000-of-00001.parquet")
    listing = list_source("parquet", str(tmp_path))
    assert listing.classes.names == tuple(names)
    assert len(listing.split("train")) == 6 and len(listing.split("val")) == 2
    assert [e.reason for e in listing.errors] == ["unknown_synset", "unknown_synset"]
    from pipeline.data.fetch import RecordReader
    from pipeline.data.preprocess import decode_image

    with RecordReader(pafs.LocalFileSystem()) as reader:
        for record, data in reader.read_all(listing.records):
            assert decode_image(data, 8).shape == (8, 8, 3)


def test_mapping_with_duplicated_synset_names_file_and_line():
    text = "n01440764 tench\nn01443537 goldfish\nn01440764 tench again\n"
    with pytest.raises(ValueError, match=r"LOC_synset_mapping.txt:3: synset n01440764 duplicated \(first on line 1\)"):
        parse_synset_mapping(text, "LOC_synset_mapping.txt")


def test_mapping_with_missing_synset_names_file_and_line():
    with pytest.raises(ValueError, match=r"map.txt:2: .*'goldfish'.*missing synset"):
        parse_synset_mapping("n01440764 tench\ngoldfish\n", "map.txt")


def test_mapping_synset_without_training_folder(tmp_path, kaggle_tree):
    root = tmp_path / "k"
    shutil.copytree(kaggle_tree, root)
    with open(root / "LOC_synset_mapping.txt", "a") as f:
        f.write("n01234567 a class with no images\n")
    with pytest.raises(ValueError, match=r"LOC_synset_mapping.txt: 1 synset\(s\) have no folder .*n01234567 \(line 7\)"):
        list_source("imagenet_kaggle", str(root))


def test_val_solution_duplicate_and_missing_synset():
    with pytest.raises(ValueError, match=r"sol.csv:3: image ILSVRC2012_val_00000001 listed twice"):
        parse_val_solution("ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2 3 4\nILSVRC2012_val_00000001,n01440764 1 2 3 4\n", "sol.csv")
    with pytest.raises(ValueError, match=r"sol.csv:2: .*missing synset"):
        parse_val_solution("ImageId,PredictionString\nILSVRC2012_val_00000001,\n", "sol.csv")


def test_unknown_synsets_are_counted_not_fatal(tmp_path, kaggle_tree):
    root = tmp_path / "k"
    shutil.copytree(kaggle_tree, root)
    stray = root / "ILSVRC/Data/CLS-LOC/train/n07777777"
    stray.mkdir()
    (stray / "n07777777_1.JPEG").write_bytes(jpeg())
    solution = (root / "LOC_val_solution.csv").read_text().splitlines()
    image_id = solution[1].split(",")[0]
    solution[1] = f"{image_id},n07777777 1 1 5 5"
    (root / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n")
    listing = list_source("imagenet_kaggle", str(root))
    assert sorted(e.reason for e in listing.errors) == ["unknown_synset", "unknown_synset"]
    assert len(listing.split("train")) == 48 and len(listing.split("val")) == 11
