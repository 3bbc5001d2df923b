"""Toy clips on disk in the Ref-YouTube-VOS layout, which the project's readers take unchanged::

    <root>/<split>/JPEGImages/<video>/<frame>.jpg
    <root>/<split>/Annotations/<video>/<frame>.png        palette PNG, pixel value = object id (0 = none)
    <root>/<split>/meta.json                              each object's category (its kind of shape)
    <root>/meta_expressions/<split>/meta_expressions.json   each expression's text and target, and the frames
                                                          where it is hidden with a look-alike in view

Video ``toy<seed>`` holds the clip of that seed. The meta file is written last, so a split that has one is
complete; it also records what wrote the split (``"toy"``: seeds, count, JPEG quality and the
:class:`ToyConfig`), so that a training configuration asking for other toy data in the same folder is
refused instead of silently reading the old one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ...export import DAVIS_PALETTE
from ..object_categories import object_meta_path
from ..videos import HIDDEN_LOOKALIKE_FRAMES
from .generator import generate_toy_clip
from .referring import hidden_frames, lookalikes_in_view
from .scene import ToyConfig

logger = logging.getLogger(__name__)

#: Options of a dataset spec's ``toy`` mapping that are arguments of :func:`write_toy_dataset`; the others
#: are fields of :class:`ToyConfig`.
WRITE_OPTIONS = ("num_videos", "seed", "jpeg_quality")
DEFAULT_NUM_VIDEOS = 100
DEFAULT_SEED = 0
DEFAULT_JPEG_QUALITY = 95
# Progress is logged every this many videos (a training set of thousands takes minutes to write).
LOG_EVERY = 500


def video_name(seed: int) -> str:
    """The folder name of the clip of ``seed``."""
    return f"toy{seed:07d}"


def toy_meta_path(root: str | Path, split: str) -> Path:
    """Where :func:`write_toy_dataset` writes the split's meta file (present once the split is complete)."""
    return Path(root) / "meta_expressions" / split / "meta_expressions.json"


