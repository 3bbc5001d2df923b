"""Checkpoints: the official names, strict loading, and sources (hub id, local folder, single file).

The official checkpoints (Hugging Face ``ReeF2025/MPG-SAM2``) are ``EvfSamModel`` state dicts in the
Hugging Face layout. :data:`OFFICIAL_TO_OURS` is the one table between their names and ours, and doubles as
a glossary of the paper's components.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
from torch import nn

from .config import (
    HIERA_PRESETS,
    AggregatorConfig,
    BEiT3Config,
    MaskPriorConfig,
    MPGSAM2Config,
    SAM2Config,
    get_config,
)

logger = logging.getLogger(__name__)

DEFAULT_REPO = "ReeF2025/MPG-SAM2"
VARIANTS = ("ytvos", "mevis", "tiny")

# Official prefix -> our prefix. Longer (more specific) prefixes first; names below a prefix are identical.
OFFICIAL_TO_OURS: tuple[tuple[str, str], ...] = (
    ("visual_model.sam_mask_decoder.vtlfusion_module.", "aggregator.pixel_global.0."),
    ("visual_model.sam_mask_decoder.mmfusion_module.", "aggregator.object_global.0."),
    ("visual_model.sam_mask_decoder.objfusion_module.", "aggregator.object_local.0."),
    ("visual_model.sam_mask_decoder.patch_linear.", "aggregator.patch_merge."),
    ("visual_model.", "sam2."),
    ("mm_extractor.beit3.", "multimodal_encoder."),
    ("visual_ifi.", "mask_prior.visual_interaction."),
    ("vmtoken.multihead_attn.", "mask_prior.class_token_attention."),
    ("mask_linear.", "mask_prior.channel_modulation."),
    ("mask_product.", "mask_prior.prior_head."),
    ("meo_linear.", "mask_prior.mask_embedding."),
    ("text_hidden_fcs.0.", "mask_prior.sparse_prompt."),
    ("text_feat_linear.", "mask_prior.text_projection."),
    ("text2one_linear.", "mask_prior.sentence_score."),
)

# Wrappers that the official training scripts leave in front of the names (DeepSpeed, ReferFormer).
_WRAPPER_PREFIXES = ("module.", "evf_model.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says what is wrong and what to do."""


def _rename(name: str, table: tuple[tuple[str, str], ...]) -> str | None:
    for source, target in table:
        if name.startswith(source):
            return target + name[len(source) :]
    return None


def from_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official names -> ours. Unknown names are kept, so that a strict load reports them."""
    renamed = {}
    for name, tensor in state.items():
        for wrapper in _WRAPPER_PREFIXES:
            if name.startswith(wrapper):
                name = name[len(wrapper) :]
        renamed[_rename(name, OFFICIAL_TO_OURS) or name] = tensor
    return renamed


def to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names -> official ones (only the released layout has official names)."""
    reverse = tuple(
        sorted(((ours, official) for official, ours in OFFICIAL_TO_OURS), key=lambda p: -len(p[0]))
    )
    renamed = {}
    for name, tensor in state.items():
        official = _rename(name, reverse)
        if official is None or re.match(r"aggregator\.\w+\.[1-9]", name):
            raise CheckpointError(f"{name!r} has no official name: only the released configuration exports.")
        renamed[official] = tensor
    return renamed


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Copy ``state`` (our names) into ``model``, naming every missing, unexpected or mis-shaped entry."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{name}: checkpoint {tuple(state[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in expected
        if name in state and state[name].shape != expected[name].shape
    ]
    not_float = [
        f"{name}: {state[name].dtype}"
        for name in expected
        if name in state and expected[name].is_floating_point() and not state[name].is_floating_point()
    ]
    problems = []
    if mismatched:
        problems.append(_listing("shape conflicts", mismatched))
    if not_float:
        problems.append(_listing("non-floating-point tensors where weights are expected", not_float))
    if strict and missing:
        problems.append(_listing("missing keys", missing))
    if strict and unexpected:
        problems.append(_listing("unexpected keys", unexpected))
    if problems:
        raise CheckpointError("The checkpoint does not match MPG-SAM 2:\n" + "\n".join(problems))
    with torch.no_grad():
        for name, target in expected.items():
            if name in state:
                target.copy_(state[name].to(dtype=target.dtype))


