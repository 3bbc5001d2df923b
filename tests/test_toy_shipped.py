"""The toy model that ships in checkpoints/toy/: what its masks mean on clips it never saw.

Unlike the untrained ``test`` model, the toy model was trained (``configs/toy.json``) on generated clips of
shapes, so its outputs can be held to the ground truth: the masks of each expression against its target,
the right colour on the right target with several expressions, hidden targets reported absent, and the
priors on their targets; through the library, the CLI's files and the app's runner. The bounds sit below the
figures measured on these seeds (see ``checkpoints/toy/README.md``), with a margin.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mpgsam2 import VideoPredictor
from mpgsam2.checkpoints import TOY_CHECKPOINT, CheckpointError, resolve_source
from mpgsam2.datasets.toy import ToyClip, generate_toy_clip
from mpgsam2.datasets.toy.oracle import recorded_prior_target
from mpgsam2.datasets.toy.probing import ATTRIBUTE_VALUES, patch_tokens, probe_patch_tokens, score_read_outs
from mpgsam2.datasets.toy.scoring import (
    jf,
    named_attributes,
    oracle_prior,
    prior_hits,
    score_grounding,
    score_toy_model,
)
from mpgsam2.export import load_coco_rle_json, load_palette_zip
from mpgsam2.training import load_config
from mpgsam2.training.losses import PRIOR_TARGETS, covered_fractions
from mpgsam2.video_io import write_video

ROOT = Path(__file__).resolve().parents[1]
#: Seeds that neither training (0 to 11999), its evaluation nor the benchmark (900000 on) use.
HELD_OUT = range(910_000, 910_016)
#: Measured on HELD_OUT with the shipped weights: single J&F 0.756, multi 0.829, hidden frames absent 0.835 (86
#: of 103), prior on target 0.878; the bounds leave a margin for other machines' arithmetic and a few frames
#: (the hidden frames are few). (Below the goal of checkpoints/toy/README.md: they catch a broken model or
#: pipeline, not a weak one.)
MIN_SINGLE_JF = 0.55
MIN_MULTI_JF = 0.63
MIN_HIDDEN_ABSENT = 0.60
MIN_PRIOR_ON_TARGET = 0.77
#: Of those hidden frames, the 73 where no other shape that the expression's words fit is in view, which one
#: frame can tell: measured 0.849 reported absent (the 30 with such a look-alike in view: 0.800).
MIN_HIDDEN_ABSENT_WITHOUT_LOOKALIKE = 0.70
#: With the ground truth as the prior, in the form of the recipe's prior target (HELD_OUT[:8]): measured J&F 0.862
#: (own priors: 0.731), hidden frames absent 1.0.
MIN_ORACLE_JF = 0.75
MIN_ORACLE_GAIN = 0.1
MIN_ORACLE_HIDDEN_ABSENT = 0.9
#: With the truth as prior, the J&F lost to masks on other shapes and to masks of hidden targets (measured on
#: HELD_OUT[:8]: 0.012 and 0.0; with the model's own priors 0.079 and 0.013).
MAX_ORACLE_WRONG_OBJECT = 0.06
MAX_ORACLE_HIDDEN_SHOWN = 0.02
#: Every phrasing of every target of HELD_OUT (1736 frames), the priors alone: measured on target 0.951 overall,
#: 1.0 for the expressions that name a colour alone ("the red shape"), 0.968 for a shape alone ("the star";
#: 0.38 before the categories stage kept the kinds in BEiT-3).
MIN_GROUNDING_ON_TARGET = 0.80
MIN_COLOUR_WORDS_ON_TARGET = 0.9
MIN_SHAPE_WORDS_ON_TARGET = 0.8
#: Linear read-outs of BEiT-3's patch tokens fitted on the first 37 of these held-out clips and scored on the
#: other 13 (2087 patches): measured colour 0.869 (chance, the most common colour: 0.28), size 0.99 (0.81),
#: shape 0.98 (0.36): the encoder carries the colour and the kind of the shape under a patch (the kind since
#: the categories stage, whose loss stays on in the later stages).
PROBE_SEEDS = range(910_000, 910_050)
PROBE_FIT = 37
MIN_COLOUR_READ_OUT = 0.8
MIN_SHAPE_READ_OUT = 0.88
#: A held-out clip (two expressions; "the blue shape" hidden behind another shape on frames 1 to 8 of 10, in view
#: again on the last) that the shipped model follows: J&F 0.96 and 0.99 on the generated frames. Most clips are not followed this well (see the card).
FOLLOWED_CLIP_SEED = 920_047
#: Per expression of that clip through the CLI and the app: J&F on its own target (better than on any other).
MIN_TARGET_JF = 0.75
SCALE = 2  # the clips are written at 256 px, so that H.264 keeps the colours of the 128 px frames
MAX_SIZE_MB = 20  # the budget for the folder
MAX_FILE_MB = 10  # a Hugging Face Space refuses larger files without LFS


@pytest.fixture(scope="module")
def toy_predictor():
    return VideoPredictor.from_pretrained("toy", device="cpu")


@pytest.fixture(scope="module")
def held_out_clip(tmp_path_factory) -> tuple[ToyClip, Path]:
    """A clip no training saw, with two expressions, as an mp4."""
    clip = generate_toy_clip(FOLLOWED_CLIP_SEED)
    video = tmp_path_factory.mktemp("held_out") / "shapes.mp4"
    write_video(video, upscale(clip.frames), fps=10, crf=12)
    return clip, video


def upscale(array: np.ndarray) -> np.ndarray:
    """(..., H, W[, 3]) -> each pixel repeated SCALE x SCALE times."""
    axes = (-3, -2) if array.shape[-1] == 3 else (-2, -1)
    return np.repeat(np.repeat(array, SCALE, axis=axes[0]), SCALE, axis=axes[1])


def check_targets(masks: list[np.ndarray], clip: ToyClip) -> None:
    """Each expression's (T, H, W) masks follow its own target, and no other target better."""
    for k, got in enumerate(masks):
        scores = [jf(got, upscale(clip.target_masks(e))) for e in clip.expressions]
        assert scores[k] >= MIN_TARGET_JF, (clip.expressions[k].text, scores)
        assert scores[k] == max(scores), (clip.expressions[k].text, scores)


