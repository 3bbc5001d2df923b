"""The kept categories head trained on the frames each later stage already encodes
(``categories.kept_frames: "stage"``): the clips carry their frames' patch labels, a flip mirrors them, and the
head's loss is that of the very tokens the stage computed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from short_runs import short_run

from mpgsam2 import build_model, load_tokenizer
from mpgsam2.datasets import ClipTransform
from mpgsam2.datasets.augment import horizontal_flip
from mpgsam2.datasets.object_categories import (
    IGNORED,
    NO_EXTREME,
    PatchCategories,
    extreme_targets,
    flip_patch_labels,
    owned_patches,
)
from mpgsam2.datasets.registry import TrainingSet
from mpgsam2.datasets.toy import generate_toy_clip, video_name, write_toy_dataset
from mpgsam2.datasets.videos import RefYouTubeVOS
from mpgsam2.tokenizer import TOY_TOKENIZER
from mpgsam2.training import CategoriesForward, CategoriesSpec, load_config, read_log
from mpgsam2.training.forward import TrainingForward
from mpgsam2.training.grounding import GroundingForward, encoder_batch
from mpgsam2.training.kept_heads import StageFrameCategories, label_stage_frames
from mpgsam2.training.losses import LossWeights, count_visible_frames

FIRST_SEED = 500
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("stage_frames") / "toy", "train", 12, FIRST_SEED)


@pytest.fixture(scope="module")
def model():
    return build_model("toy", seed=0).eval()


def labelled_clips(root, model, num_frames: int) -> tuple[RefYouTubeVOS, PatchCategories]:
    """The split's clips with patch labels (kinds and extremes) added by :func:`label_stage_frames`."""
    part = PatchCategories.for_model(root, "train", model.config, extremes=True)
    transform = ClipTransform(model.config, load_tokenizer(TOY_TOKENIZER))
    dataset = RefYouTubeVOS(root, "train", num_frames=num_frames, transform=transform, seed=2)
    assert label_stage_frames(TrainingSet([dataset, dataset]), TrainingSet([part])) == 1
    return dataset, part


def expected_labels(masks: np.ndarray, kinds: list[str], categories, grid: int) -> torch.Tensor:
    """(P, 1 + G * D) of one frame, from the generator's own (K, H, W) masks of it."""
    owned, owner = owned_patches(masks[:, None], grid)
    index = torch.tensor([categories.index(kind) for kind in kinds])
    labels = torch.where(owned[0], index[owner[0]], torch.full_like(owner[0], IGNORED))
    relations = torch.where(owned[0, :, None], extreme_targets(masks, kinds)[owner[0]], NO_EXTREME)
    return torch.cat([labels[:, None], relations], 1)


