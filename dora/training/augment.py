"""The recipe's augmentation (the authors' main.py `DataAugmentationDINO`, DINO's for k = 0) in two halves.

`plan_clip` draws every random choice of a clip's views from the clip's own generator: the boxes, flips and
photometric parameters (cheap: numbers only; a DataLoader worker does it). `apply_plan` does one clip's pixel
work on the CPU, image by image (the workers' path); `apply_plans` does a whole batch's on any device, each
operation once for all images of a kind with per-image parameters (the device path: one kernel instead of
hundreds of small ones). Both give the views the plan says: the same views from the same seed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from dora.training.config import AugmentConfig

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


# ---------------------------------------------------------------------------------------------
# Geometry: where each view comes from


def crop_params(height: int, width: int, scale: tuple[float, float], gen: torch.Generator,
                ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[float, float, float, float]:
    """torchvision's RandomResizedCrop sampling (10 tries, then a centre crop), on a given generator."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(1, generator=gen).item())
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(1, generator=gen).item())
        w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
        if 0 < w <= width and 0 < h <= height:
            top = (height - h) * torch.rand(1, generator=gen).item()
            left = (width - w) * torch.rand(1, generator=gen).item()
            return top, left, h, w
    side = min(height, width)
    return (height - side) / 2, (width - side) / 2, side, side


def _chance(p: float, gen: torch.Generator) -> bool:
    return torch.rand(1, generator=gen).item() < p


def _uniform(lo: float, hi: float, gen: torch.Generator) -> float:
    return lo + (hi - lo) * torch.rand(1, generator=gen).item()




Box = tuple[float, float, float, float]  # top, left, height, width in source pixels


def _inside(outer: Box, size: int, scale: tuple[float, float], gen: torch.Generator) -> Box:
    """A RandomResizedCrop of `outer` after it is resized to size x size (the recipe's 300 px pre-crop),
    in source pixels: a crop of a crop is a crop, so the frame is resized once, not twice."""
    t1, l1, h1, w1 = outer
    t2, l2, h2, w2 = crop_params(size, size, scale, gen)
    sy, sx = h1 / size, w1 / size
    return t1 + t2 * sy, l1 + l2 * sx, h2 * sy, w2 * sx


def clip_boxes(height: int, width: int, frames: int, cfg: AugmentConfig, gen: torch.Generator) -> dict:
    """Where every view of a clip comes from: {"pre": box, "globals": [[box per frame] per global view],
    "locals": [[box per local crop] per frame]}.

    DoRA (cfg.global_crops == 1, the authors' main.py `DataAugmentationDINO`): one pre-crop per clip
    (RandomResizedCrop 300, scale 0.2-1), the global view a crop of it (224, scale 0.4-1) with the same
    geometry on every frame (the frames are tracked through it), and each frame's local crops
    (112, scale 0.05-0.4) cut from the pre-crop.
    DINO (global_crops == 2, Caron et al.): each frame is an image of its own; its two global crops and
    its local crops are drawn independently of the other frames', from the whole frame.
    """
    if cfg.global_crops == 1:
        pre = crop_params(height, width, cfg.pre_scale, gen)
        shared = _inside(pre, cfg.pre_size, cfg.global_scale, gen)
        globals_ = [[shared] * frames]
        locals_ = [[_inside(pre, cfg.pre_size, cfg.local_scale, gen) for _ in range(cfg.local_crops)]
                   for _ in range(frames)]
    else:
        pre = (0.0, 0.0, float(height), float(width))
        per_frame = [[crop_params(height, width, cfg.global_scale, gen) for _ in range(cfg.global_crops)]
                     for _ in range(frames)]
        globals_ = [[boxes[view] for boxes in per_frame] for view in range(cfg.global_crops)]
        locals_ = [[crop_params(height, width, cfg.local_scale, gen) for _ in range(cfg.local_crops)]
                   for _ in range(frames)]
    return {"pre": pre, "globals": globals_, "locals": locals_}


def _resized(images: torch.Tensor, box: Box, size: int) -> torch.Tensor:
    top, left, h, w = box
    return TF.resized_crop(images, round(top), round(left), max(1, round(h)), max(1, round(w)), [size, size],
                           antialias=True)

# ---------------------------------------------------------------------------------------------
# The plan: every random choice of a clip's views, drawn in the order the recipe draws them


@dataclass
class Photo:
    """One view's photometric choices: colour jitter (its ops in the order applied, 0 brightness, 1 contrast,
    2 saturation, 3 hue, and each op's factor), grayscale, Gaussian blur sigma, solarize (DINO's second view)."""

    order: tuple[int, ...] = ()
    factors: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 0.0)
    gray: bool = False
    sigma: float | None = None
    solarize: bool = False


