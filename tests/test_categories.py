"""The categories stage: patch labels read from a Ref-YouTube-VOS split's meta.json and palette PNGs, and
BEiT-3 learning from them what the grounding alone does not teach it (the kind of a shape)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from short_runs import short_run

from mpgsam2 import build_model, load_tokenizer
from mpgsam2.datasets import DatasetSpec
from mpgsam2.datasets.object_categories import (
    DIRECTIONS,
    EXTREME_GROUPS,
    IGNORED,
    NO_EXTREME,
    PatchCategories,
    extreme_targets,
    object_meta_path,
    owned_patches,
    read_object_categories,
)
from mpgsam2.datasets.toy import SHAPES, ToyConfig, generate_toy_clip, video_name, write_toy_dataset
from mpgsam2.datasets.toy.probing import NEUTRAL_EXPRESSION
from mpgsam2.datasets.toy.writer import prepare_toy_split
from mpgsam2.inference.frames import preprocess
from mpgsam2.tokenizer import TOY_TOKENIZER
from mpgsam2.training import (
    CategoriesForward,
    CategoriesSpec,
    DistributedContext,
    build_categories_set,
    categories_batches,
    load_config,
    pretrain_categories,
    read_log,
)
from mpgsam2.training.categories import CATEGORIES_LOG

FIRST_SEED = 300
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("categories") / "toy", "train", 48, FIRST_SEED)


def frames_of(root, model, **options) -> PatchCategories:
    return PatchCategories.for_model(root, "train", model.config, **options)


def dataset_image(dataset: PatchCategories, video: str, frame: int) -> torch.Tensor:
    """Frame ``frame`` of a video as BEiT-3's input, read from its JPEG."""
    return preprocess(
        dataset.benchmark.load_frames(video, [frame])[0], dataset.image_size, dataset.mean, dataset.std
    )


def test_the_toy_writer_names_each_shapes_kind_and_frames_as_youtube_vos_does(toy_root):
    categories = read_object_categories(toy_root, "train")
    meta = json.loads(object_meta_path(toy_root, "train").read_text())["videos"]
    for seed in (FIRST_SEED, FIRST_SEED + 7):
        clip = generate_toy_clip(seed)
        video = video_name(seed)
        assert categories[video] == {shape.object_id: shape.shape for shape in clip.objects}
        for k, shape in enumerate(clip.objects):
            shown = [int(name) for name in meta[video]["objects"][str(shape.object_id)]["frames"]]
            assert shown == np.flatnonzero(clip.masks[k].any(axis=(1, 2))).tolist()
    assert read_object_categories(toy_root, "valid") == {}


def test_a_split_written_before_categories_gets_them_from_its_seeds(tmp_path):
    options = {"num_videos": 3, "seed": 40, "num_frames": 6}
    prepare_toy_split(tmp_path, "train", options)
    path = object_meta_path(tmp_path, "train")
    written = path.read_text()
    path.unlink()
    prepare_toy_split(tmp_path, "train", options)
    assert path.read_text() == written


def test_each_patch_is_labelled_with_the_kind_of_the_shape_that_owns_it(toy_root):
    model = build_model("toy", seed=0)
    dataset = frames_of(toy_root, model, seed=3)
    assert dataset.categories == tuple(sorted(SHAPES)) and len(dataset) == 48
    grid = model.config.beit3.grid_size
    owned_somewhere = 0
    for index in (0, 5, 11):
        image, labels = dataset[index]
        assert image.shape == (3, model.config.beit3.image_size, model.config.beit3.image_size)
        clip = generate_toy_clip(FIRST_SEED + index)
        video = video_name(FIRST_SEED + index)
        shown = [dataset_image(dataset, video, t) for t in range(clip.frames.shape[0])]
        frame = next(t for t, candidate in enumerate(shown) if torch.equal(candidate, image))
        owned, owner = owned_patches(clip.masks[:, frame : frame + 1], grid)
        kinds = torch.tensor([dataset.categories.index(shape.shape) for shape in clip.objects])
        assert torch.equal(labels, torch.where(owned[0], kinds[owner[0]], IGNORED))
        owned_somewhere += int(owned.sum())
    assert owned_somewhere > 0
    # Another epoch draws other frames; the same epoch the same ones.
    first = [dataset[i][1] for i in range(8)]
    assert all(torch.equal(a, dataset[i][1]) for i, a in enumerate(first))
    dataset.set_epoch(1)
    assert not all(torch.equal(a, dataset[i][1]) for i, a in enumerate(first))