def test_the_toy_model_ships_small_and_loads(toy_predictor):
    size = sum(f.stat().st_size for f in TOY_CHECKPOINT.iterdir()) / 2**20
    assert size <= MAX_SIZE_MB
    assert all(f.stat().st_size < MAX_FILE_MB * 10**6 for f in TOY_CHECKPOINT.iterdir())
    assert resolve_source("toy") == TOY_CHECKPOINT
    assert toy_predictor.toy and not toy_predictor.untrained
    assert toy_predictor.config.name == "toy"
    card = (TOY_CHECKPOINT / "README.md").read_text()
    assert "configs/toy.json" in card and "not" in card
    log = (TOY_CHECKPOINT / "training_log.csv").read_text().splitlines()
    assert log[0].startswith("step,") and len(log) > 10


def test_the_shipped_weights_come_from_the_shipped_recipe():
    """The card's commands, ``python -m mpgsam2 train configs/toy.json`` then ``configs/toy_lookalike.json``,
    are how the weights were made: the run configurations they carry are those files', output folders
    included."""
    recorded = load_config(TOY_CHECKPOINT / "train_config.json")
    assert recorded == load_config(ROOT / "configs" / "toy.json")
    # The look-alike pass started from the float16 export of the first run (this folder before the pass,
    # commit ff82190), not from the float32 checkpoint of that run that the file names.
    then = load_config(TOY_CHECKPOINT / "lookalike_train_config.json")
    assert then == load_config(ROOT / "configs" / "toy_lookalike.json", ["model.init=checkpoints/toy"])
    # The oracle prior takes the form of the recipe's prior target.
    assert recorded_prior_target(TOY_CHECKPOINT) == recorded.loss.prior_target


def test_the_oracle_prior_takes_the_form_of_each_prior_target(toy_predictor, tmp_path):
    """The true prior as the prior loss teaches it: a cell covered between a quarter and a half is dark with
    the covered share as the target and lit with its square root; a folder without a run configuration gets
    the default."""
    clip = generate_toy_clip(HELD_OUT[0])
    expression = clip.expressions[0]
    truth = clip.target_masks(expression)
    priors = {}
    for cell_target in PRIOR_TARGETS:
        with oracle_prior(toy_predictor.model, truth, cell_target):
            (result,) = toy_predictor.segment(clip.frames, [expression.text], logits=False)
        priors[cell_target] = result.priors
    grid = priors["coverage"].shape[-2:]
    covered = covered_fractions(torch.from_numpy(truth), grid)
    partly = ((covered > 0.25) & (covered < 0.5)).numpy()
    assert partly.sum() > 0
    assert (priors["coverage"][partly] < 0.5).all() and (priors["sqrt_coverage"][partly] > 0.5).all()
    assert recorded_prior_target(tmp_path) == "coverage"


def test_a_missing_toy_checkpoint_says_where_it_comes_from(monkeypatch, tmp_path):
    from mpgsam2.checkpoints import hub

    monkeypatch.setattr(hub, "TOY_CHECKPOINT", tmp_path / "toy")
    with pytest.raises(CheckpointError, match="checkpoints/toy"):
        resolve_source("toy")


