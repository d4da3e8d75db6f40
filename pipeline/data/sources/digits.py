"""scikit-learn's digits: 1,797 real 8x8 grayscale images (values 0..16), 10 classes."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pipeline.data.labels import ClassSet
from pipeline.data.records import InlineBytes, Record
from pipeline.data.sources.listing import Listing, seeded_val_split

# Function-local imports: they bring in scikit-learn, which importing this module does not need.


def list_digits(val_fraction: float, seed: int) -> Listing:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    records = []
    for i, (image, label) in enumerate(zip(pixels, digits.target)):
        buffer = io.BytesIO()
        Image.fromarray(image, mode="L").save(buffer, format="PNG")
        key = f"digits_{i:04d}"
        records.append(Record(key, int(label), str(int(label)), "train", InlineBytes(buffer.getvalue()), f"sklearn digits #{i}"))
    classes = ClassSet(tuple(str(d) for d in range(10)), tuple(f"digit {d}" for d in range(10)))
    return Listing(classes, seeded_val_split(records, val_fraction, seed))