def test_a_split_without_categories_is_refused_with_what_to_change(tmp_path):
    root = write_toy_dataset(tmp_path / "toy", "train", 2, 0, ToyConfig(num_frames=6))
    object_meta_path(root, "train").unlink()
    model = build_model("toy", seed=0)
    with pytest.raises(FileNotFoundError, match="meta.json"):
        frames_of(root, model)
    with pytest.raises(ValueError, match="Set categories.steps to 0"):
        build_categories_set([DatasetSpec(format="ytvos", root=str(root))], model)
    with pytest.raises(ValueError, match="categories.steps"):
        CategoriesSpec(steps=-1)


def test_the_stage_trains_beit3_alone_on_the_kinds_and_drops_its_head(toy_root, tmp_path):
    """The stage fits the kinds of its frames (accuracy on each step's frames before it trains on them, from
    about chance to well above), changes BEiT-3's weights and nothing else, and leaves no head in the model.
    Whether what it learns carries over to unseen clips is measured by benchmarks/toy_encoder_kinds.py."""
    torch.manual_seed(0)
    model = build_model("toy", seed=0)
    tokenizer = load_tokenizer(TOY_TOKENIZER)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    dataset = build_categories_set([DatasetSpec(format="ytvos", root=str(toy_root), max_items=40)], model)
    spec = CategoriesSpec(steps=40, batch_size=16, warmup_steps=5, expression=NEUTRAL_EXPRESSION)
    losses = pretrain_categories(
        model, spec, dataset, tokenizer, DistributedContext(), tmp_path, log_every=20
    )
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    log = [json.loads(line) for line in (tmp_path / CATEGORIES_LOG).read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 20, 40]
    assert log[0]["accuracy"] < 0.4 and log[-1]["accuracy"] > log[0]["accuracy"] + 0.2, log
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, weights[k])}
    assert changed and all(k.startswith("multimodal_encoder.") for k in changed), sorted(changed)[:5]
    assert set(model.state_dict()) == set(weights)


def test_a_configuration_reads_the_categories_section():
    toy = ROOT / "configs" / "toy.json"
    config = load_config(toy, ["categories.steps=5", "categories.expression=the shape"])
    assert config.categories == CategoriesSpec(
        steps=5, expression=NEUTRAL_EXPRESSION, extremes=1.0, kept_frames="stage"
    )
    with pytest.raises(ValueError, match="Unknown option"):
        load_config(toy, ["categories.frames=2"])


@pytest.mark.parametrize("world_size", [1, 2])
def test_kept_batches_started_part_way_are_the_batches_an_uninterrupted_stream_draws(toy_root, world_size):
    """A resumed run draws the categories frames that it would have drawn without stopping, from any batch
    of any epoch (the first epoch, part-way into a later one), for every process."""
    model = build_model("toy", seed=0)
    dataset = build_categories_set([DatasetSpec(format="ytvos", root=str(toy_root), max_items=14)], model)
    for rank in range(world_size):
        context = DistributedContext(rank=rank, world_size=world_size)
        stream = categories_batches(dataset, 3, context, seed=5)
        straight = [next(stream)[1] for _ in range(9)]
        per_epoch = math.ceil(math.ceil(14 / world_size) / 3)
        assert per_epoch < 9  # the stream crosses into later epochs
        for start in (1, per_epoch, per_epoch + 1, 8):
            resumed = next(categories_batches(dataset, 3, context, seed=5, start=start))[1]
            assert torch.equal(resumed, straight[start]), (rank, start)
        # Later epochs draw other frames of the videos.
        assert not all(torch.equal(a, b) for a, b in zip(straight, straight[per_epoch:]))


def kept_run_overrides(output_dir, *extra: str) -> list[str]:
    # The kinds' head alone (the extremes' test turns the other on), on frames of its own.
    return short_run(output_dir, "categories.kept_batch_size=2", "categories.extremes=0", *extra)


