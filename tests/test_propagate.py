"""Label propagation (DINO's DAVIS protocol) on features whose answer is known."""

import torch
import torch.nn.functional as F

from dora.evaluation.propagate import PropagationConfig, neighbourhood_mask, propagate, propagate_step, to_label_map


def _scene(frames: int = 6, rows: int = 8, cols: int = 8):
    """Features of an object (2 x 2 patches) moving one patch right per frame over a background."""
    torch.manual_seed(0)
    obj, background = F.normalize(torch.randn(16), dim=0), F.normalize(torch.randn(16), dim=0)
    truths, features = [], []
    for t in range(frames):
        truth = torch.zeros(rows, cols, dtype=torch.long)
        truth[3:5, 1 + t:3 + t] = 1
        feat = torch.where(truth.flatten()[:, None] == 1, obj, background) + 0.05 * torch.randn(rows * cols, 16)
        truths.append(truth)
        features.append(feat)
    return truths, features


def test_a_moving_object_is_followed_frame_after_frame():
    truths, features = _scene()
    first = F.one_hot(truths[0], 2).permute(2, 0, 1).float()
    predicted = list(propagate(iter(features), first, (8, 8), PropagationConfig(n_last_frames=3)))
    assert len(predicted) == len(truths) - 1
    for t, soft in enumerate(predicted, start=1):
        assert torch.equal(soft.argmax(0), truths[t]), t  # every patch right
        labels = to_label_map(soft, patch_size=4, size=(32, 32)) == 1
        expected = truths[t].repeat_interleave(4, 0).repeat_interleave(4, 1) == 1
        iou = (labels & expected).sum() / (labels | expected).sum()
        assert iou > 0.75, (t, iou)  # pixels: bilinear upsampling rounds the corners


def test_topk_and_the_neighbourhood_limit_the_sources():
    near = neighbourhood_mask(3, 4, 1)
    assert near.shape == (12, 12) and near[0].sum() == 4 and near[5].sum() == 9  # a corner and an inner patch
    target = torch.tensor([[1.0, 0.0]])  # one target patch
    sources = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]])  # three source patches, one frame
    labels = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])  # source 0 is class 0, sources 1 and 2 class 1
    one = propagate_step(target, sources, labels, PropagationConfig(topk=1), None)
    assert torch.allclose(one[:, 0], torch.tensor([1.0, 0.0]))  # only the nearest source votes
    two = propagate_step(target, sources, labels, PropagationConfig(topk=2, temperature=1.0), None)
    assert 0.5 < two[0, 0] < 0.6 and torch.allclose(two.sum(0), torch.ones(1))  # two votes, weights exp(cos)
