"""The batch every model receives, and the spec that sizes models to a feature store.

This module is the contract between ``bench.features`` (which fills it) and the models in
``scale/`` and ``baselines/`` (which consume it). It holds no model code and no I/O.

Conventions:

* Sequences are padded to the longest listing *in the batch* (not to a fixed 231 tokens as the
  released SCALE code does), so little compute is spent on padding.
* A modality that was not requested is ``None``. A requested modality that a listing lacks has
  ``present[m][b] == False``, all-zero features, an all-False mask and pad token ids: the model
  decides how to impute it (SCALE: zeros at the input, as the paper).
* ``*_mask`` is True on real tokens. Title and table ids include ``[CLS] ... [SEP]``.
* Table tokens carry ``table_entity`` (entity index, -1 on specials and padding) and ``table_kind``
  (0 special/padding, 1 key token, 2 value token), so masked entity modelling can mask whole
  entities or whole key / value spans.
* Region boxes are ``(x1, y1, x2, y2, area)`` normalised to [0, 1] by image width and height.
* Labels (``category``, ``product``) live only on :class:`Batch`. Pretraining receives an
  :class:`UnlabeledBatch` (``Batch.without_labels()``), on which reading a label raises
  :class:`LabelsHidden`; evaluation and fine-tuning keep the labelled :class:`Batch`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch

from bench.modalities import Modality, ModalitySet


@dataclass(frozen=True)
class FeatureSpec:
    """What a model needs to know about the features it will be fed."""

    vocab_size: int
    pad_id: int = 0
    cls_id: int = 1
    sep_id: int = 2
    mask_id: int = 3
    unk_id: int = 4
    title_len: int = 36
    table_len: int = 64
    region_dim: int = 512
    max_regions: int = 36
    video_dim: int = 512
    max_frames: int = 12
    audio_dim: int = 40
    max_audio: int = 64
    num_categories: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureSpec":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class LabelsHidden(AttributeError):
    """Raised when pretraining code reads a label (category or product id) from its batch."""


#: Batch fields that are supervision, not model input. Pretraining never sees them.
LABEL_FIELDS = ("category", "product")


@dataclass
class UnlabeledBatch:
    """Per-modality tensors for B listings, without labels. See the module docstring for conventions.

    This is what :meth:`bench.adapter.Adapter.pretrain_step` receives: the original models pretrain
    without category or product supervision, so the fields do not exist here and reading them
    raises :class:`LabelsHidden`. :class:`Batch` adds the labels for evaluation and fine-tuning.
    """

    index: torch.Tensor  # [B] int64 row index in the catalog
    present: dict[Modality, torch.Tensor]  # m -> [B] bool, only for requested modalities

    title_ids: torch.Tensor | None = None  # [B, Lt] int64
    title_mask: torch.Tensor | None = None  # [B, Lt] bool

    table_ids: torch.Tensor | None = None  # [B, Ltab] int64
    table_mask: torch.Tensor | None = None  # [B, Ltab] bool
    table_entity: torch.Tensor | None = None  # [B, Ltab] int64, -1 = not in an entity
    table_kind: torch.Tensor | None = None  # [B, Ltab] int64, 0 special, 1 key, 2 value

    region_feats: torch.Tensor | None = None  # [B, R, region_dim] float32
    region_boxes: torch.Tensor | None = None  # [B, R, 5] float32
    region_mask: torch.Tensor | None = None  # [B, R] bool

    video_feats: torch.Tensor | None = None  # [B, F, video_dim] float32
    video_mask: torch.Tensor | None = None  # [B, F] bool

    audio_feats: torch.Tensor | None = None  # [B, Fa, audio_dim] float32
    audio_mask: torch.Tensor | None = None  # [B, Fa] bool

    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails, i.e. never for a Batch's own labels
        if name in LABEL_FIELDS:
            raise LabelsHidden(f"this batch carries no {name!r}: pretraining batches are labels-free "
                               f"(the original models pretrain without category or product supervision)")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def size(self) -> int:
        return int(self.index.shape[0])

    @property
    def modalities(self) -> ModalitySet:
        return ModalitySet(self.present.keys())

    def present_matrix(self, order: tuple[Modality, ...] | None = None) -> torch.Tensor:
        """[B, M] bool presence in ``order`` (default: the batch's canonical order)."""
        order = tuple(order or self.modalities)
        return torch.stack([self.present[m] for m in order], dim=1)

    def to(self, device: torch.device | str) -> "UnlabeledBatch":
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                moved[f.name] = v.to(device)
            elif f.name == "present":
                moved[f.name] = {m: t.to(device) for m, t in v.items()}
        return replace(self, **moved)

    def select(self, rows: torch.Tensor) -> "UnlabeledBatch":
        """A batch of a subset of the rows (used by negative sampling and presence filtering)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                out[f.name] = v[rows]
            elif f.name == "present":
                out[f.name] = {m: t[rows] for m, t in v.items()}
        return replace(self, **out)


@dataclass
class Batch(UnlabeledBatch):
    """An :class:`UnlabeledBatch` plus the labels evaluation and fine-tuning need.

    The labels are keyword-only fields (they follow the optional modality fields).
    """

    category: torch.Tensor = field(kw_only=True)  # [B] int64 contiguous category id (-1 unknown)
    product: torch.Tensor = field(kw_only=True)  # [B] int64 contiguous product id (-1 unknown)

    def without_labels(self) -> UnlabeledBatch:
        """A labels-free view sharing this batch's tensors (no copy)."""
        return UnlabeledBatch(**{f.name: getattr(self, f.name) for f in fields(UnlabeledBatch)})


def without_labels(batch: UnlabeledBatch) -> UnlabeledBatch:
    """``batch`` with its labels removed (a labels-free batch is returned as it is)."""
    return batch.without_labels() if isinstance(batch, Batch) else batch
