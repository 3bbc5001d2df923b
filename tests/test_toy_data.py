"""The toy dataset generator: determinism, ground truth, unambiguous expressions, the Ref-YouTube-VOS layout.

Expressions are checked by an independent reading: each one is parsed back into words and its referents are
worked out from the clip's objects and masks alone, which must leave its target and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import replace

import numpy as np
import pytest

from mpgsam2.datasets import DatasetSpec, RefYouTubeVOS, build_dataset, build_eval_set, build_training_set
from mpgsam2.datasets.toy import (
    COLOURS,
    KINDS,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    VOCABULARY,
    ToyConfig,
    find_expressions,
    generate_toy_clip,
    prepare_toy_split,
    shape_mask,
    toy_meta_path,
    video_name,
    write_toy_dataset,
)
from mpgsam2.datasets.toy.referring import lookalikes_in_view, matches, spoken_attributes, visible_shares

SEEDS = range(40)
# Training's setting in configs/toy.json: several phrasings of each target.
MANY_PER_OBJECT = ToyConfig(max_expressions=4, expressions_per_object=4)


@pytest.fixture(scope="module")
def clips():
    return [generate_toy_clip(seed) for seed in SEEDS]


@pytest.fixture(scope="module")
def training_clips():
    return [generate_toy_clip(seed, MANY_PER_OBJECT) for seed in range(15)]


def test_the_same_seed_gives_the_same_clip():
    first, again, other = generate_toy_clip(7), generate_toy_clip(7), generate_toy_clip(8)
    assert np.array_equal(first.frames, again.frames) and np.array_equal(first.masks, again.masks)
    assert first.expressions == again.expressions and first.objects == again.objects
    assert all(np.array_equal(a.centres, b.centres) for a, b in zip(first.objects, again.objects))
    assert not np.array_equal(first.frames, other.frames)


def test_shapes_and_counts(clips):
    config = ToyConfig()
    for clip in clips:
        frames, masks = clip.frames, clip.masks
        assert frames.shape == (config.num_frames, config.frame_size, config.frame_size, 3)
        assert frames.dtype == np.uint8 and masks.dtype == bool
        assert config.min_objects <= len(clip.objects) == len(masks) <= config.max_objects
        assert config.min_expressions <= len(clip.expressions) <= config.max_expressions
        assert len({e.object_id for e in clip.expressions}) == len(clip.expressions)


# The default configuration's clips of these seeds, pinned: the benchmark's and the tests' held-out clips are
# seeds, so a generator change that moves them would silently change every figure measured on them. A new
# option must draw nothing from the random stream at its default.
PINNED_DIGESTS = {
    0: "2f1c26e831fbd87e",
    900_000: "814736b45d35626d",
    910_000: "4364118d3e5e9fc9",
}


def clip_digest(clip) -> str:
    digest = hashlib.sha256()
    for array in (clip.frames, clip.masks):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(repr([(e.text, e.object_id, e.kind) for e in clip.expressions]).encode())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("seed", sorted(PINNED_DIGESTS))
def test_the_clip_of_a_seed_never_changes(seed):
    assert clip_digest(generate_toy_clip(seed)) == PINNED_DIGESTS[seed]


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="at least 6 frames"):
        ToyConfig(num_frames=5)
    with pytest.raises(ValueError, match="min_expressions"):
        ToyConfig(min_expressions=4, max_expressions=3)
    with pytest.raises(ValueError, match="Unknown toy dataset option"):
        ToyConfig.from_dict({"colour": "red"})
    assert ToyConfig.from_dict({"speed": [1, 2]}).speed == (1, 2)


def test_masks_are_empty_exactly_where_the_object_is_hidden(clips):
    """Each visible mask is the drawn shape minus the shapes drawn in front of it, cut to the frame."""
    for clip in clips:
        size = clip.frames.shape[1]
        for k, item in enumerate(clip.objects):
            for t in range(len(clip.frames)):
                whole = shape_mask(item.shape, *item.centres[t], item.radius, size)
                in_front = np.zeros_like(whole)
                for other in clip.objects:
                    if other.depth > item.depth:
                        in_front |= shape_mask(other.shape, *other.centres[t], other.radius, size)
                assert np.array_equal(clip.full_masks[k, t], whole)
                assert np.array_equal(clip.masks[k, t], whole & ~in_front)
        # The labels are the visible masks, without overlaps.
        assert (clip.masks.sum(0) <= 1).all()
        for k in range(len(clip.objects)):
            assert np.array_equal(clip.labels == k + 1, clip.masks[k])


def test_visible_shares_measure_how_much_of_the_target_shows(clips):
    """0 where the target is hidden, 1 where it is whole and in the frame, and between where it is cut."""
    cut = whole_inside = 0
    for clip in clips:
        for expression in clip.expressions:
            k = expression.object_id - 1
            shares = visible_shares(clip, expression)
            seen = clip.masks[k].reshape(len(clip.frames), -1).sum(1)
            whole = (seen == clip.full_masks[k].reshape(len(clip.frames), -1).sum(1)) & (seen > 0)
            assert shares.shape == (len(clip.frames),) and (shares[seen == 0] == 0).all()
            assert ((shares > 0) & (shares <= 1))[seen > 0].all()
            # A whole shape fully inside the frame shows all of its area.
            inside = whole & np.array(
                [_inside(clip.objects[k], t, clip.frames.shape[1]) for t in range(len(seen))]
            )
            assert np.allclose(shares[inside], 1), shares[inside]
            whole_inside += int(inside.sum())
            cut += int(((shares > 0) & (shares < 0.3)).sum())
    assert whole_inside > 0 and cut > 0, "some frames show a whole target, some a small part of one"


def _inside(item, t: int, size: int) -> bool:
    x, y = item.centres[t]
    return min(x, y) > 1.5 * item.radius and max(x, y) < size - 1.5 * item.radius


def test_targets_are_hidden_on_some_frames_both_behind_shapes_and_off_the_frame(clips):
    hidden = total = outside = covered = 0
    for clip in clips:
        for expression in clip.expressions:
            k = expression.object_id - 1
            shown = clip.masks[k].reshape(len(clip.frames), -1).any(1)
            in_frame = clip.full_masks[k].reshape(len(clip.frames), -1).any(1)
            assert shown.any(), "every target is visible on some frame"
            hidden += int((~shown).sum())
            total += len(shown)
            outside += int((~in_frame).sum())
            covered += int((in_frame & ~shown).sum())
    assert 0.08 <= hidden / total <= 0.3
    assert outside > 0 and covered > 0


_PHRASE = re.compile(
    r"^the (?:(small|big) )?(?:({colours}) )?({shapes}|shape)(?: (.*))?$".format(
        colours="|".join(COLOURS), shapes="|".join(SHAPES)
    )
)


def _parse(text: str) -> tuple[dict, str | None]:
    match = _PHRASE.match(text)
    assert match, text
    size, colour, shape, rest = match.groups()
    attributes = {"size": size, "colour": colour, "shape": None if shape == "shape" else shape}
    return {k: v for k, v in attributes.items() if v}, rest


def _matching(clip, attributes: dict) -> list[int]:
    return [k for k, o in enumerate(clip.objects) if all(getattr(o, a) == v for a, v in attributes.items())]


def _covered_by(clip, behind: int, front: int) -> float:
    """Largest fraction of ``behind``'s in-frame area under ``front`` (0 if ``front`` is drawn behind it)."""
    if clip.objects[front].depth < clip.objects[behind].depth:
        return 0.0
    area = clip.full_masks[behind].reshape(len(clip.frames), -1).sum(1)
    under = (clip.full_masks[behind] & clip.full_masks[front]).reshape(len(clip.frames), -1).sum(1)
    return float(np.max(np.where(area > 0, under / np.maximum(area, 1), 0)))


