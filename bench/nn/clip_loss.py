"""CLIP's objective: symmetric InfoNCE over in-batch pairs with a learnable, clamped temperature.

``logits = exp(s) * norm(img) @ norm(txt).T``; the loss is the mean of the image->text and
text->image cross-entropies with the diagonal as targets. ``s`` starts at ``log(1/0.07)`` and is
held in ``[0, log 100]``. open_clip clamps the parameter in place after every optimiser step (its
training loop); the benchmark's engine is model-agnostic, so the clamp is applied in the forward
pass instead: the effective scale is identical and the gradient is zero outside the range, so the
parameter cannot drift past the bound.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LogitScale(nn.Module):
    """Learnable ``log`` logit scale; ``forward()`` returns the clamped scale ``exp(s)``."""

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_log = math.log(max_scale)

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(0.0, self.max_log).exp()


def clip_infonce(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """Symmetric InfoNCE between ``image`` [B, D] and ``text`` [B, D] (row b of each is a pair).

    Args:
        logit_scale: the (already exponentiated) scale, e.g. ``LogitScale()()``.
        valid: [B] bool; only these rows take part, as anchors *and* as negatives (a listing
            without an image must neither be a positive nor a negative). Fewer than two valid
            rows give a zero loss that still belongs to the graph.
        normalize: L2-normalise the features first (open_clip's ``ClipLoss`` expects them normalised).
    """
    if valid is not None:
        image, text = image[valid], text[valid]
    if image.shape[0] < 2:
        return (image.sum() + text.sum()) * 0.0 + logit_scale * 0.0
    if normalize:
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = logit_scale * image @ text.t()
    target = torch.arange(image.shape[0], device=image.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