def test_each_clip_carries_its_frames_patch_labels_and_a_flip_mirrors_them(toy_root, model):
    dataset, part = labelled_clips(toy_root, model, num_frames=3)
    unlabelled = RefYouTubeVOS(toy_root, "train", num_frames=3)
    grid = model.config.beit3.grid_size
    checked = 0
    for index in range(0, len(dataset), max(1, len(dataset) // 9)):
        raw = dataset.raw_item(index)
        video, exp_id = raw.source.split(":")[1].split("/")
        # The labels come from the same read of each frame's PNG as the target's masks, which stay as
        # a clip without labels has them.
        plain = unlabelled.load_clip(video, exp_id, list(raw.frame_indices))
        assert plain.patch_labels is None and np.array_equal(plain.masks, raw.masks)
        clip = generate_toy_clip(FIRST_SEED + [video_name(FIRST_SEED + i) for i in range(12)].index(video))
        kinds = [shape.shape for shape in clip.objects]
        assert raw.patch_labels.shape == (3, grid * grid, 9)
        flipped = horizontal_flip(raw)
        for t, frame in enumerate(raw.frame_indices):
            masks = clip.masks[:, frame]
            assert torch.equal(raw.patch_labels[t], expected_labels(masks, kinds, part.categories, grid))
            mirror = np.ascontiguousarray(masks[:, :, ::-1])
            assert torch.equal(flipped.patch_labels[t], expected_labels(mirror, kinds, part.categories, grid))
        # The patches that the referred shape owns name its kind.
        visible = [t for t in range(3) if raw.masks[t].any()]
        k = int(
            np.argmax(
                [
                    (clip.masks[k, raw.frame_indices[visible[0]]] & raw.masks[visible[0]]).sum()
                    for k in range(len(kinds))
                ]
            )
        )
        owned, _ = owned_patches(raw.masks[None], grid)
        assert (raw.patch_labels[..., 0][owned] == part.categories.index(kinds[k])).all()
        checked += int(owned.any())
    assert checked >= 9
    # Without extremes, only the patches' order changes.
    kinds_only = raw.patch_labels[..., 0]
    assert torch.equal(flip_patch_labels(flip_patch_labels(kinds_only)), kinds_only)
    assert not torch.equal(flip_patch_labels(kinds_only), kinds_only)


def training_clips(root, model, num_frames: int, count: int = 2):
    dataset, part = labelled_clips(root, model, num_frames)
    return [dataset[i] for i in range(count)], len(part.categories)


@pytest.mark.parametrize("stage", ["grounding", "main"])
def test_the_head_adds_the_loss_of_the_tokens_the_stage_itself_encoded(toy_root, model, stage):
    """The weighted head loss on the stage's own BEiT-3 tokens (no other pass), frames of a clip without labels
    teaching nothing, and the head trained by it."""
    torch.manual_seed(0)
    frames = 1 if stage == "grounding" else 3
    clips, num_categories = training_clips(toy_root, model, frames)
    # The second clip comes without labels (as a dataset without categories gives them).
    clips = [clips[0], replace(clips[1], patch_labels=None)]
    if stage == "grounding":
        stage_forward = GroundingForward(model, cell_choice=1.0)
    else:
        stage_forward = TrainingForward(model, LossWeights(prior=5.0, object_score=2.0))
    head = CategoriesForward(model, num_categories, extremes=1.0)
    forward = StageFrameCategories(stage_forward, head, weight=0.5)
    num_boxes = count_visible_frames([c.visible for c in clips])

    calls = []
    counter = model.multimodal_encoder.register_forward_hook(lambda *_: calls.append(1))
    terms = forward(clips, num_boxes)
    passes = len(calls)
    alone = stage_forward(clips, num_boxes)
    counter.remove()
    assert len(calls) == 2 * passes  # the head added no pass of BEiT-3

    if stage == "grounding":
        tokens = model.multimodal_encoder(*encoder_batch(clips)).visual_tokens
    else:
        tokens = torch.cat(
            [model.encode_clip(c.beit_images, c.input_ids, c.text_padding)[1].visual_tokens for c in clips]
        )
    patches = tokens.shape[1]
    labels = torch.cat([clips[0].patch_labels, head.unlabelled(clips[1].num_frames, patches)])
    assert (labels[frames:, :, 0] == IGNORED).all() and (labels[:frames, :, 0] != IGNORED).any()
    expected = head.head_terms(tokens, labels)
    assert float(terms["loss_categories"]) == pytest.approx(float(expected["loss"].detach()), rel=1e-5)
    assert float(terms["loss_extremes"]) == pytest.approx(float(expected["loss_extremes"].detach()), rel=1e-5)
    assert float(terms["loss"].detach()) == pytest.approx(
        float(alone["loss"].detach()) + 0.5 * float(expected["loss"].detach()), rel=1e-5
    )
    terms["loss"].backward()
    assert head.head.weight.grad.abs().sum() > 0 and head.extreme_head.weight.grad.abs().sum() > 0


def test_a_stage_that_encodes_other_frames_than_its_clips_is_refused(toy_root, model):
    clips, num_categories = training_clips(toy_root, model, 1)
    twice = GroundingForward(model)

    class EncodesTwice(torch.nn.Module):
        def forward(self, clips, num_boxes):
            model.multimodal_encoder(*encoder_batch(clips))
            return twice(clips, num_boxes)

    forward = StageFrameCategories(EncodesTwice(), CategoriesForward(model, num_categories, 1.0), 1.0)
    with pytest.raises(RuntimeError, match="encodes each frame of its clips once"):
        forward(clips, 1.0)


def stage_run(output_dir, *extra: str) -> list[str]:
    return short_run(
        output_dir, "loss.categories=1", "categories.extremes=1", "categories.kept_frames=stage", *extra
    )


def test_a_run_trains_the_kept_heads_on_the_stages_frames_and_resumes_exactly(tmp_path):
    from mpgsam2.training import train
    from mpgsam2.training.resume import STATE_FILE

    toy = ROOT / "configs" / "toy.json"
    straight = train(load_config(toy, stage_run(tmp_path / "a")))
    for log in ("grounding_log.jsonl", "log.jsonl"):
        rows = read_log(tmp_path / "a" / log)
        assert len(rows) == 3, log
        assert all(r["loss_categories"] > 0 and r["loss_extremes"] > 0 for r in rows), log
    heads = [
        torch.load(tmp_path / "a" / f"checkpoint-{step}" / STATE_FILE, weights_only=True)["categories_head"]
        for step in (2, 3)
    ]
    assert not torch.equal(heads[0]["categories.weight"], heads[1]["categories.weight"])
    resumed = train(load_config(toy, stage_run(tmp_path / "b")), resume=str(tmp_path / "a" / "checkpoint-2"))
    for name, value in straight["history"][2].items():
        assert resumed["history"][0][name] == pytest.approx(value, rel=1e-5), name
    # The same head on other frames gives another run.
    extra = train(load_config(toy, stage_run(tmp_path / "c", "categories.kept_frames=extra")))
    assert extra["history"][0]["loss_categories"] != pytest.approx(straight["history"][0]["loss_categories"])


def test_the_kept_frames_are_named_from_a_fixed_list():
    assert CategoriesSpec(kept_frames="stage").kept_frames == "stage"
    with pytest.raises(ValueError, match="kept_frames must be one of"):
        CategoriesSpec(kept_frames="own")