def _referents(clip, text: str, config: ToyConfig) -> list[int]:
    """The objects an expression can mean, from its words and the clip's objects and masks alone."""
    attributes, rest = _parse(text)
    members = _matching(clip, attributes)
    if rest is None:
        return members
    directions = {phrase: direction for direction, phrase in POSITION_PHRASES.items()}
    if rest in directions:
        axis, sign = POSITIONS[directions[rest]]
        in_frame = clip.full_masks.reshape(*clip.full_masks.shape[:2], -1).any(-1)

        def extreme(k: int) -> bool:
            for other in members:
                if other == k:
                    continue
                together = in_frame[k] & in_frame[other]
                gaps = sign * (clip.objects[k].centres[:, axis] - clip.objects[other].centres[:, axis])
                if not together.any() or gaps[together].min() < config.position_margin:
                    return False
            return True

        return [k for k in members if extreme(k)]
    relation, other_text = re.match(r"(that goes behind|that passes in front of) (the .*)", rest).groups()
    others = _referents(clip, other_text, config)
    assert len(others) == 1, f"{other_text!r} must name one object"
    (other,) = others
    members = [k for k in members if k != other]
    if relation == "that goes behind":
        coverage = {k: _covered_by(clip, k, other) for k in members}
    else:
        coverage = {k: _covered_by(clip, other, k) for k in members}
    clear = [k for k, c in coverage.items() if c >= config.occluded]
    # Unambiguous only when no other candidate is covered more than slightly.
    return clear if all(c <= config.not_occluded for k, c in coverage.items() if k not in clear) else members