def test_a_run_keeps_the_categories_head_training_beside_the_later_stages_and_resumes_exactly(tmp_path):
    """With grounding.categories and loss.categories, the stage's head goes on learning through the grounding
    stage and the main loop (both log its loss), travels in the checkpoints but not in the model, and a
    resumed run continues with the same head, optimiser and frames as an uninterrupted one."""
    from mpgsam2 import load_model
    from mpgsam2.training import train
    from mpgsam2.training.resume import STATE_FILE

    toy = ROOT / "configs" / "toy.json"
    straight = train(load_config(toy, kept_run_overrides(tmp_path / "a", "loss.categories=1")))
    grounding = read_log(tmp_path / "a" / "grounding_log.jsonl")
    assert [r["step"] for r in grounding] == [1, 2, 3]
    assert all(r["loss_categories"] > 0 and 0 <= r["categories_accuracy"] <= 1 for r in grounding)
    main = read_log(tmp_path / "a" / "log.jsonl")
    assert len(main) == 3 and all(r["loss_categories"] > 0 for r in main)

    heads = [
        torch.load(tmp_path / "a" / f"checkpoint-{step}" / STATE_FILE, weights_only=True)["categories_head"]
        for step in (2, 3)
    ]
    assert not torch.equal(heads[0]["weight"], heads[1]["weight"])  # trained in the main loop too
    assert set(load_model(tmp_path / "a" / "checkpoint-3", device="cpu").state_dict()) == set(
        build_model("toy").state_dict()
    )

    resumed = train(
        load_config(toy, kept_run_overrides(tmp_path / "b", "loss.categories=1")),
        resume=str(tmp_path / "a" / "checkpoint-2"),
    )
    assert len(resumed["history"]) == 1
    for name, value in straight["history"][2].items():
        assert resumed["history"][0][name] == pytest.approx(value, rel=1e-5), name

    # A checkpoint without a head cannot resume a run that keeps one; the kept losses need the stage.
    train(load_config(toy, kept_run_overrides(tmp_path / "c", "train.max_steps=2", "loss.categories=0")))
    with pytest.raises(ValueError, match="no categories head"):
        train(
            load_config(toy, kept_run_overrides(tmp_path / "d", "loss.categories=1")),
            resume=str(tmp_path / "c" / "checkpoint-2"),
        )
    for option in ("grounding.categories=1", "loss.categories=1"):
        with pytest.raises(ValueError, match="need categories.steps above 0"):
            load_config(toy, [option, "categories.steps=0"])


def square(centre: tuple[int, int], size: int = 64, half: int = 3) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[centre[0] - half : centre[0] + half, centre[1] - half : centre[1] + half] = True
    return mask


def test_extreme_targets_say_which_object_is_farthest_each_way_among_all_and_among_its_kind():
    # Two circles (left, high; right, low), a square in the middle, a star off the frame.
    masks = np.stack([square((10, 10)), square((50, 54)), square((30, 30)), np.zeros((64, 64), bool)])
    kinds = ["circle", "circle", "square", "star"]
    targets = extreme_targets(masks, kinds).view(4, len(EXTREME_GROUPS), len(DIRECTIONS))
    left, right, top, bottom = range(4)
    everything, own_kind = EXTREME_GROUPS.index("all"), EXTREME_GROUPS.index("category")
    assert targets[0, everything].tolist() == [1, 0, 1, 0]
    assert targets[1, everything].tolist() == [0, 1, 0, 1]
    assert targets[2, everything].tolist() == [0, 0, 0, 0]  # between the two in both ways
    assert targets[0, own_kind].tolist() == [1, 0, 1, 0] and targets[1, own_kind, right] == 1
    assert (targets[2, own_kind] == NO_EXTREME).all()  # the only square: no other to compare with
    assert (targets[3] == NO_EXTREME).all()  # not in view
    # Alone in view, nothing is beyond anything.
    alone = extreme_targets(masks[:1], kinds[:1])
    assert (alone == NO_EXTREME).all() and alone.shape == (1, len(EXTREME_GROUPS) * len(DIRECTIONS))
    assert [left, right, top, bottom] == [
        list(DIRECTIONS).index(d) for d in ("left", "right", "top", "bottom")
    ]


