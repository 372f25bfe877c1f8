"""Cross-entropy + Dice (paper sec. III-B3), normalised over the whole optimiser step.

DDP averages gradients over processes and gradient accumulation adds micro-batches, so a
per-micro-batch mean would weight pixels unevenly whenever batches hold different numbers
of labelled pixels (crops padded with ignore, ignore classes). Each micro-batch therefore
returns its *share* of the step's loss: CE summed over its pixels / labelled pixels in the
whole step, Dice summed over its images / images in the step. The sum of the shares over
micro-batches and processes is the step's loss, the same for any process count."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from taseg_ros.datasets.config import IGNORE_INDEX


def dice_per_image(logits: torch.Tensor, labels: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per image (B,), averaged over the classes present in that image's
    labels; ignored pixels left out.

    Averaging over present classes only keeps Dice what it is for: a class-balanced overlap
    term, so a small class weighs as much as the road. Absent classes would otherwise add a
    term that pushes their probability to zero in every image without them, which drowns
    rare classes; keeping false positives down is left to cross-entropy."""
    num_classes = logits.shape[1]
    valid = (labels != IGNORE_INDEX).unsqueeze(1)
    probs = logits.float().softmax(dim=1) * valid
    target = F.one_hot(labels.clamp(max=num_classes - 1), num_classes).permute(0, 3, 1, 2) * valid
    intersection = (probs * target).sum(dim=(2, 3))
    target_area = target.sum(dim=(2, 3))
    cardinality = probs.sum(dim=(2, 3)) + target_area
    dice = 1.0 - (2.0 * intersection + eps) / (cardinality + eps)
    present = (target_area > 0).float()
    return (dice * present).sum(dim=1) / present.sum(dim=1).clamp(min=1.0)


def loss_share(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    step_labelled_pixels: int,
    step_images: int,
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """This micro-batch's share of the step loss, and its parts for logging."""
    ce_sum = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    ce = ce_sum / max(step_labelled_pixels, 1)
    dice = dice_per_image(logits, labels).sum() / max(step_images, 1)
    total = ce_weight * ce + dice_weight * dice
    return total, {"ce": ce.item(), "dice": dice.item()}