def test_every_expression_names_its_target_alone(clips):
    config = ToyConfig()
    kinds = set()
    for clip in clips:
        for expression in clip.expressions:
            assert _referents(clip, expression.text, config) == [expression.object_id - 1], expression.text
            assert set(expression.text.split()) <= set(VOCABULARY)
            kinds.add(expression.kind)
    assert kinds == set(KINDS)


def test_every_candidate_expression_names_its_target_alone(clips):
    """Not only the chosen expressions: every one the generator finds for a clip (hundreds)."""
    config = ToyConfig()
    checked = 0
    for clip in clips[:20]:
        for object_id, expressions in find_expressions(clip.objects, clip.full_masks, config).items():
            for expression in expressions:
                assert _referents(clip, expression.text, config) == [object_id - 1], expression.text
                checked += 1
    assert checked > 200


def test_several_phrasings_per_target_are_distinct_and_each_names_it_alone(training_clips):
    per_object = []
    for clip in training_clips:
        texts = [e.text for e in clip.expressions]
        assert len(set(texts)) == len(texts), texts
        assert len({e.object_id for e in clip.expressions}) <= MANY_PER_OBJECT.max_expressions
        for expression in clip.expressions:
            assert _referents(clip, expression.text, MANY_PER_OBJECT) == [expression.object_id - 1]
        counts = np.bincount([e.object_id for e in clip.expressions])
        per_object.append(counts[counts > 0].max())
    assert max(per_object) > 1 and max(per_object) <= MANY_PER_OBJECT.expressions_per_object


def test_the_layout_reads_as_ref_youtube_vos(tmp_path):
    config = ToyConfig(num_frames=6, max_objects=3)
    root = write_toy_dataset(tmp_path / "toy", "train", num_videos=3, seed=5, config=config)
    dataset = RefYouTubeVOS(root, "train", num_frames=3)
    assert sorted(dataset.meta) == [video_name(s) for s in (5, 6, 7)]
    for item in dataset.iter_eval_videos():
        clip = generate_toy_clip(int(item.video[3:]), config)
        frames = item.load_frames()
        assert frames.shape == clip.frames.shape
        assert np.abs(frames.astype(int) - clip.frames).mean() < 4  # JPEG (of the noise, mostly)
        assert [item.expressions[e]["exp"] for e in sorted(item.expressions)] == [
            e.text for e in clip.expressions
        ]
        for exp_id in item.expressions:
            target = clip.expressions[int(exp_id)]
            assert np.array_equal(item.ground_truth(exp_id), clip.target_masks(target))
    raw = dataset.raw_item(0)
    assert raw.frames.shape[0] == 3 and raw.visible.any()