@dataclass
class View:
    """One view of one frame: its source box, its flip, its photometric choices."""

    box: Box
    flip: bool
    photo: Photo


@dataclass
class ClipPlan:
    """A clip's views: `globals[v][t]` (v: 1 view for DoRA, 2 for DINO), `locals[t][l]`."""

    globals: list[list[View]]
    locals: list[list[View]]


def _draw_photo(cfg: AugmentConfig, blur_p: float, gen: torch.Generator) -> Photo:
    """Colour jitter (random order), grayscale and blur choices, drawn as torchvision's ColorJitter,
    RandomGrayscale and GaussianBlur draw them (a jitter factor is drawn when its op comes up)."""
    photo = Photo()
    if _chance(cfg.jitter_p, gen):
        b, c, s, h = cfg.jitter
        ranges = ((1 - b, 1 + b), (1 - c, 1 + c), (1 - s, 1 + s), (-h, h))
        photo.order = tuple(torch.randperm(4, generator=gen).tolist())
        factors = list(photo.factors)
        for i in photo.order:
            factors[i] = _uniform(*ranges[i], gen)
        photo.factors = tuple(factors)
    photo.gray = _chance(cfg.gray_p, gen)
    if _chance(blur_p, gen):
        photo.sigma = _uniform(0.1, 2.0, gen)
    return photo


def plan_clip(height: int, width: int, frames: int, cfg: AugmentConfig, gen: torch.Generator) -> ClipPlan:
    """Every random choice of one clip's views. Boxes from `clip_boxes`: DoRA's global view has one geometry
    and one flip for the whole clip; DINO crops and flips every frame on its own, as it does every image.
    DoRA's global view is blurred with p 0.1 (the authors' `global_transfo1`); DINO's first global view with
    p 1.0, its second with p 0.1 and solarised with p 0.2, as DINO's. Local crops are flipped with p 0.5 (the
    authors commented their flip out; DINO flips) and blurred with p 0.5."""
    boxes = clip_boxes(height, width, frames, cfg, gen)
    dino = cfg.global_crops == 2
    blur = (cfg.dino_first_blur_p, cfg.global_blur_p) if dino else (cfg.global_blur_p,)
    globals_ = []
    for i, frame_boxes in enumerate(boxes["globals"]):
        if dino:
            flips = [_chance(0.5, gen) for _ in frame_boxes]
        else:
            flips = [_chance(0.5, gen)] * len(frame_boxes)
        photos = [_draw_photo(cfg, blur[i], gen) for _ in frame_boxes]
        if i == 1:
            for photo in photos:
                photo.solarize = _chance(cfg.solarize_p, gen)
        globals_.append([View(box, flip, photo) for box, flip, photo in zip(frame_boxes, flips, photos)])
    locals_ = []
    for frame_boxes in boxes["locals"]:
        views = []
        for box in frame_boxes:
            flip = _chance(0.5, gen)
            views.append(View(box, flip, _draw_photo(cfg, cfg.local_blur_p, gen)))
        locals_.append(views)
    return ClipPlan(globals_, locals_)


# ---------------------------------------------------------------------------------------------
# The pixels: one clip on the CPU (the workers), or a batch on the training device


