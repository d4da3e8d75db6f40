"""An ImageNet-shaped tree of JPEGs whose class is visible in the image, for tests and demos.

Class c is a shape (circle, square, triangle, ...) in a colour, drawn at a random place
and size on a noisy background; images are not square (the short side is image_size),
so ADM's center crop has work to do. Layouts: "kaggle", "tars" (the official ILSVRC2012
tar-of-tars, a flat val folder and a devkit with meta.mat) and "imagefolder".
Deterministic from the seed; written to a temporary directory and renamed into place,
so a finished tree can be reused as a cache.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

# Function-local imports: they bring in SciPy, which importing this module does not need.

LAYOUTS = ("kaggle", "tars", "imagefolder")
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 215, 40),
    "magenta": (210, 50, 200),
    "cyan": (40, 205, 215),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
}
DONE_MARKER = "GENERATED.json"


@dataclass(frozen=True)
class TreeSpec:
    num_classes: int = 10
    train_per_class: int = 20
    val_per_class: int = 5
    image_size: int = 64
    layout: str = "kaggle"
    seed: int = 0
    jpeg_quality: int = 90

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"generated layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.num_classes < 1 or self.image_size < 8:
            raise ValueError("generated tree needs num_classes >= 1 and image_size >= 8")


def class_wnid(c: int) -> str:
    return f"n{90000000 + c:08d}"


def class_description(c: int) -> str:
    colour = list(COLOURS)[(c // len(SHAPES)) % len(COLOURS)]
    variant = c // (len(SHAPES) * len(COLOURS))
    return f"{colour} {SHAPES[c % len(SHAPES)]}" + (f" on band {variant}" if variant else "")


def render(c: int, rng: np.random.Generator, image_size: int) -> Image.Image:
    """One image of class c: shape = c mod 6, colour = (c div 6) mod 8, and for more than
    48 classes a horizontal band position = c div 48."""
    height = image_size
    width = image_size + int(rng.integers(0, image_size // 3 + 1))
    base = rng.integers(60, 120)
    noise = rng.normal(0, 18, size=(height, width, 1)) + rng.normal(0, 6, size=(height, width, 3))
    background = np.clip(base + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    variant = c // (len(SHAPES) * len(COLOURS))
    if variant:
        y = int(height * (0.1 + 0.8 * ((variant * 0.37) % 1.0)))
        draw.rectangle([0, y, width, y + max(1, height // 16)], fill=(30, 30, 30))
    colour = tuple(int(v) for v in np.clip(np.array(list(COLOURS.values())[(c // len(SHAPES)) % len(COLOURS)]) + rng.integers(-15, 16, 3), 0, 255))
    radius = image_size * rng.uniform(0.22, 0.34)
    cx = width / 2 + rng.uniform(-0.12, 0.12) * image_size
    cy = height / 2 + rng.uniform(-0.12, 0.12) * image_size
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    shape = SHAPES[c % len(SHAPES)]
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - radius), (cx + radius, cy + radius), (cx - radius, cy + radius)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - radius), (cx + radius, cy), (cx, cy + radius), (cx - radius, cy)], fill=colour)
    elif shape == "cross":
        t = radius / 3
        draw.rectangle([cx - radius, cy - t, cx + radius, cy + t], fill=colour)
        draw.rectangle([cx - t, cy - radius, cx + t, cy + radius], fill=colour)
    else:
        draw.ellipse(box, outline=colour, width=max(1, int(radius / 3)))
    return image


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _images(spec: TreeSpec):
    """(split, class, index within class/split, JPEG bytes), deterministic."""
    for c in range(spec.num_classes):
        for split, n in (("train", spec.train_per_class), ("val", spec.val_per_class)):
            for i in range(n):
                rng = np.random.default_rng([spec.seed, c, 0 if split == "train" else 1, i])
                yield split, c, i, _jpeg(render(c, rng, spec.image_size), spec.jpeg_quality)


def _tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _val_assignment(spec: TreeSpec) -> list[tuple[int, int]]:
    """Val images are numbered 1..N in a seeded order mixing classes, as in ILSVRC."""
    pairs = [(c, i) for c in range(spec.num_classes) for i in range(spec.val_per_class)]
    order = np.random.default_rng([spec.seed, 7]).permutation(len(pairs))
    return [pairs[k] for k in order]


def _write_meta_mat(path: str, spec: TreeSpec, ilsvrc_ids: dict[int, int]) -> None:
    import scipy.io

    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O"),
             ("children", "O"), ("wordnet_height", "O"), ("num_train_images", "O")]
    synsets = np.zeros((spec.num_classes + 1,), dtype=dtype)
    for c in range(spec.num_classes):
        synsets[c] = (ilsvrc_ids[c], class_wnid(c), class_description(c), "generated", 0, np.zeros((0,)), 0, spec.train_per_class)
    # a non-leaf synset, as the real meta.mat has: it must not become a class
    synsets[spec.num_classes] = (spec.num_classes + 1, "n99999999", "shape", "generated", spec.num_classes,
                                 np.arange(1, spec.num_classes + 1), 1, 0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    scipy.io.savemat(path, {"synsets": synsets.reshape(-1, 1)})


def generate_tree(root: str, spec: TreeSpec) -> str:
    """Write the tree at `root` (reused when a finished one with the same spec is there)."""
    marker = os.path.join(root, DONE_MARKER)
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == asdict(spec):
                return root
        raise ValueError(f"{root} holds a generated tree with a different spec; choose another directory")
    tmp = f"{root}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    images = list(_images(spec))
    train = {(c, i): data for split, c, i, data in images if split == "train"}
    val = {(c, i): data for split, c, i, data in images if split == "val"}
    val_order = _val_assignment(spec)
    if spec.layout == "kaggle":
        _write(os.path.join(tmp, "LOC_synset_mapping.txt"),
               "".join(f"{class_wnid(c)} {class_description(c)}\n" for c in range(spec.num_classes)).encode())
        cls_loc = os.path.join(tmp, "ILSVRC", "Data", "CLS-LOC")
        for (c, i), data in train.items():
            _write(os.path.join(cls_loc, "train", class_wnid(c), f"{class_wnid(c)}_{i}.JPEG"), data)
        rows = ["ImageId,PredictionString"]
        for n, (c, i) in enumerate(val_order, start=1):
            image_id = f"ILSVRC2012_val_{n:08d}"
            _write(os.path.join(cls_loc, "val", image_id + ".JPEG"), val[(c, i)])
            rows.append(f"{image_id},{class_wnid(c)} 1 1 {spec.image_size - 2} {spec.image_size - 2}")
        _write(os.path.join(tmp, "LOC_val_solution.csv"), ("\n".join(rows) + "\n").encode())
    elif spec.layout == "imagefolder":
        for split, items in (("train", train), ("val", val)):
            for (c, i), data in items.items():
                _write(os.path.join(tmp, split, class_wnid(c), f"{class_wnid(c)}_{i}.JPEG"), data)
    else:
        ids = np.random.default_rng([spec.seed, 11]).permutation(spec.num_classes) + 1
        ilsvrc_ids = {c: int(ids[c]) for c in range(spec.num_classes)}
        synset_tars = []
        for c in range(spec.num_classes):
            members = [(f"{class_wnid(c)}_{i}.JPEG", train[(c, i)]) for i in range(spec.train_per_class)]
            synset_tars.append((f"{class_wnid(c)}.tar", _tar_bytes(members)))
        _write(os.path.join(tmp, "ILSVRC2012_img_train.tar"), _tar_bytes(synset_tars))
        truth = []
        for n, (c, i) in enumerate(val_order, start=1):
            _write(os.path.join(tmp, "val", f"ILSVRC2012_val_{n:08d}.JPEG"), val[(c, i)])
            truth.append(str(ilsvrc_ids[c]))
        devkit = os.path.join(tmp, "ILSVRC2012_devkit_t12", "data")
        _write(os.path.join(devkit, "ILSVRC2012_validation_ground_truth.txt"), ("\n".join(truth) + "\n").encode())
        _write_meta_mat(os.path.join(devkit, "meta.mat"), spec, ilsvrc_ids)
    _write(os.path.join(tmp, DONE_MARKER), json.dumps(asdict(spec)).encode())
    os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
    try:
        os.rename(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same tree first
        if not os.path.exists(marker):
            raise
    return root


SOURCE_OF_LAYOUT = {"kaggle": "imagenet_kaggle", "tars": "imagenet_tars", "imagefolder": "imagefolder"}