def test_the_writer_lists_the_hidden_look_alike_frames_and_the_reader_anchors_clips_on_them(tmp_path):
    config = ToyConfig(max_expressions=4, expressions_per_object=4)
    root = write_toy_dataset(tmp_path / "toy", "train", num_videos=12, seed=0, config=config)
    dataset = RefYouTubeVOS(root, "train", num_frames=3)
    listed = 0
    for item in dataset.iter_eval_videos():
        clip = generate_toy_clip(int(item.video[3:]), config)
        for exp_id, entry in item.expressions.items():
            expression = clip.expressions[int(exp_id)]
            truth = clip.target_masks(expression)
            frames = [int(name) for name in entry["hidden_lookalike_frames"]]
            listed += len(frames)
            # Each listed frame hides the target and shows another shape that the words fit; none is left out.
            expected = ~truth.any(axis=(1, 2)) & lookalikes_in_view(clip, expression)
            assert frames == np.flatnonzero(expected).tolist()
            words = spoken_attributes(expression)
            for t in frames:
                others = [k for k, o in enumerate(clip.objects) if o.object_id != expression.object_id]
                assert any(matches(clip.objects[k], words) and clip.masks[k, t].any() for k in others)
    assert listed > 0
    anchored = dataset.anchored_on_lookalikes()
    assert len(anchored) == listed and len(dataset) == len(RefYouTubeVOS(root, "train", num_frames=3))
    checked = 0
    for index in range(len(anchored)):
        video, exp_id, anchor = anchored.items[index]
        raw = anchored.raw_item(index)
        if raw.source != f"ytvos:{video}/{exp_id}":
            continue  # the rare clip that never shows its target, replaced by another item
        # Every clip holds its anchor, a frame where the target is hidden, and frames where it shows.
        assert anchor in raw.frame_indices and raw.visible.any()
        assert not raw.visible[raw.frame_indices.index(anchor)]
        checked += 1
    assert checked >= 0.8 * len(anchored)
    # A split that lists no such frame (written by another tool) has no anchored view.
    meta = toy_meta_path(root, "train")
    written = json.loads(meta.read_text())
    for entry in written["videos"].values():
        for expression in entry["expressions"].values():
            del expression["hidden_lookalike_frames"]
    meta.write_text(json.dumps(written))
    assert RefYouTubeVOS(root, "train", num_frames=3).anchored_on_lookalikes() is None