@pytest.mark.slow
def test_the_toy_model_follows_held_out_targets(toy_predictor):
    scores = score_toy_model(toy_predictor, HELD_OUT)
    assert scores.single_jf >= MIN_SINGLE_JF, scores
    assert scores.multi_jf >= MIN_MULTI_JF, scores
    assert scores.hidden_frames > 0 and scores.hidden_absent >= MIN_HIDDEN_ABSENT, scores
    assert scores.prior_on_target >= MIN_PRIOR_ON_TARGET, scores
    assert 0 < scores.hidden_frames_with_lookalike < scores.hidden_frames, scores
    assert scores.hidden_absent_without_lookalike >= MIN_HIDDEN_ABSENT_WITHOUT_LOOKALIKE, scores
    # Every run is counted once under its expression's kind.
    assert sum(scores.single_count_by_kind.values()) == scores.clips
    assert sum(scores.multi_count_by_kind.values()) == scores.multi_expressions
    assert set(scores.multi_jf_by_kind) == set(scores.multi_count_by_kind)
    assert sum(scores.hidden_frames_by_kind.values()) == scores.hidden_frames
    weighted = sum(scores.hidden_absent_by_kind[k] * n for k, n in scores.hidden_frames_by_kind.items())
    assert weighted == pytest.approx(scores.hidden_absent * scores.hidden_frames)
    # Where the J&F below 1 goes adds up to it.
    assert sum(scores.single_jf_lost.values()) == pytest.approx(1 - scores.single_jf)
    assert sum(scores.multi_jf_lost.values()) == pytest.approx(1 - scores.multi_jf)
    # The mostly hidden frames' part of that loss (whatever its cause).
    assert scores.mostly_hidden_frames > 0 and 0 <= scores.mostly_hidden_drawn <= 1, scores
    assert 0 < scores.single_jf_lost_mostly_hidden <= 1 - scores.single_jf, scores


@pytest.mark.slow
def test_the_toy_models_priors_find_a_shape_named_by_its_colour_or_its_kind(toy_predictor):
    """The words the grounding has learned: a colour alone points the prior at its shape on nearly every
    frame, a kind of shape alone on most; the other kinds of words less often (the card's figures)."""
    scores = score_grounding(toy_predictor, HELD_OUT)
    assert scores.frames > 1000 and set(scores.by_kind) == {"attributes", "position", "behind", "in_front"}
    assert scores.prior_on_target >= MIN_GROUNDING_ON_TARGET, scores
    # A prior blind to the words would pick the named shape among the clip's two to four by chance.
    assert scores.attributes_by_words["colour"] >= MIN_COLOUR_WORDS_ON_TARGET, scores
    assert scores.attributes_by_words["shape"] >= MIN_SHAPE_WORDS_ON_TARGET, scores


def test_the_toy_models_patch_tokens_carry_the_colour_and_kind_of_their_shape(toy_predictor):
    probe = probe_patch_tokens(toy_predictor, PROBE_SEEDS[:PROBE_FIT], PROBE_SEEDS[PROBE_FIT:])
    assert probe.fit_patches > 4000 and probe.test_patches > 1000, probe
    assert set(probe.accuracy) == set(probe.chance) == set(ATTRIBUTE_VALUES)
    assert probe.accuracy["colour"] >= max(MIN_COLOUR_READ_OUT, probe.chance["colour"] + 0.3), probe
    assert probe.accuracy["shape"] >= max(MIN_SHAPE_READ_OUT, probe.chance["shape"] + 0.3), probe
    assert set(probe.shape_by_size) == {"small", "big"}


def test_a_patch_read_out_finds_each_attribute_that_the_tokens_hold(toy_predictor):
    """The probe's own check: tokens that are noisy codes of their patch's attributes read each one back,
    and the labels are those of shapes drawn in the clips."""
    model, tokenizer = toy_predictor.model, toy_predictor.tokenizer
    tokens, labels = patch_tokens(model, tokenizer, HELD_OUT[:8])
    assert len(tokens) == len(labels["shape"]) and tokens.shape[1] == model.config.beit3.embed_dim
    drawn = {(o.colour, o.shape, o.size) for seed in HELD_OUT[:8] for o in generate_toy_clip(seed).objects}
    names = [
        tuple(ATTRIBUTE_VALUES[name][int(labels[name][i])] for name in ("colour", "shape", "size"))
        for i in range(len(tokens))
    ]
    assert set(names) <= drawn
    generator = torch.Generator().manual_seed(0)
    codes = torch.cat(
        [
            torch.nn.functional.one_hot(labels[name], len(values)).float()
            for name, values in ATTRIBUTE_VALUES.items()
        ],
        dim=1,
    )
    coded = codes + 0.2 * torch.randn(codes.shape, generator=generator)
    # Every other patch: both halves hold every value drawn.
    probe = score_read_outs(
        coded[0::2],
        {k: v[0::2] for k, v in labels.items()},
        coded[1::2],
        {k: v[1::2] for k, v in labels.items()},
    )
    assert min(probe.accuracy.values()) >= 0.95, probe


