import numpy as np
from PIL import Image

from pipeline.data.generate import COLOURS, SHAPES, TreeSpec, generate_tree, render


def _foreground(image: np.ndarray) -> np.ndarray:
    """The drawn shape: saturated or bright pixels (the background is dark gray noise)."""
    spread = image.max(-1).astype(int) - image.min(-1).astype(int)
    return (spread > 60) | (image.min(-1) > 180)


def _features(c: int, i: int, seed: int):
    image = np.asarray(render(c, np.random.default_rng([seed, c, i]), 48))
    mask = _foreground(image)
    colour = image[mask].mean(0)
    ys, xs = np.nonzero(mask)
    box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    shape = np.asarray(Image.fromarray(box.astype(np.uint8) * 255).resize((12, 12), Image.BILINEAR), np.float32) / 255
    return colour, shape


def test_classes_are_visible_in_the_images():
    """Colour and shape (position and size normalised away) identify the class."""
    classes = list(range(len(SHAPES) * 2))  # every shape in two colours
    templates = {c: np.mean([_features(c, i, 0)[1] for i in range(8)], 0) for c in classes}
    palette = list(COLOURS.values())
    correct = total = 0
    for c in classes:
        for i in range(6):
            colour, shape = _features(c, i, 1)
            colour_guess = int(np.argmin([np.abs(colour - np.array(p)).sum() for p in palette]))
            shape_guess = min(classes, key=lambda k: np.abs(shape - templates[k]).mean()) % len(SHAPES)
            correct += colour_guess == c // len(SHAPES) and shape_guess == c % len(SHAPES)
            total += 1
    assert correct / total >= 0.9


def test_generation_is_deterministic(tmp_path):
    spec = TreeSpec(num_classes=3, train_per_class=2, val_per_class=1, image_size=16, layout="tars", seed=5)
    a = generate_tree(str(tmp_path / "a"), spec)
    b = generate_tree(str(tmp_path / "b"), spec)
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"):
        assert open(f"{a}/{name}", "rb").read() == open(f"{b}/{name}", "rb").read()
    assert generate_tree(a, spec) == a  # a finished tree is reused
