"""Checkpoint files: reading weights (safetensors, weights-only torch files, shards) and writing the Hugging
Face layout that :func:`mpgsam2.checkpoints.load_model` reads back."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError
from .official_names import has_official_names, official_state_dict

#: Weight files of a checkpoint folder, in the order they are looked for.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
CONFIG_FILE = "config.json"
#: safetensors' dtype names.
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, each read into memory of its own.

    safetensors' own loader gives views into a memory map at whatever offsets the file has, and CPU kernels
    take other (less precise in the last bits) paths on unaligned data: a model would not give the same
    numbers as the one that was saved. Reading each tensor into a fresh (aligned) allocation costs one copy of
    the weights, never two.
    """
    with open(path, "rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_size))
        base = 8 + header_size
        state = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            tensor = torch.empty(entry["shape"], dtype=_SAFETENSORS_DTYPES[entry["dtype"]])
            start, end = entry["data_offsets"]
            if tensor.numel():
                handle.seek(base + start)
                buffer = tensor.view(-1).view(torch.uint8).numpy()
                if handle.readinto(buffer) != end - start or buffer.nbytes != end - start:
                    raise ValueError(f"tensor {name!r} ends past the end of the file")
            state[name] = tensor
    return state


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, a torch file (``weights_only``), or a sharded index of either.

    Torch files are memory-mapped (their tensors are aligned), so reading costs no copy until they are used;
    safetensors files are read tensor by tensor (:func:`read_safetensors`).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint file at {path}.")
    if path.name.endswith(".index.json"):
        index = json.loads(path.read_text())
        state = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(read_weights(path.parent / shard))
        return state
    try:
        if path.suffix == ".safetensors":
            return read_safetensors(path)
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # the formats raise many types for truncated or foreign files
        raise CheckpointError(
            f"Could not read {path.name}: {type(error).__name__}: {str(error)[:300]}. The file is truncated, "
            "corrupt, or not a weights file (only safetensors and weights-only torch files are read)."
        ) from error
    if isinstance(loaded, dict) and "model" in loaded and isinstance(loaded["model"], dict):
        loaded = loaded["model"]  # training checkpoints nest the weights
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{path.name} does not hold a state dict of tensors.")
    return loaded


def weights_file(path: str | Path) -> Path:
    """``path`` itself when it is a file, else the weights file of the checkpoint folder ``path``."""
    path = Path(path)
    if path.is_file():
        return path
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise CheckpointError(
        f"No weights in {path}: expected one of {', '.join(WEIGHT_FILES)}. "
        "Download a model with `huggingface-cli download ReeF2025/MPG-SAM2` or pass a weights file."
    )


def read_config_hints(path: str | Path) -> dict:
    """The ``mpgsam2`` section of the ``config.json`` beside a checkpoint (empty when there is none)."""
    path = Path(path)
    config_file = (path if path.is_dir() else path.parent) / CONFIG_FILE
    if not config_file.is_file():
        return {}
    return json.loads(config_file.read_text()).get("mpgsam2", {})


def save_pretrained(
    model: nn.Module,
    folder: str | os.PathLike,
    tokenizer_file: str | os.PathLike | None = None,
    max_shard_bytes: int | None = None,
) -> Path:
    """Save in the official Hugging Face layout: ``config.json`` and ``model.safetensors`` (sharded if asked).

    The released configuration is saved under the official names; ablation variants with stacked fusion
    layers (which have no official name) under this package's names, which the loader reads too. With
    ``tokenizer_file``, the sentencepiece model is copied beside the weights, so that the folder alone is a
    complete model for :class:`mpgsam2.VideoPredictor`.
    """
    from safetensors.torch import save_file

    from ..tokenizer import SENTENCEPIECE_FILE

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    named = official_state_dict(model) if has_official_names(model) else model.state_dict()
    state = {k: v.detach().cpu().contiguous() for k, v in named.items()}
    config = model.config
    meta = {
        "model_type": "evf",
        "hidden_size": config.beit3.embed_dim,
        "out_dim": config.prompt_dim,
        "mm_extractor_scale": {1024: "large", 768: "base"}.get(config.beit3.embed_dim, "custom"),
        "mpgsam2": config.to_dict(),
    }
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    if tokenizer_file is not None:
        shutil.copyfile(tokenizer_file, folder / SENTENCEPIECE_FILE)
    if max_shard_bytes is None:
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return folder
