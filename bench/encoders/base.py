"""What every frozen encoder family shares: config, the adapter, weights digest and offline checks.

A frozen encoder is a released model (Hugging Face, open_clip, timm) put through the benchmark
without pretraining. It embeds the catalog's raw media (titles, tables, image files, video frames)
with its own preprocessing, once per catalog and weights (:mod:`bench.encoders.cache`); the
evaluation then reads those vectors by catalog row, so retrieval, the probe, clustering and the
fine-tuned head run through the same code as every other model.

* ``embed`` returns the sum of the L2-normalised per-modality vectors (a listing's missing modality
  adds nothing); each modality's own vector is also an embedding variant, named as the pipeline's
  ``modality_vectors`` expects (``title``, ``table``, ``image``, ``video``), so cross-modal
  retrieval is scored too.
* ``classification_features`` reads the cached vectors while the encoder is frozen (the default
  ``finetune=head``); with ``finetune=full`` the encoder's weights train, so it re-encodes the raw
  media of each batch.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from bench.adapter import Adapter, AdapterConfig
from bench.console import UserError
from bench.encoders.run import FrozenEmbedStage
from bench.features.batch import Batch, UnlabeledBatch
from bench.modalities import Modality

#: The combination rule of the multi-modality embedding, recorded with every result.
COMBINE = "sum of the L2-normalised per-modality vectors (a missing modality adds nothing)"


@dataclass
class FrozenConfig(AdapterConfig):
    """Settings of a frozen encoder. Released weights have one size, so both presets are the same.

    ``pooling`` (Hugging Face text models): ``mean`` over real tokens or ``cls`` (the first token).
    ``max_length``: text tokens per title or table (longer ones are truncated).
    ``embed_batch_size``: listings per forward pass when embedding the catalog.
    The training hints are those of the in-repo models' presets; they drive the fine-tuned head.
    """

    pooling: str = "mean"
    max_length: int = 128
    embed_batch_size: int = 64
    batch_size: int = 64
    lr: float = 1e-3
    epochs: int = 1
    warmup_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        if self.max_length < 2 or self.embed_batch_size < 1:
            raise ValueError("max_length must be at least 2 and embed_batch_size at least 1")


@dataclass(frozen=True)
class Weights:
    """Where a model's weights come from: ``kind`` is ``random`` (seeded initialisation), ``file``,
    ``folder`` (a local save_pretrained folder), ``package`` (a folder shipped in a Python package),
    ``hub`` (a hub name the library downloads) or ``cache`` (a hub name found in the local cache)."""

    kind: str
    location: str | None = None
    tag: str | None = None

    @property
    def random(self) -> bool:
        return self.kind == "random"


def refuse_offline(model: str, what: str, how: str) -> UserError:
    """The one-line refusal of a model whose weights are neither local nor downloadable."""
    return UserError(f"model {model!r}: {what}, and {hub_host()} cannot be reached (offline); "
                     f"pass local weights instead: {how}")


def hub_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be reached, decided in at most ``timeout`` seconds.

    ``HF_HUB_OFFLINE`` answers no at once; otherwise one TCP connection to the endpoint is tried, so
    a machine without network is refused before any work instead of waiting on the libraries' retries.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def state_digest(module: nn.Module) -> str:
    """SHA-1 (12 hex) of a module's weights: names, shapes, dtypes and bytes, in name order."""
    h = hashlib.sha1()
    for name, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(v.shape)}:{v.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:12]


def local_path(argument: str) -> Path | None:
    """``argument`` as a local path when it names one (exists, or is spelled as a path)."""
    p = Path(argument).expanduser()
    if p.exists() or argument.startswith(("/", "./", "../", "~")):
        return p
    return None