def test_a_dataset_spec_lists_the_anchored_view_beside_its_dataset(tmp_path):
    config = {"num_videos": 10, "seed": 0, "max_expressions": 4, "expressions_per_object": 4}
    spec = DatasetSpec(format="ytvos", root=str(tmp_path / "toy"), num_frames=3, toy=config)
    plain = build_training_set([spec], None, False, 0)
    listed = len(plain.anchored_on_lookalikes())
    assert listed > 0
    weighted = build_training_set([replace(spec, lookalike_repeat=2)], None, False, 0)
    # The dataset, then its anchored view twice: every item after the dataset's own hides its target.
    assert len(weighted) == len(plain) + 2 * listed
    hidden = 0
    for index in range(len(plain), len(weighted), 7):
        raw = weighted.datasets[1 + (index - len(plain)) // listed].raw_item((index - len(plain)) % listed)
        hidden += not raw.visible.all()
        assert raw.source.startswith("ytvos:") and np.array_equal(raw.frames, weighted[index].frames)
    assert hidden >= 0.8 * len(range(len(plain), len(weighted), 7))
    # A grounding stage's anchored view of it anchors each dataset once, as without the repeat.
    assert len(weighted.anchored_on_lookalikes()) == listed
    with pytest.raises(ValueError, match="lookalike_repeat"):
        DatasetSpec(format="ytvos", root=str(tmp_path), lookalike_repeat=-1)
    with pytest.raises(ValueError, match="lookalike_repeat"):
        DatasetSpec(format="refcoco", root=str(tmp_path), lookalike_repeat=1)
    meta = toy_meta_path(tmp_path / "toy", "train")
    written = json.loads(meta.read_text())
    for entry in written["videos"].values():
        for expression in entry["expressions"].values():
            del expression["hidden_lookalike_frames"]
    meta.write_text(json.dumps(written))
    with pytest.raises(ValueError, match="lookalike_repeat needs .* delete it"):
        build_training_set([replace(spec, lookalike_repeat=1)], None, False, 0)


def test_a_dataset_spec_writes_the_toy_data_once_and_refuses_other_options(tmp_path):
    entry = {
        "format": "ytvos",
        "root": str(tmp_path / "data"),
        "num_frames": 4,
        "toy": {"num_videos": 2, "seed": 100, "num_frames": 8},
    }
    dataset = build_dataset(DatasetSpec.from_dict(entry), augment=False)
    assert sorted(dataset.meta) == [video_name(100), video_name(101)]
    assert len(dataset.frames[video_name(100)]) == 8
    meta = toy_meta_path(tmp_path / "data", "train")
    assert json.loads(meta.read_text())["toy"]["seed"] == 100
    written = meta.stat().st_mtime_ns
    build_dataset(DatasetSpec.from_dict(entry), augment=False)
    assert meta.stat().st_mtime_ns == written  # already there: not written again
    with pytest.raises(ValueError, match="delete the split or choose another root"):
        build_dataset(
            DatasetSpec.from_dict({**entry, "toy": {"num_videos": 3, "seed": 100, "num_frames": 8}})
        )
    # A split written before an option existed (here: one dropped from the record) holds that option's
    # default clips, and is still accepted; the same split asked for with another value of it is not.
    record = json.loads(meta.read_text())
    del record["toy"]["config"]["position_margin"]
    meta.write_text(json.dumps(record))
    build_dataset(DatasetSpec.from_dict(entry), augment=False)
    with pytest.raises(ValueError, match="delete the split"):
        build_dataset(DatasetSpec.from_dict({**entry, "toy": {**entry["toy"], "position_margin": 9.0}}))
    with pytest.raises(ValueError, match="ytvos layout"):
        DatasetSpec(format="davis", root="x", toy={})
    with pytest.raises(ValueError, match="Unknown toy dataset option"):
        build_dataset(DatasetSpec(format="ytvos", root=str(tmp_path / "other"), toy={"colour": 1}))
    evaluation = build_eval_set(
        DatasetSpec(format="ytvos", root=str(tmp_path / "data"), split="valid", toy={"num_videos": 1})
    )
    assert list(evaluation.meta) == [video_name(0)]


def _tree(root) -> dict[str, str]:
    """Every file under ``root`` by its relative path, as a digest of its bytes."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("world_size", [2, 3])
def test_processes_sharing_the_writing_of_a_split_write_what_one_process_writes(tmp_path, world_size):
    # The processes of a distributed run each write a share of the clips; rank 0 joins their lists into the
    # meta files once all are done. Threads stand in for the processes, a real barrier synchronises them.
    options = {"num_videos": 5, "seed": 30, "num_frames": 6, "max_objects": 3}
    prepare_toy_split(tmp_path / "one", "train", options)
    together = tmp_path / "together"
    barrier = threading.Barrier(world_size, timeout=120)
    returned_with_meta, errors = [], []

    def process(rank: int) -> None:
        try:
            prepare_toy_split(together, "train", options, rank, world_size, barrier.wait)
            returned_with_meta.append(toy_meta_path(together, "train").is_file())
        except Exception as error:  # surfaced below with its rank
            errors.append((rank, error))

    workers = [threading.Thread(target=process, args=(rank,)) for rank in range(world_size)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert returned_with_meta == [True] * world_size  # none went on before the split was complete
    assert _tree(together) == _tree(tmp_path / "one")  # no part files left, every byte the same
    assert sorted(json.loads(toy_meta_path(together, "train").read_text())["videos"]) == [
        video_name(s) for s in range(30, 35)
    ]
    # Written once, the split is found by every process (nobody writes, nobody waits).
    prepare_toy_split(together, "train", options, 1, world_size, lambda: pytest.fail("waited for nothing"))
    with pytest.raises(ValueError, match="rank 2 is not one of 2"):
        write_toy_dataset(tmp_path / "bad", rank=2, world_size=2)