def test_expressions_are_grouped_by_the_attributes_they_name():
    clip = generate_toy_clip(HELD_OUT[0])
    for expression in clip.expressions:
        words = named_attributes(expression)
        assert words == "none" or set(words.split("+")) <= {"size", "colour", "shape"}
    make = dataclasses.replace
    assert named_attributes(make(clip.expressions[0], text="the small star")) == "size+shape"
    assert named_attributes(make(clip.expressions[0], text="the big red square on the left")) == (
        "size+colour+shape"
    )
    assert named_attributes(make(clip.expressions[0], text="the shape")) == "none"


@pytest.mark.slow
def test_with_the_truth_as_its_prior_the_toy_model_segments_and_hides_far_better(toy_predictor):
    """What limits the toy model: with a perfect prior the rest of it follows the targets much better."""
    seeds = HELD_OUT[:8]
    own = score_toy_model(toy_predictor, seeds)
    oracle = score_toy_model(
        toy_predictor, seeds, oracle=True, oracle_target=recorded_prior_target(TOY_CHECKPOINT)
    )
    assert oracle.prior_on_target == 1.0 and oracle.multi_jf is None
    assert oracle.single_jf >= MIN_ORACLE_JF and oracle.single_jf >= own.single_jf + MIN_ORACLE_GAIN, (
        own,
        oracle,
    )
    assert oracle.hidden_absent >= MIN_ORACLE_HIDDEN_ABSENT, oracle
    # What a perfect prior takes away: masks on the wrong shape, masks drawn while the target is hidden.
    assert oracle.single_jf_lost["wrong_object"] <= MAX_ORACLE_WRONG_OBJECT, oracle
    assert oracle.single_jf_lost["hidden_shown"] <= MAX_ORACLE_HIDDEN_SHOWN, oracle
    # The hook is gone when the run ends: the model's own priors again.
    clip = generate_toy_clip(HELD_OUT[0])
    truth = clip.target_masks(clip.expressions[0])
    with oracle_prior(toy_predictor.model, truth):
        (replaced,) = toy_predictor.segment(clip.frames, [clip.expressions[0].text], logits=False)
    (again,) = toy_predictor.segment(clip.frames, [clip.expressions[0].text], logits=False)
    assert all(prior_hits(replaced.priors, truth))
    assert not np.allclose(again.priors, replaced.priors)


@pytest.mark.slow
def test_the_cli_files_hold_the_toy_models_masks(held_out_clip, tmp_path):
    """``segment --model toy``: the palette PNGs (index k + 1 = expression k) and the RLE JSON."""
    clip, video = held_out_clip
    texts = [e.text for e in clip.expressions]
    expressions = [arg for text in texts for arg in ("-e", text)]
    done = subprocess.run(
        [sys.executable, "-m", "mpgsam2", "-q", "segment", str(video), *expressions, "--model", "toy"]
        + ["--out", str(tmp_path / "out")],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rle = load_coco_rle_json(tmp_path / "out" / "masks_rle.json")
    check_targets(rle, clip)
    labels = load_palette_zip(tmp_path / "out" / "masks_palette.zip")
    palette = [labels == k + 1 for k in range(len(texts))]
    # Where expressions overlap, the palette keeps one index: away from overlaps it equals the RLE masks.
    alone = np.sum(rle, axis=0) == 1
    for k, (from_palette, from_rle) in enumerate(zip(palette, rle)):
        np.testing.assert_array_equal(from_palette & alone, from_rle & alone, err_msg=texts[k])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [item["expression"] for item in summary["expressions"]] == texts


@pytest.mark.slow
def test_the_apps_runner_holds_the_toy_models_masks(toy_predictor, held_out_clip, tmp_path):
    """What ``/segment`` returns, through the app's runner with the real model loop."""
    from mpgsam2 import space

    clip, video = held_out_clip

    def loop(job, frames_file, expressions, stop_flag):
        return space.device_loop(toy_predictor, frames_file, expressions, None, stop_flag)

    runner = space.Runner(
        space.ModelStore(lambda source, device=None: toy_predictor),
        space.RunFolders(tmp_path / "sessions"),
        space.TimingLog(),
        "cpu",
        loop,
    )
    texts = "\n".join(e.text for e in clip.expressions)
    job = space.plan_job(str(video), texts, space.TOY_MODEL, 0, 0, 0, 50, 0.5)
    finished = list(runner.run(job, "visitor"))[-1]
    assert not finished.untrained
    check_targets(load_coco_rle_json(finished.outputs.rle_json), clip)
