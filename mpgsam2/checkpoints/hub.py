"""Where weights come from: a local file or folder, a training run, a released variant, a hub repository."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import CheckpointError

DEFAULT_REPO = "ReeF2025/MPG-SAM2"
#: The released checkpoints, each a folder of the default repository.
VARIANTS = ("ytvos", "mevis", "tiny")
#: In a training run's folder, the name of its most recent complete checkpoint.
LAST_CHECKPOINT_FILE = "last_checkpoint.txt"
#: The small model trained on generated shapes (``configs/toy.json``), shipped in the repository's
#: ``checkpoints/toy/``: it runs without a download, and its masks follow shapes, not real objects.
TOY_MODEL = "toy"
TOY_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / TOY_MODEL


def resolve_source(source: str | os.PathLike) -> Path:
    """A local file or folder for ``source``.

    Args:
        source: a weights file or checkpoint folder; a training run's folder (its last checkpoint); a released
            variant (``"ytvos"``, ``"mevis"``, ``"tiny"``); ``"toy"`` (the repository's toy model); or a hub
            id ``"owner/repo[:variant]"``, read from the Hugging Face cache or downloaded.
    """
    path = Path(source).expanduser()
    if path.is_dir() and (path / LAST_CHECKPOINT_FILE).is_file():
        last = path / (path / LAST_CHECKPOINT_FILE).read_text().strip()
        if not last.is_dir():
            raise CheckpointError(f"{path} names a checkpoint that is missing: {last.name}.")
        return last
    if path.exists():
        return path
    text = str(source)
    if text == TOY_MODEL:
        if not (TOY_CHECKPOINT / "model.safetensors").is_file():
            raise CheckpointError(
                f"The toy model ships in the repository's checkpoints/{TOY_MODEL}/, which this installation "
                f"lacks ({TOY_CHECKPOINT}); install from a clone of the repository (pip install -e .)."
            )
        return TOY_CHECKPOINT
    if text in VARIANTS:
        repo, variant = DEFAULT_REPO, text
    elif re.fullmatch(r"[\w.-]+/[\w.-]+(:[\w.-]+)?", text):
        repo, _, variant = text.partition(":")
    else:
        raise CheckpointError(
            f"{text!r} is neither an existing file or folder nor a hub id like 'ReeF2025/MPG-SAM2:ytvos'."
        )
    return download(repo, variant or None)


def download(repo: str, variant: str | None) -> Path:
    """The local folder of ``repo`` (one variant's sub-folder when given), from the cache or downloaded."""
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
