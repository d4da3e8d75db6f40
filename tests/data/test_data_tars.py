"""The official train tar (a tar of per-synset tars) truncated at a member boundary and
inside a member: what is whole is kept, what is lost is reported."""
import os
import shutil
import tarfile

from pipeline.data.sources import list_source

TRAIN_TAR = "ILSVRC2012_img_train.tar"


def _copy(tree, tmp_path):
    root = tmp_path / "official"
    shutil.copytree(tree, root)
    return root


def _outer_members(path):
    with tarfile.open(path) as tar:
        return [(m.name, m.offset, m.offset_data, m.size) for m in tar.getmembers()]


def test_untouched_tar_lists_every_image(tars_tree):
    listing = list_source("imagenet_tars", tars_tree)
    assert len(listing.split("train")) == 48 and not listing.errors


def test_truncated_at_a_member_boundary(tars_tree, tmp_path):
    root = _copy(tars_tree, tmp_path)
    path = root / TRAIN_TAR
    members = _outer_members(path)
    cut = members[4][1]  # the header of the fifth synset tar: four synsets whole, no end marker
    os.truncate(path, cut)
    listing = list_source("imagenet_tars", str(root))
    assert len(listing.split("train")) == 4 * 8
    assert {r.wnid for r in listing.split("train")} == {m[0].split(".")[0] for m in members[:4]}
    assert len(listing.split("val")) == 12
    [error] = listing.errors
    assert error.reason == "truncated" and error.origin == TRAIN_TAR and "member boundary" in error.detail


def test_truncated_inside_a_member(tars_tree, tmp_path):
    root = _copy(tars_tree, tmp_path)
    path = root / TRAIN_TAR
    members = _outer_members(path)
    name, _, data_start, _ = members[2]
    with tarfile.open(path) as outer:
        inner = tarfile.open(fileobj=outer.extractfile(name))
        images = [(m.name, m.offset_data, m.size) for m in inner.getmembers()]
    # cut in the middle of the fourth image of the third synset tar
    image_name, image_offset, image_size = images[3]
    os.truncate(path, data_start + image_offset + image_size // 2)
    listing = list_source("imagenet_tars", str(root))
    kept = {r.key for r in listing.split("train")}
    assert len(kept) == 2 * 8 + 3  # two whole synsets and the three whole images before the cut
    assert {i[0].split(".")[0] for i in images[:3]} <= kept
    reasons = sorted((e.reason, e.origin) for e in listing.errors)
    assert ("truncated", f"{TRAIN_TAR}:{name}:{image_name}") in reasons  # the cut image
    assert ("truncated", f"{TRAIN_TAR}:{name}") in reasons  # the rest of its synset tar
    assert ("truncated", TRAIN_TAR) in reasons  # the rest of the archive
    assert len(reasons) == 3


def test_corrupt_header_is_reported(tars_tree, tmp_path):
    root = _copy(tars_tree, tmp_path)
    path = root / TRAIN_TAR
    header = _outer_members(path)[3][1]
    with open(path, "r+b") as f:
        f.seek(header + 148)  # the header checksum field
        f.write(b"garbage!")
    listing = list_source("imagenet_tars", str(root))
    assert len(listing.split("train")) == 3 * 8
    [error] = listing.errors
    assert error.reason == "undecodable" and "corrupt tar header" in error.detail
