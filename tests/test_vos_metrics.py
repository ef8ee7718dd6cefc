"""J and F as DAVIS 2017 defines them, on cases worked out by hand."""

import math

import numpy as np
import pytest

from dora.evaluation.vos_metrics import boundary_map, contour_accuracy, region_similarity, sequence_scores, summary


def square(top: int, left: int, side: int = 10, size: int = 100) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_perfect_empty_and_disjoint_predictions():
    truth = square(10, 10)
    assert region_similarity(truth, truth) == 1.0 and contour_accuracy(truth, truth) == 1.0
    empty = np.zeros_like(truth)
    assert region_similarity(empty, truth) == 0.0 and contour_accuracy(empty, truth) == 0.0
    assert region_similarity(empty, empty) == 1.0 and contour_accuracy(empty, empty) == 1.0  # nothing to find
    far = square(60, 60)
    assert region_similarity(far, truth) == 0.0 and contour_accuracy(far, truth) == 0.0


def test_a_shifted_square():
    truth = square(10, 10)
    # One pixel to the right: overlap 10 x 9 = 90 of a union of 110; every boundary pixel is within the
    # tolerance of ceil(0.008 x 141.4) = 2 pixels of the other boundary, so F is 1.
    one = square(10, 11)
    assert region_similarity(one, truth) == pytest.approx(90 / 110)
    assert contour_accuracy(one, truth) == 1.0
    # Five pixels: overlap 50 of 150. The boundary of a 10 x 10 square is 40 pixels: the row above and the
    # column left of it (11 + 10, the corner diagonal included) and its own bottom row and right column
    # (10 + 9). Precision and recall are worked out with the distance rule, not the dilation the code uses.
    five = square(10, 15)
    assert region_similarity(five, truth) == pytest.approx(50 / 150)
    b_pred, b_true = boundary_map(five), boundary_map(truth)
    assert b_true.sum() == 40

    def matched(a, b, r=2):
        pts = np.argwhere(b)
        return sum(1 for y, x in np.argwhere(a) if (((pts - (y, x)) ** 2).sum(1) <= r * r).any())

    precision, recall = matched(b_pred, b_true) / b_pred.sum(), matched(b_true, b_pred) / b_true.sum()
    assert 0 < precision < 1 and 0 < recall < 1
    assert contour_accuracy(five, truth) == pytest.approx(2 * precision * recall / (precision + recall))


def test_tolerance_scales_with_the_diagonal():
    truth = square(100, 100, side=100, size=400)  # diagonal 565.7: tolerance ceil(4.5) = 5 pixels
    assert math.ceil(0.008 * math.hypot(400, 400)) == 5
    assert contour_accuracy(square(100, 105, side=100, size=400), truth) == 1.0  # horizontal edges still meet
    assert contour_accuracy(square(100, 110, side=100, size=400), truth) < 1.0


def test_sequence_scores_leave_out_the_first_and_last_frames_and_average_objects():
    truths = np.zeros((4, 50, 50), int)
    truths[:, 5:15, 5:15] = 1
    truths[:, 30:40, 30:40] = 2
    predictions = truths.copy()
    predictions[0] = 0  # the first frame is given, never scored
    predictions[3] = 0  # the last frame is not scored either
    predictions[2][predictions[2] == 2] = 0  # object 2 lost in frame 2
    scores = sequence_scores(predictions, truths, [1, 2])
    assert scores[1] == {"J": 1.0, "F": 1.0}
    assert scores[2] == {"J": 0.5, "F": 0.5}  # found in frame 1, lost in frame 2
    result = summary({"seq": scores})
    assert result == {"J_mean": 0.75, "F_mean": 0.75, "JF_mean": 0.75, "objects": 2}
    with pytest.raises(ValueError, match="differ in size"):
        sequence_scores(predictions[:, :40], truths, [1])