def blur_kernel_size(side: int) -> int:
    """DINO's GaussianBlur kernel for a view of `side` pixels: about a tenth of it, odd, at least 3."""
    return max(3, int(side / 10) // 2 * 2 + 1)


_JITTER = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def _photometric(image: torch.Tensor, photo: Photo) -> torch.Tensor:
    """One uint8 [3, H, W] image: jitter in the planned order, grayscale, blur, solarize."""
    for i in photo.order:
        image = _JITTER[i](image, photo.factors[i])
    if photo.gray:
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    if photo.sigma is not None:
        kernel = blur_kernel_size(image.shape[-1])
        image = TF.gaussian_blur(image, [kernel, kernel], [photo.sigma])
    if photo.solarize:
        image = TF.solarize(image, 128)
    return image


def _geometry(frames: torch.Tensor, plan: ClipPlan, cfg: AugmentConfig) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The crops and flips of one clip: [global views [T, 3, G, G]], locals [T * L, 3, S, S] (uint8)."""
    globals_ = []
    for views in plan.globals:
        if cfg.global_crops == 2:  # every frame its own crop and flip
            crop = torch.stack([_resized(f, v.box, cfg.global_size) for f, v in zip(frames, views)])
            crop = torch.stack([TF.horizontal_flip(c) if v.flip else c for c, v in zip(crop, views)])
        else:  # the clip's one geometry
            crop = _resized(frames, views[0].box, cfg.global_size)
            if views[0].flip:
                crop = TF.horizontal_flip(crop)
        globals_.append(crop)
    locals_ = []
    for frame, views in zip(frames, plan.locals):
        for v in views:
            crop = _resized(frame, v.box, cfg.local_size)
            locals_.append(TF.horizontal_flip(crop) if v.flip else crop)
    empty = torch.zeros(0, 3, cfg.local_size, cfg.local_size, dtype=torch.uint8, device=frames.device)
    return globals_, torch.stack(locals_) if locals_ else empty


def apply_plan(frames: torch.Tensor, plan: ClipPlan, cfg: AugmentConfig) -> dict[str, torch.Tensor]:
    """{"globals": [T, 3, G, G], "locals": [T, L, 3, S, S]} as uint8 (plus "globals2", DINO's second global
    view), image by image: the workers' path."""
    globals_, locals_ = _geometry(frames, plan, cfg)
    out = {}
    for i, (crop, views) in enumerate(zip(globals_, plan.globals)):
        out["globals" if i == 0 else "globals2"] = torch.stack([_photometric(c, v.photo) for c, v in zip(crop, views)])
    flat = [v for views in plan.locals for v in views]
    done = [_photometric(c, v.photo) for c, v in zip(locals_, flat)]
    out["locals"] = (torch.stack(done) if done else locals_).reshape(frames.shape[0], cfg.local_crops, 3,
                                                                     cfg.local_size, cfg.local_size)
    return out


def mask_view(masks: torch.Tensor, plan: ClipPlan, cfg: AugmentConfig) -> torch.Tensor:
    """A clip's object labels [T, H, W] (uint8) cut as its first global view is: each frame's box resized to the
    view's size by nearest neighbour (labels are not blended), flipped as the view -> [T, G, G]."""
    out = []
    for labels, view in zip(masks, plan.globals[0]):
        top, left, h, w = view.box
        crop = TF.resized_crop(labels[None], round(top), round(left), max(1, round(h)), max(1, round(w)),
                               [cfg.global_size, cfg.global_size], interpolation=TF.InterpolationMode.NEAREST)
        out.append(TF.horizontal_flip(crop) if view.flip else crop)
    return torch.cat(out)


def augment_clip(frames: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One clip's views (see `plan_clip` and `apply_plan`): what a worker returns when it augments."""
    return apply_plan(frames, plan_clip(frames.shape[-2], frames.shape[-1], frames.shape[0], cfg, gen), cfg)


def _blend(images: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's uint8 blend with a ratio per image (float64 [N, 1, 1, 1], as its Python floats): ratio x
    images + (1 - ratio) x other in float32, clamped, truncated."""
    # addcmul: one rounding for the second term's product and sum, as torchvision's add_(other, alpha=...)
    return torch.addcmul(images.mul(ratio.float()), other, (1.0 - ratio).float()).clamp_(0, 255).to(torch.uint8)


def _gray_float(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3)


def _jitter_batch(images: torch.Tensor, op: int, factor: torch.Tensor) -> torch.Tensor:
    """One jitter op on uint8 images [N, 3, H, W], a factor per image [N] (float64; torchvision's maths)."""
    f = factor.view(-1, 1, 1, 1)
    if op == 0:  # brightness
        return images.mul(f.float()).clamp_(0, 255).to(torch.uint8)
    if op == 1:  # contrast: towards the image's mean gray
        mean = _gray_float(images).floor_().mean(dim=(-3, -2, -1), keepdim=True)
        return _blend(images, mean, f)
    if op == 2:  # saturation: towards the image's gray
        return _blend(images, _gray_float(images).floor_(), f)
    hsv = TF._color._rgb_to_hsv(TF.to_dtype(images, torch.float32, scale=True))  # hue, as torchvision's adjust_hue
    h, s, v = hsv.unbind(dim=-3)
    h = h.add(factor.float().view(-1, 1, 1)).remainder_(1.0)
    rgb = TF._color._hsv_to_rgb(torch.stack((h, s, v), dim=-3))
    return TF.to_dtype(rgb, torch.uint8, scale=True)


def _blur_batch(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of uint8 images [N, 3, H, W], a sigma per image: one grouped convolution."""
    n, c, height, width = images.shape
    k = blur_kernel_size(width)
    lim = (k - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=k, device=images.device)
    one = torch.softmax(-(x[None] / sigma[:, None]).pow(2), dim=-1)  # [N, k], torchvision's kernel
    kernel = (one[:, :, None] * one[:, None, :]).repeat_interleave(c, dim=0)[:, None]  # [N * 3, 1, k, k]
    padded = F.pad(images.float().reshape(1, n * c, height, width), [k // 2] * 4, mode="reflect")
    out = F.conv2d(padded, kernel, groups=n * c).reshape(n, c, height, width)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _photometric_batch(images: torch.Tensor, photos: list[Photo]) -> torch.Tensor:
    """`_photometric` of every image at once: each op runs once on the images that take it at that point."""
    device = images.device
    factors = torch.tensor([p.factors for p in photos], dtype=torch.float64, device=device)
    for position in range(4):
        for op in range(4):
            chosen = [i for i, p in enumerate(photos) if len(p.order) > position and p.order[position] == op]
            if chosen:
                index = torch.tensor(chosen, device=device)
                images[index] = _jitter_batch(images[index], op, factors[index, op])
    gray = [i for i, p in enumerate(photos) if p.gray]
    if gray:
        index = torch.tensor(gray, device=device)
        images[index] = _gray_float(images[index]).to(torch.uint8).expand(-1, 3, -1, -1)
    blurred = [i for i, p in enumerate(photos) if p.sigma is not None]
    if blurred:
        index = torch.tensor(blurred, device=device)
        sigma = torch.tensor([photos[i].sigma for i in blurred], dtype=torch.float32, device=device)
        images[index] = _blur_batch(images[index], sigma)
    solar = [i for i, p in enumerate(photos) if p.solarize]
    if solar:
        index = torch.tensor(solar, device=device)
        images[index] = TF.solarize(images[index], 128)
    return images


def apply_plans(clips: list[torch.Tensor], plans: list[ClipPlan], cfg: AugmentConfig) -> dict[str, torch.Tensor]:
    """A batch's views from its clips' frames (uint8 [T, 3, H, W] each, on the training device) and plans:
    {"globals": [B, T, 3, G, G], "locals": [B, T, L, 3, S, S]} (+ "globals2"), uint8. Crops are cut clip by
    clip; the photometric work runs once per operation for the whole batch: the device path."""
    parts = [_geometry(frames, plan, cfg) for frames, plan in zip(clips, plans)]
    out = {}
    for i in range(len(plans[0].globals)):
        crops = torch.cat([g[i] for g, _ in parts])
        photos = [v.photo for plan in plans for v in plan.globals[i]]
        out["globals" if i == 0 else "globals2"] = _photometric_batch(crops, photos).reshape(
            len(clips), -1, 3, cfg.global_size, cfg.global_size)
    crops = torch.cat([loc for _, loc in parts])
    photos = [v.photo for plan in plans for views in plan.locals for v in views]
    if photos:
        crops = _photometric_batch(crops, photos)
    out["locals"] = crops.reshape(len(clips), -1, cfg.local_crops, 3, cfg.local_size, cfg.local_size)
    return out


# ---------------------------------------------------------------------------------------------
# Sizes and normalisation


def crop_sides(height: int, width: int, cfg: AugmentConfig, samples: int = 2000, seed: int = 0) -> torch.Tensor:
    """Side (sqrt of the area, in source pixels) of `samples` first global crops of a height x width frame:
    how many source pixels a --global-size view is made from."""
    gen = torch.Generator().manual_seed(seed)
    one_frame = dataclasses.replace(cfg, local_crops=0)  # draws only what the first global crop needs
    sides = [math.sqrt(b[2] * b[3])
             for b in (clip_boxes(height, width, 1, one_frame, gen)["globals"][0][0] for _ in range(samples))]
    return torch.tensor(sides)


def median_crop_side(height: int, width: int, cfg: AugmentConfig) -> float:
    return float(crop_sides(height, width, cfg, samples=1000).median())


def sharp_short_side(global_size: int) -> int:
    """A frame short side for small CPU recipes: twice the global crop, so that the median composed crop
    has at least as many source pixels as it shows (the demo at 64 px: 80 px frames gave 52)."""
    return 2 * global_size


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float, ImageNet mean/std (the last step, on the training device)."""
    shape = images.shape
    x = images.reshape(-1, *shape[-3:]).float().div_(255)
    mean, std = _on_device(x.device)
    x = (x - mean) / std
    return x.reshape(shape)


_CONSTANTS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _on_device(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """MEAN and STD on `device`, copied there once (not at every call: each copy is a host-device transfer)."""
    if device not in _CONSTANTS:
        _CONSTANTS[device] = (MEAN.to(device), STD.to(device))
    return _CONSTANTS[device]