def test_with_extremes_each_owned_patch_also_carries_its_shapes_extreme_targets(toy_root):
    model = build_model("toy", seed=0)
    plain = frames_of(toy_root, model, seed=3)
    dataset = frames_of(toy_root, model, seed=3, extremes=True)
    grid = model.config.beit3.grid_size
    said = 0
    for index in (0, 5, 11, 20):
        (image, labels), (same_image, kinds) = dataset[index], plain[index]
        assert torch.equal(image, same_image) and labels.shape == (grid * grid, 1 + 8)
        assert torch.equal(labels[:, 0], kinds)
        clip = generate_toy_clip(FIRST_SEED + index)
        video = video_name(FIRST_SEED + index)
        shown = [dataset_image(dataset, video, t) for t in range(clip.frames.shape[0])]
        frame = next(t for t, candidate in enumerate(shown) if torch.equal(candidate, image))
        owned, owner = owned_patches(clip.masks[:, frame : frame + 1], grid)
        expected = extreme_targets(clip.masks[:, frame], [shape.shape for shape in clip.objects])
        assert torch.equal(labels[owned[0], 1:], expected[owner[0][owned[0]]])
        assert (labels[~owned[0], 1:] == NO_EXTREME).all()
        said += int((labels[:, 1:] != NO_EXTREME).sum())
    assert said > 0


def test_the_extremes_head_adds_its_weighted_loss_and_trains_beside_the_categories(toy_root):
    torch.manual_seed(0)
    model = build_model("toy", seed=0)
    tokenizer = load_tokenizer(TOY_TOKENIZER)
    dataset = frames_of(toy_root, model, seed=3, extremes=True)
    images = torch.stack([dataset[i][0] for i in range(6)])
    labels = torch.stack([dataset[i][1] for i in range(6)])
    input_ids = tokenizer.encode(NEUTRAL_EXPRESSION).input_ids
    forward = CategoriesForward(model, len(dataset.categories), extremes=0.5)
    terms = forward(images, input_ids, labels)
    alone = CategoriesForward(model, len(dataset.categories))
    alone.head.load_state_dict(forward.head.state_dict())
    kinds_only = alone(images, input_ids, labels[..., 0])
    # The same kinds' loss, plus half the binary cross-entropy of the targets that say something.
    tokens = model.multimodal_encoder(images, input_ids[None].expand(6, -1)).visual_tokens.flatten(0, 1)
    relations = labels[..., 1:].flatten(0, 1)
    said = relations != NO_EXTREME
    expected = float(
        torch.nn.functional.binary_cross_entropy_with_logits(
            forward.extreme_head(tokens)[said].detach(), relations[said].float()
        )
    )
    assert float(terms["loss_extremes"]) == pytest.approx(expected, rel=1e-5)
    total, kinds_loss = float(terms["loss"].detach()), float(kinds_only["loss"].detach())
    assert total == pytest.approx(kinds_loss + 0.5 * expected, rel=1e-5)
    assert 0 <= terms["extremes_accuracy"] <= 1 and terms["accuracy"] == kinds_only["accuracy"]
    terms["loss"].backward()
    assert forward.extreme_head.weight.grad.abs().sum() > 0
    assert set(dict(forward.heads().named_parameters())) == {
        "categories.weight",
        "categories.bias",
        "extremes.weight",
        "extremes.bias",
    }
    with pytest.raises(ValueError, match="extreme targets"):
        forward(images, input_ids, labels[..., 0])
    with pytest.raises(ValueError, match="extremes"):
        CategoriesSpec(extremes=-1)


def test_a_run_with_extremes_keeps_both_heads_training_through_every_stage_and_resumes_exactly(tmp_path):
    from mpgsam2.training import train
    from mpgsam2.training.resume import STATE_FILE

    toy = ROOT / "configs" / "toy.json"
    options = ["loss.categories=1", "categories.extremes=1"]
    straight = train(load_config(toy, kept_run_overrides(tmp_path / "a", *options)))
    for log in ("categories_log.jsonl", "grounding_log.jsonl", "log.jsonl"):
        rows = read_log(tmp_path / "a" / log)
        assert rows and all(r["loss_extremes"] > 0 and 0 <= r["extremes_accuracy"] <= 1 for r in rows), log
    heads = [
        torch.load(tmp_path / "a" / f"checkpoint-{step}" / STATE_FILE, weights_only=True)["categories_head"]
        for step in (2, 3)
    ]
    assert not torch.equal(heads[0]["extremes.weight"], heads[1]["extremes.weight"])
    resumed = train(
        load_config(toy, kept_run_overrides(tmp_path / "b", *options)),
        resume=str(tmp_path / "a" / "checkpoint-2"),
    )
    for name, value in straight["history"][2].items():
        assert resumed["history"][0][name] == pytest.approx(value, rel=1e-5), name