def config_record(config: ToyConfig) -> dict:
    """What the meta file records of a :class:`ToyConfig`, as JSON reads it back (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def generator_record(num_videos: int, seed: int, config: ToyConfig, jpeg_quality: int) -> dict:
    """What the meta file records of the generator, as JSON reads it back."""
    return {
        "num_videos": num_videos,
        "seed": seed,
        "jpeg_quality": jpeg_quality,
        "config": config_record(config),
    }


def with_new_defaults(record: dict | None) -> dict | None:
    """A record read from disk with the generator options added since it was written, at their defaults.

    A new option draws nothing from the random stream at its default (``tests/test_toy_data.py`` pins the
    clips of a few seeds), so a split written before it existed holds the same clips.
    """
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        return record
    try:
        config = ToyConfig.from_dict(record["config"])
    except (TypeError, ValueError):
        return record  # an option this version does not know: not the same generator
    return {**record, "config": config_record(config)}


def hidden_lookalike_frames(clip, expression, frame_names: list[str]) -> list[str]:
    """The frames where the expression's target is fully hidden while a look-alike (another shape that its
    words fit) is in view: what only the rest of the clip tells apart from a frame that shows the target."""
    chosen = hidden_frames(clip, expression) & lookalikes_in_view(clip, expression)
    return [name for name, hard in zip(frame_names, chosen) if hard]


def object_entry(clip, frame_names: list[str]) -> dict:
    """A clip's entry of the split's ``meta.json``: each shape's kind as its category, and the frames where
    some of it is visible (as YouTube-VOS lists them)."""
    visible = clip.masks.any(axis=(2, 3))  # (K, T)
    return {
        "objects": {
            str(shape.object_id): {
                "category": shape.shape,
                "frames": [name for name, seen in zip(frame_names, visible[k]) if seen],
            }
            for k, shape in enumerate(clip.objects)
        }
    }


def write_object_meta(root: str | Path, split: str, objects: dict[str, dict]) -> Path:
    path = object_meta_path(root, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"videos": objects}))
    return path


def no_wait() -> None:
    """The barrier of a single process: nothing to wait for."""


def write_toy_dataset(
    root: str | Path,
    split: str = "train",
    num_videos: int = DEFAULT_NUM_VIDEOS,
    seed: int = DEFAULT_SEED,
    config: ToyConfig | None = None,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = no_wait,
) -> Path:
    """Write the clips of seeds ``seed`` to ``seed + num_videos - 1`` under ``root``; returns ``root``.

    Each expression is an ``exp_id`` (0, 1, ... in the clip's order) whose ``obj_id`` is the target's label
    in the palette PNGs; its ``kind`` (see :data:`mpgsam2.datasets.toy.KINDS`) is kept for analysis.

    With ``world_size`` processes (the ranks of a distributed run, each calling this with the same
    arguments and its ``rank``), each writes every ``world_size``-th clip and the list of what it wrote;
    ``barrier`` returns once every process has reached it. Rank 0 then joins the lists into the meta files,
    and every process returns once they are there: the same files as one process writes, in a share of the
    time.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not one of {world_size} processes.")
    config = config or ToyConfig()
    root = Path(root)
    names = [f"{t:05d}" for t in range(config.num_frames)]
    palette = DAVIS_PALETTE.ravel().tolist()
    videos: dict[str, dict] = {}
    objects: dict[str, dict] = {}
    own_seeds = range(seed + rank, seed + num_videos, world_size)
    for count, clip_seed in enumerate(own_seeds, start=1):
        clip = generate_toy_clip(clip_seed, config)
        video = video_name(clip_seed)
        image_dir = root / split / "JPEGImages" / video
        label_dir = root / split / "Annotations" / video
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for name, frame, label in zip(names, clip.frames, clip.labels):
            # No chroma subsampling: it would bleed the shapes' colours over their edges.
            Image.fromarray(frame).save(image_dir / f"{name}.jpg", quality=jpeg_quality, subsampling=0)
            png = Image.fromarray(label)  # "L"; putpalette makes it "P"
            png.putpalette(palette)
            png.save(label_dir / f"{name}.png")
        videos[video] = {
            "frames": names,
            "expressions": {
                str(i): {
                    "exp": e.text,
                    "obj_id": str(e.object_id),
                    "kind": e.kind,
                    HIDDEN_LOOKALIKE_FRAMES: hidden_lookalike_frames(clip, e, names),
                }
                for i, e in enumerate(clip.expressions)
            },
        }
        objects[video] = object_entry(clip, names)
        if count % LOG_EVERY == 0:
            logger.info("Toy %s: %d of %d videos written", split, count, len(own_seeds))
    meta = toy_meta_path(root, split)
    meta.parent.mkdir(parents=True, exist_ok=True)
    if world_size > 1:
        part = _part_path(meta, rank)
        part.write_text(json.dumps({"videos": videos, "objects": objects}))
        barrier()
        if rank == 0:
            order = [video_name(s) for s in range(seed, seed + num_videos)]
            videos, objects = _join_parts(meta, world_size, order)
    if rank == 0:
        write_object_meta(root, split, objects)
        record = generator_record(num_videos, seed, config, jpeg_quality)
        meta.write_text(json.dumps({"videos": videos, "toy": record}))
        logger.info("Wrote %d toy videos (seeds %d-%d) to %s", num_videos, seed, seed + num_videos - 1, root)
    if world_size > 1:
        barrier()  # the meta files are there for every process
    return root


def _part_path(meta: Path, rank: int) -> Path:
    return meta.with_name(f"{meta.stem}.part{rank}.json")


def _join_parts(meta: Path, world_size: int, order: list[str]) -> tuple[dict[str, dict], dict[str, dict]]:
    """The videos and objects that ``world_size`` processes wrote, in the ``order`` of their names (that of
    their seeds); the parts' files are removed."""
    parts = [_part_path(meta, rank) for rank in range(world_size)]
    read = [json.loads(part.read_text()) for part in parts]
    videos = {name: entry for part in read for name, entry in part["videos"].items()}
    objects = {name: entry for part in read for name, entry in part["objects"].items()}
    for part in parts:
        part.unlink()
    return {name: videos[name] for name in order}, {name: objects[name] for name in order}


def prepare_toy_split(
    root: str | Path,
    split: str,
    options: dict,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = no_wait,
) -> None:
    """Write the toy split that a dataset spec's ``toy`` mapping asks for, unless it is already there.

    Args:
        options: :data:`WRITE_OPTIONS` and fields of :class:`ToyConfig`, e.g.
            ``{"num_videos": 2000, "seed": 0, "num_frames": 10}``.
        rank, world_size, barrier: every process of a distributed run calls this at once and each writes a
            share of the clips (see :func:`write_toy_dataset`).
    Raises:
        ValueError: an unknown option, or a split already written with other options (or not by the
            generator).
    """
    options = dict(options)
    arguments = {key: options.pop(key) for key in WRITE_OPTIONS if key in options}
    config = ToyConfig.from_dict(options)
    meta = toy_meta_path(root, split)
    if not meta.is_file():
        # Only rank 0 writes the meta file, after every process has looked for it: all agree on this.
        write_toy_dataset(
            root, split, config=config, rank=rank, world_size=world_size, barrier=barrier, **arguments
        )
        return
    wanted = generator_record(
        arguments.get("num_videos", DEFAULT_NUM_VIDEOS),
        arguments.get("seed", DEFAULT_SEED),
        config,
        arguments.get("jpeg_quality", DEFAULT_JPEG_QUALITY),
    )
    written = json.loads(meta.read_text()).get("toy")
    if with_new_defaults(written) != wanted:
        raise ValueError(
            f"{meta} was not written by the toy generator with these options ({written} on disk, {wanted} "
            "asked); delete the split or choose another root."
        )
    if not object_meta_path(root, split).is_file():
        # Written before the generator wrote categories: they come from the same seeds, without the images.
        first, count = wanted["seed"], wanted["num_videos"]
        names = [f"{t:05d}" for t in range(config.num_frames)]
        clips = (generate_toy_clip(s, config) for s in range(first, first + count))
        write_object_meta(root, split, {video_name(c.seed): object_entry(c, names) for c in clips})
        logger.info("Wrote the object categories of %s", object_meta_path(root, split))