def compute_device() -> torch.device:
    """The GPU when there is one (embedding batches run there), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class FrozenEncoder(Adapter):
    """Base of the frozen encoder families; ``Family.bind(argument)`` is the class of one model.

    Subclasses set ``family`` and implement :meth:`resolve` (where the weights are, refusing before
    any work when they cannot be had), :meth:`build_encoder` (the library's model with its weights)
    and :meth:`encode` (raw values of one modality -> vectors, differentiable).
    """

    config_cls = FrozenConfig
    #: no pretraining stage: the released weights are evaluated as they are
    pretrains: ClassVar[bool] = False
    #: the embed stage encodes the raw media first (bench.encoders.run)
    stage_overrides: ClassVar[dict[str, type]] = {"embed": FrozenEmbedStage}
    #: the fine-tuned classification stage trains only the head unless ``--set finetune=full``
    default_finetune: ClassVar[str] = "head"
    retrieval_vector = "the sum of the L2-normalised per-modality vectors of the frozen encoder"
    family: ClassVar[str] = ""
    argument: ClassVar[str] = ""
    weights: ClassVar[Weights] = Weights("random")

    @classmethod
    @functools.cache
    def bind(cls, argument: str) -> type["FrozenEncoder"]:
        """The class of model ``family:argument``; its weights are located now (refusing early)."""
        weights = cls.resolve(argument)
        return type(f"{cls.__name__}", (cls,), {"argument": argument, "weights": weights,
                                                "__module__": cls.__module__, "__qualname__": cls.__qualname__})

    @classmethod
    def resolve(cls, argument: str) -> Weights:
        raise NotImplementedError

    @classmethod
    def split(cls, argument: str) -> tuple[str, str | None]:
        """``NAME@WEIGHTS`` -> (NAME, WEIGHTS or None): the architecture and where its weights come from."""
        name, sep, weights = argument.partition("@")
        return name, (weights if sep else None)

    @classmethod
    def check_known(cls, argument: str, name: str, known: Sequence[str], what: str, listing: str) -> None:
        """Refuse, in one line with the closest match, a ``name`` the library does not know."""
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            raise UserError(f"model {f'{cls.family}:{argument}'!r}: {cls.family} has no {what} {name!r}."
                            + (f" Did you mean {close[0]!r}?" if close else "") + f" See {listing}")

    @classmethod
    def model_name(cls) -> str:
        return f"{cls.family}:{cls.argument}"

    def __init__(self, config: FrozenConfig, spec: Any, modalities: Any):
        super().__init__(config, spec, modalities)
        self.encoder = self.build_encoder()
        self.weights_digest = state_digest(self.encoder)
        self.raw: dict[str, list[Any]] = {}  # modality code -> raw value per catalog row (attach)
        self.video: dict[str, Any] = {}  # frame sampling (timm's V)
        self.cache_files: dict[str, str] = {}

    # --- family hooks -----------------------------------------------------------------------------
    def build_encoder(self) -> nn.Module:
        raise NotImplementedError

    def encode(self, code: str, values: Sequence[Any]) -> torch.Tensor:
        """``[len(values), d]`` vectors of one modality's raw values (paths, titles, tables)."""
        raise NotImplementedError

    def preprocessing(self, code: str) -> dict[str, Any]:
        """What turns a raw value into model input (recorded, and part of the cache key)."""
        return {}

    # --- the adapter contract ---------------------------------------------------------------------
    def pretrain_step(self, batch: UnlabeledBatch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{self.model_name()} is a frozen encoder: it has no pretraining objective")

    def set_vectors(self, vectors: dict[str, torch.Tensor]) -> None:
        """Install each modality's ``[catalog rows, d]`` vectors (zeros where a listing lacks it)."""
        param = next(self.parameters(), None)  # where the encoder ran (the GPU when there is one)
        device = param.device if param is not None else torch.device("cpu")
        for code, table in vectors.items():
            self.register_buffer(f"vectors_{code}", table.to(device), persistent=False)

    def embed_variants(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = {Modality(code).long_name: getattr(self, f"vectors_{code}")[batch.index]
               for code in self._codes()}
        out["default"] = self._combine(batch, {Modality(c).long_name: out[Modality(c).long_name] for c in self._codes()})
        return out

    def embed(self, batch: Batch) -> torch.Tensor:
        return self.embed_variants(batch)["default"]

    def classification_features(self, batch: Batch) -> torch.Tensor:
        if not any(p.requires_grad for p in self.encoder.parameters()):
            return self.embed(batch)  # frozen: the cached vectors
        rows = batch.index.tolist()
        live = {}
        for code in self._codes():
            m = Modality(code)
            keep = batch.present[m].nonzero().flatten()
            vec = None
            if len(keep):
                enc = self.encode(code, [self.raw[code][rows[i]] for i in keep.tolist()])
                vec = enc.new_zeros((batch.size, enc.shape[-1])).index_copy(0, keep, enc)
            live[m.long_name] = vec
        return self._combine(batch, live)

    def extra_state(self) -> dict[str, Any]:
        return {"frozen_encoder": {
            "model": self.model_name(), "family": self.family, "weights": self.weights.kind,
            "random_weights": self.weights.random, "weights_location": self.weights.location,
            "weights_tag": self.weights.tag, "weights_digest": self.weights_digest, "combine": COMBINE,
            "preprocessing": {c: self.preprocessing(c) for c in self._codes()}, "cache": self.cache_files}}

    # --- helpers ----------------------------------------------------------------------------------
    def _codes(self) -> list[str]:
        return [m.value for m in self.modalities]

    def _combine(self, batch: Batch, vecs: dict[str, torch.Tensor | None]) -> torch.Tensor:
        parts = []
        for code in self._codes():
            v = vecs[Modality(code).long_name]
            if v is not None:
                keep = batch.present[Modality(code)].to(v.dtype).unsqueeze(1)
                parts.append(F.normalize(v, dim=-1) * keep)
        if not parts:
            raise ValueError("no listing of this batch has any of the encoder's modalities")
        return torch.stack(parts).sum(0)