def _listing(title: str, items: list[str], limit: int = 12) -> str:
    shown = "\n".join(f"  - {item}" for item in items[:limit])
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"{len(items)} {title}:\n{shown}{more}"


def config_from_state_dict(state: dict[str, torch.Tensor], hints: dict | None = None) -> MPGSAM2Config:
    """Infer every checkpoint-fixed width from an official-named state dict.

    BEiT-3's width, depth and FFN, the prior generator's width and FFN, and the Hiera size are read from
    tensor shapes; head counts (which shapes do not fix) come from ``hints`` (a saved config) or the
    standard BEiT-3 sizes.
    """
    state = from_official(state)
    hints = hints or {}

    def shape(name: str) -> tuple[int, ...]:
        if name not in state:
            raise CheckpointError(f"The checkpoint has no {name!r}; it is not an MPG-SAM 2 checkpoint.")
        return tuple(state[name].shape)

    def count(pattern: str) -> int:
        regex = re.compile(pattern)
        return len({m.group(1) for name in state if (m := regex.match(name))})

    width = shape("multimodal_encoder.text_embed.weight")[1]
    vocab = shape("multimodal_encoder.text_embed.weight")[0]
    standard_heads = {1024: 16, 768: 12}
    beit3 = BEiT3Config(
        embed_dim=width,
        depth=count(r"multimodal_encoder\.encoder\.layers\.(\d+)\."),
        num_heads=hints.get("beit3", {}).get("num_heads", standard_heads.get(width, max(1, width // 64))),
        ffn_dim=shape("multimodal_encoder.encoder.layers.0.ffn.A.fc1.weight")[0],
        vocab_size=vocab,
        max_text_positions=shape("multimodal_encoder.encoder.embed_positions.B.weight")[0],
    )
    prior_hints = hints.get("mask_prior", {})
    mask_prior = MaskPriorConfig(
        width=shape("mask_prior.channel_modulation.weight")[0],
        num_heads=prior_hints.get("num_heads", 8),
        ffn_dim=shape("mask_prior.visual_interaction.linear1.weight")[0],
        # A switch that no weight records (the prior's weights exist either way): only the config says.
        dense_prompt=prior_hints.get("dense_prompt", True),
    )
    aggregator_hints = hints.get("aggregator", {})
    aggregator = AggregatorConfig(
        **{
            **aggregator_hints,
            "pixel_global": count(r"aggregator\.pixel_global\.(\d+)\.") > 0,
            "object_global": count(r"aggregator\.object_global\.(\d+)\.") > 0,
            "object_local": count(r"aggregator\.object_local\.(\d+)\.") > 0,
            "num_pixel_layers": max(1, count(r"aggregator\.pixel_global\.(\d+)\.")),
            "num_object_layers": max(
                1, count(r"aggregator\.object_global\.(\d+)\."), count(r"aggregator\.object_local\.(\d+)\.")
            ),
        }
    )
    hiera_width = shape("sam2.image_encoder.trunk.pos_embed")[1]
    blocks = count(r"sam2\.image_encoder\.trunk\.blocks\.(\d+)\.")
    hiera = next(
        (h for h in HIERA_PRESETS.values() if h.embed_dim == hiera_width and sum(h.stages) == blocks), None
    )
    if hiera is None:
        raise CheckpointError(f"Unknown Hiera trunk: width {hiera_width}, {blocks} blocks.")
    sam2_hints = {k: v for k, v in hints.get("sam2", {}).items() if k in ("image_size",)}
    sam2 = SAM2Config(hiera=hiera, **sam2_hints)
    name = hints.get("name") or {1024: "large", 768: "base"}.get(width, "custom")
    return MPGSAM2Config(name=name, beit3=beit3, mask_prior=mask_prior, aggregator=aggregator, sam2=sam2)


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, a torch file (``weights_only``), or a sharded index of either."""
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
            from safetensors.torch import load_file

            return load_file(str(path))
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except CheckpointError:
        raise
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


def _weights_in_folder(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(
        f"No weights in {folder}: expected one of {', '.join(WEIGHT_FILES)}. "
        "Download a model with `huggingface-cli download ReeF2025/MPG-SAM2` or pass a weights file."
    )


def resolve_source(source: str | os.PathLike) -> Path:
    """A local file or folder for ``source``: a path, a variant (``"ytvos"``), or ``"repo/id[:variant]"``."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if text in VARIANTS:
        repo, variant = DEFAULT_REPO, text
    elif re.fullmatch(r"[\w.-]+/[\w.-]+(:[\w.-]+)?", text):
        repo, _, variant = text.partition(":")
    else:
        raise CheckpointError(
            f"{text!r} is neither an existing file or folder nor a hub id like 'ReeF2025/MPG-SAM2:ytvos'."
        )
    return _download(repo, variant or None)


def _download(repo: str, variant: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = [f"{variant}/*", "*.json", "*.model"] if variant else None
    try:
        root = Path(snapshot_download(repo, allow_patterns=patterns))
    except LocalEntryNotFoundError as error:
        raise CheckpointError(
            f"The weights of {repo}{':' + variant if variant else ''} are not in the local Hugging Face "
            "cache and cannot be downloaded (offline, or HF_HUB_OFFLINE=1). Connect to the internet once, "
            f"or download them elsewhere (`huggingface-cli download {repo}`) and pass the folder."
        ) from error
    except Exception as error:
        raise CheckpointError(f"Could not download {repo}: {type(error).__name__}: {error}") from error
    candidate = root / variant if variant else root
    return candidate if candidate.is_dir() else root


def load_model(
    source: str | os.PathLike = "ytvos",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
):
    """Build MPG-SAM 2 with its widths read from a checkpoint and load it strictly.

    Args:
        source: a variant of the default repo (``"ytvos"``, ``"mevis"``, ``"tiny"``), a hub id
            (``"ReeF2025/MPG-SAM2:ytvos"``), a local Hugging Face-format folder, or a single weights file.
        device: defaults to the best available (cuda, mps, cpu).
        dtype: weights' dtype (fp32 by default; use autocast for mixed precision instead).
    """
    from .devices import pick_device
    from .model import MPGSAM2

    path = resolve_source(source)
    weights = _weights_in_folder(path) if path.is_dir() else path
    hints = {}
    config_file = (path if path.is_dir() else path.parent) / "config.json"
    if config_file.is_file():
        hints = json.loads(config_file.read_text()).get("mpgsam2", {})
    logger.info("Loading MPG-SAM 2 weights from %s", weights)
    state = read_weights(weights)
    config = config_from_state_dict(state, hints)
    model = MPGSAM2(config)
    model.load_official_state_dict(state)
    return model.to(device=pick_device(device), dtype=dtype or torch.float32).eval()


def save_pretrained(model, folder: str | os.PathLike, max_shard_bytes: int | None = None) -> Path:
    """Save in the official Hugging Face layout: config.json and model.safetensors (sharded if asked)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        named = model.to_official_state_dict()
    except CheckpointError:
        # Stacked fusion layers (ablations) have no official names; ours load just as well.
        named = model.state_dict()
    state = {k: v.detach().cpu().contiguous() for k, v in named.items()}
    config = model.config
    meta = {
        "model_type": "evf",
        "hidden_size": config.beit3.embed_dim,
        "out_dim": config.prompt_dim,
        "mm_extractor_scale": {1024: "large", 768: "base"}.get(config.beit3.embed_dim, "custom"),
        "mpgsam2": config.to_dict(),
    }
    (folder / "config.json").write_text(json.dumps(meta, indent=2))
    if max_shard_bytes is None:
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder
    shards, current, size = [], {}, 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensor
        size += nbytes
    shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())}}
    index["weight_map"] = weight_map
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return folder


__all__ = [
    "OFFICIAL_TO_OURS",
    "CheckpointError",
    "config_from_state_dict",
    "from_official",
    "get_config",
    "load_model",
    "load_state_dict_strict",
    "read_weights",
    "resolve_source",
    "save_pretrained",
    "to_official",
]
