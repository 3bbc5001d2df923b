"""The "toy" preset, its tokenizer, and the switches that train it from scratch (configs/toy.json)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mpgsam2 import VideoPredictor, build_model, get_config, load_model, load_tokenizer, save_pretrained
from mpgsam2.checkpoints import config_from_state_dict, read_config_hints, read_weights
from mpgsam2.datasets import ClipTransform, RawClip
from mpgsam2.datasets.toy import VOCABULARY, ToyConfig, ToyExpression, generate_toy_clip
from mpgsam2.modeling.config import HIERA_PRESETS
from mpgsam2.modeling.sam2_adapter import SAM2_DECODER_WIDTHS
from mpgsam2.tokenizer import TOY_TOKENIZER
from mpgsam2.training import (
    TrainingForward,
    forward_backward,
    load_config,
    prepare_for_training,
    read_log,
    train,
)
from mpgsam2.training.losses import LossWeights
from mpgsam2.training.optim import learning_rate_factor, set_learning_rates

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy_model():
    return build_model("toy", seed=0)


@pytest.fixture(scope="module")
def toy_tokenizer():
    return load_tokenizer(TOY_TOKENIZER)


def _decoder_widths(model) -> tuple[int, int, int]:
    decoder = model.sam2.sam_mask_decoder
    layer = decoder.transformer.layers[0]
    return (
        layer.mlp.layers[0].out_features,
        layer.self_attn.num_heads,
        decoder.iou_prediction_head.layers[0].out_features,
    )


def test_every_sam2_width_follows_the_config(toy_model, untrained_model):
    sam2 = get_config("toy").sam2
    encoder = toy_model.sam2.memory_encoder
    assert encoder.mask_downsampler.encoder[-1].out_channels == sam2.hidden_dim
    assert encoder.pix_feat_proj.in_channels == sam2.hidden_dim
    assert encoder.out_proj.out_channels == sam2.memory_dim
    assert _decoder_widths(toy_model) == (
        sam2.decoder_mlp_dim,
        sam2.decoder_num_heads,
        sam2.iou_head_hidden_dim,
    )
    assert toy_model.sam2.memory_attention.layers[0].linear1.out_features == sam2.memory_attention_ffn_dim
    # Nothing in SAM 2 is wider than Hiera's last stage's MLP: no width was left at sam2's 256-wide default.
    widths = {m.out_features for m in toy_model.sam2.modules() if isinstance(m, torch.nn.Linear)}
    assert max(widths) <= 4 * sam2.hiera.channels[0]
    # The released widths keep SAM2Base's own decoder.
    assert _decoder_widths(untrained_model) == SAM2_DECODER_WIDTHS
    assert get_config("large").sam2.hiera == HIERA_PRESETS["large"]


def test_the_toy_preset_segments_a_toy_clip(toy_model, toy_tokenizer):
    clip = generate_toy_clip(3)
    predictor = VideoPredictor(toy_model, toy_tokenizer, "cpu")
    results = predictor.segment(clip.frames[:4], [e.text for e in clip.expressions])
    assert len(results) == len(clip.expressions)
    for result in results:
        assert result.masks.shape == clip.frames[:4].shape[:3] and np.isfinite(result.logits).all()


def test_the_toy_preset_round_trips_through_save_and_load(toy_model, tmp_path):
    folder = save_pretrained(toy_model, tmp_path / "toy", TOY_TOKENIZER)
    loaded = load_model(folder, device="cpu")
    assert loaded.config == toy_model.config
    for name, tensor in toy_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    state = read_weights(folder / "model.safetensors")
    assert config_from_state_dict(state, read_config_hints(folder)) == toy_model.config
    # Without the saved config, every width comes from the shapes; only what no shape fixes (head counts,
    # SAM 2's input size) falls back to the standard values.
    bare = config_from_state_dict(state)
    toy = toy_model.config
    assert bare.beit3 == dataclasses.replace(toy.beit3, num_heads=bare.beit3.num_heads)
    assert (bare.beit3.image_size, bare.beit3.patch_size) == (112, 8)
    assert bare.sam2 == dataclasses.replace(
        toy.sam2, image_size=bare.sam2.image_size, decoder_num_heads=bare.sam2.decoder_num_heads
    )
    assert bare.sam2.hiera == HIERA_PRESETS["toy"] and bare.mask_prior.width == toy.mask_prior.width
    assert len(load_tokenizer(folder)) == toy.beit3.vocab_size


def test_the_toy_tokenizer_has_one_piece_per_word(toy_tokenizer):
    assert len(toy_tokenizer) == get_config("toy").beit3.vocab_size
    for word in VOCABULARY:
        encoded = toy_tokenizer.encode(f"the {word}")
        assert len(encoded.input_ids) == 4 and encoded.known_tokens == 2  # <s> the word </s>
    longest = max((e.text for s in range(30) for e in generate_toy_clip(s).expressions), key=len)
    assert len(toy_tokenizer.encode(longest).input_ids) <= get_config("toy").beit3.max_text_tokens


def _training_clip(config, tokenizer, seed: int = 3, frames: int = 4):
    clip = generate_toy_clip(seed, ToyConfig())
    expression = next(
        e for e in clip.expressions if not clip.target_masks(e)[:frames].reshape(frames, -1).any(1).all()
    )
    raw = RawClip(
        frames=clip.frames[:frames],
        masks=clip.target_masks(expression)[:frames],
        expression=expression.text,
        frame_indices=tuple(range(frames)),
        source="toy",
    )
    return ClipTransform(config, tokenizer)(raw)


def test_an_unfrozen_encoder_and_the_extra_losses_reach_what_the_official_recipe_does_not(toy_tokenizer):
    clip = _training_clip(get_config("toy"), toy_tokenizer)
    assert clip.visible.any() and not clip.visible.all()  # the object score sees both answers

    def gradient_of(model, name):
        return dict(model.named_parameters())[name].grad

    trunk = "sam2.image_encoder.trunk.patch_embed.proj.weight"
    score_head = "sam2.sam_mask_decoder.pred_obj_score_head.layers.2.bias"
    # The official recipe: the encoder frozen, and the three official terms never reach the score head.
    model = prepare_for_training(build_model("toy", seed=0), dropout=0.0)
    losses = forward_backward(TrainingForward(model), [clip], "cpu")
    assert set(losses) == {"loss", "loss_mask", "loss_dice", "loss_sim"}
    assert gradient_of(model, trunk) is None and gradient_of(model, score_head) is None
    assert model.training and not model.sam2.image_encoder.training

    model = prepare_for_training(build_model("toy", seed=0), dropout=0.0, freeze_encoder=False)
    weights = LossWeights(object_score=2.0, prior=5.0)
    losses = forward_backward(TrainingForward(model, weights), [clip], "cpu")
    assert {"loss_object", "loss_prior"} <= set(losses) and torch.isfinite(losses["loss"])
    assert model.sam2.image_encoder.training
    for name in (trunk, score_head, "mask_prior.prior_head.weight"):
        assert gradient_of(model, name) is not None and gradient_of(model, name).abs().sum() > 0, name


def test_learning_rate_warm_up_and_cosine_decay():
    assert learning_rate_factor(0) == learning_rate_factor(500) == 1.0  # official: constant
    assert learning_rate_factor(0, warmup_steps=10) == pytest.approx(0.1)
    assert learning_rate_factor(9, warmup_steps=10) == 1.0
    assert learning_rate_factor(50, decay="cosine", total_steps=100) == pytest.approx(0.5)
    assert learning_rate_factor(100, decay="cosine", total_steps=100) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="total number of steps"):
        learning_rate_factor(1, decay="cosine")
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    set_learning_rates(optimizer, 0.5)
    set_learning_rates(optimizer, 0.25)  # of the base rate, not of the last one
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2.5e-4)
    with pytest.raises(ValueError, match="needs train.max_steps"):
        load_config(ROOT / "configs" / "toy.json", ["train.max_steps=null"])
    with pytest.raises(ValueError, match="Unknown optim.decay"):
        load_config(ROOT / "configs" / "toy.json", ["optim.decay=linear"])


def test_the_toy_configuration_trains_and_its_checkpoint_loads(tmp_path):
    """configs/toy.json as shipped but tiny: its toy data written into the run, two steps, an evaluation."""
    overrides = [
        f"output_dir={tmp_path}",
        "data.train.0.toy.num_videos=2",
        "data.train.0.num_frames=3",
        "data.eval.toy.num_videos=1",
        "data.eval.toy.num_frames=6",
        "data.eval.toy.max_expressions=2",
        "train.max_steps=3",
        "optim.warmup_steps=2",
        "train.log_every=1",
        "categories.steps=2",
        "categories.batch_size=2",
        "grounding.steps=2",
        "grounding.batch_size=2",
        "clip_grounding.steps=2",
        "clip_grounding.batch_size=1",
        "clip_grounding.num_frames=2",
    ]
    config = load_config(ROOT / "configs" / "toy.json", overrides)
    assert config.model.init == "toy" and not config.schedule.freeze_image_encoder
    summary = train(config)
    assert summary["steps"] == 3 and all(
        np.isfinite(h["loss"]) and "loss_prior" in h for h in summary["history"]
    )
    log = read_log(tmp_path / "log.jsonl")
    # Warm-up over 2 of 3 steps, then the cosine at step 2 of 3.
    assert [entry["lr"] for entry in log] == pytest.approx([2.5e-4, 5e-4 * 0.75, 5e-4 * 0.25])
    for stage in ("grounding", "clip_grounding"):
        assert [entry["step"] for entry in read_log(tmp_path / f"{stage}_log.jsonl")] == [1, 2]
    categories = read_log(tmp_path / "categories_log.jsonl")
    assert [entry["step"] for entry in categories] == [1, 2]
    assert summary["eval"]["num_expressions"] >= 1
    loaded = load_model(tmp_path / "checkpoint-3", device="cpu")
    # The toy preset, with SAM 2 at the recipe's input side (twice the preset's), carried by the checkpoint.
    preset = get_config("toy")
    assert loaded.config.sam2.image_size == config.model.sam2["image_size"] == 2 * preset.sam2.image_size
    assert loaded.config == preset.replace(
        sam2=dataclasses.replace(preset.sam2, image_size=loaded.config.sam2.image_size)
    )
    # Exported as checkpoints/toy is: half-precision weights, the run's configuration, the three curves.
    import subprocess
    import sys

    out = tmp_path / "export"
    script = ROOT / "scripts" / "export_toy_model.py"
    subprocess.run([sys.executable, str(script), str(tmp_path), "--output", str(out)], check=True)
    exported = load_model(out, device="cpu").state_dict()
    for name, value in loaded.state_dict().items():
        torch.testing.assert_close(
            exported[name], value.half().float() if value.is_floating_point() else value
        )
    # The run's settings, with the recipe's output folder instead of this machine's.
    recorded = load_config(out / "train_config.json")
    assert recorded.output_dir == load_config(ROOT / "configs" / "toy.json").output_dir
    assert load_config(out / "train_config.json", [f"output_dir={tmp_path}"]) == config
    curves = {
        name: (out / f"{name}_log.csv").read_text().splitlines()
        for name in ("training", "grounding", "clip_grounding", "categories")
    }
    header = (
        "step,lr,s_per_step,accuracy,extremes_accuracy,loss,loss_extremes"  # configs/toy.json's two heads
    )
    assert curves["categories"][0] == header and len(curves["categories"]) == 3
    assert "categories_accuracy" in curves["grounding"][0].split(",")
    assert "loss_cell_choice" in curves["clip_grounding"][0].split(",")  # configs/toy.json's cell choice
    assert len(curves["grounding"]) == len(curves["clip_grounding"]) == 3 and len(curves["training"]) == 4

    # configs/toy_lookalike.json goes on from that run: its clip stage, three of each step's four windows
    # anchored on a frame where the target hides while a look-alike shows (SAM 2 left as it was), then main
    # steps on windows of the data and its anchored view, with BEiT-3 and the mask prior generator held.
    then = tmp_path / "lookalike"
    overrides = [
        f"output_dir={then}",
        f"model.init={tmp_path / 'checkpoint-3'}",
        f"data.train.0.root={tmp_path / 'data'}",
        "data.train.0.toy.num_videos=2",
        "data.train.0.num_frames=3",
        "data.eval.toy.num_videos=1",
        "data.eval.toy.num_frames=6",
        "data.eval.toy.max_expressions=2",
        "clip_grounding.steps=2",
        "clip_grounding.num_frames=3",
        "train.max_steps=2",
        "train.log_every=1",
    ]
    second = load_config(ROOT / "configs" / "toy_lookalike.json", overrides)
    assert second.clip_grounding.lookalike_clips > 0 and second.train_data[0].lookalike_repeat > 0
    assert second.optim.lr_encoder == second.optim.lr_prior == 0 < second.optim.lr
    assert train(second)["steps"] == 2
    assert [entry["step"] for entry in read_log(then / "clip_grounding_log.jsonl")] == [1, 2]
    grounded = load_model(then / "checkpoint-stages", device="cpu").state_dict()
    before = loaded.state_dict()
    changed = {name for name, value in grounded.items() if not torch.equal(value, before[name])}
    assert changed and all(name.startswith(("multimodal_encoder.", "mask_prior.")) for name in changed)
    went_on = load_model(then / "checkpoint-2", device="cpu").state_dict()
    changed = {name for name, value in went_on.items() if not torch.equal(value, grounded[name])}
    assert changed and not any(name.startswith(("multimodal_encoder.", "mask_prior.")) for name in changed)
    subprocess.run([sys.executable, str(script), "--then", str(then), "--output", str(out)], check=True)
    exported = load_model(out, device="cpu").state_dict()
    for name, value in went_on.items():
        torch.testing.assert_close(
            exported[name], value.half().float() if value.is_floating_point() else value
        )
    # The first run's files stay; the second run's sit beside them.
    assert load_config(out / "train_config.json", [f"output_dir={tmp_path}"]) == config
    recorded = load_config(out / "lookalike_train_config.json")
    assert recorded.output_dir == load_config(ROOT / "configs" / "toy_lookalike.json").output_dir
    assert load_config(out / "lookalike_train_config.json", [f"output_dir={then}"]) == second
    assert len((out / "lookalike_clip_grounding_log.csv").read_text().splitlines()) == 3
    assert len((out / "lookalike_training_log.csv").read_text().splitlines()) == 3


def test_the_toy_benchmark_scores_a_checkpoint_on_held_out_clips(toy_model, tmp_path):
    """benchmarks/toy_model.py end to end on the (untrained) toy preset, and its scores on known answers."""
    import subprocess
    import sys

    from mpgsam2.datasets.toy import scoring as bench

    clip = generate_toy_clip(900_000)
    truth = clip.target_masks(clip.expressions[0])
    hidden = float(np.mean(~truth.reshape(len(truth), -1).any(-1)))
    # Perfect masks score 1; empty ones score only the frames where the target is hidden.
    assert bench.jf(truth, truth) == 1.0 and bench.jf(np.zeros_like(truth), truth) == pytest.approx(hidden)
    grid = 14
    peaked = np.zeros((len(truth), grid, grid), dtype=np.float32)
    for t, mask in enumerate(truth):
        if mask.any():
            rows, columns = np.nonzero(mask)
            y, x = rows[len(rows) // 2], columns[len(columns) // 2]
            peaked[t, y * grid // mask.shape[0], x * grid // mask.shape[1]] = 1.0
    hits = bench.prior_hits(peaked, truth)
    assert hits and all(hits)
    scores = np.where(truth.reshape(len(truth), -1).any(-1), 3.0, -3.0)
    absent = bench.hidden_reported_absent(scores, truth)
    assert len(absent) == int(hidden * len(truth)) and all(absent)
    assert not any(bench.hidden_reported_absent(np.ones(len(truth)), truth))

    # Where a position expression's prior lands: the words of the shape itself, not of the one it passes.
    spoken = bench.spoken_attributes
    assert spoken(ToyExpression("the small star that goes behind the red square", 1, "behind")) == {
        "size": "small",
        "shape": "star",
    }
    assert spoken(ToyExpression("the blue shape on the left", 1, "position")) == {"colour": "blue"}
    labels = clip.labels[0]
    for object_id in np.unique(labels)[1:]:
        rows, columns = np.nonzero(labels == object_id)
        own = rows // (labels.shape[0] // grid) * grid + columns // (labels.shape[1] // grid)
        cells = np.zeros(grid * grid, dtype=np.float32)
        cells[np.bincount(own, minlength=grid * grid).argmax()] = 1.0
        assert object_id in bench.peak_owners(cells.reshape(grid, grid), labels)

    folder = save_pretrained(toy_model, tmp_path / "toy", TOY_TOKENIZER)
    out = tmp_path / "toy.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "toy_model.py"), str(folder), "--clips", "2"]
    done = subprocess.run(
        [*command, "--threads", "1", "--json", str(out)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert figures["seeds"] == [900_000, 900_001] and figures["multi_expressions"] >= 2
    for name in ("single_jf", "multi_jf", "hidden_absent", "prior_on_target"):
        assert 0.0 <= figures[name] <= 1.0, name
    assert sum(figures["hidden_frames_by_kind"].values()) == figures["hidden_frames"]
    # The hidden frames split by a look-alike in view: the two parts make up the whole.
    with_lookalike = figures["hidden_frames_with_lookalike"]
    assert 0 <= with_lookalike <= figures["hidden_frames"]
    parts = [(with_lookalike, figures["hidden_absent_with_lookalike"])]
    parts.append((figures["hidden_frames"] - with_lookalike, figures["hidden_absent_without_lookalike"]))
    assert 0 <= figures["hidden_frames_with_twin"] <= with_lookalike
    assert sum(n * share for n, share in parts if n) == pytest.approx(
        figures["hidden_absent"] * figures["hidden_frames"], abs=1e-3 * figures["hidden_frames"]
    )
    for run in ("single", "multi"):
        lost = figures[f"{run}_jf_lost"]
        assert set(lost) == set(bench.LOSS_CAUSES)
        assert sum(lost.values()) == pytest.approx(1 - figures[f"{run}_jf"], abs=1e-3)  # rounded to 4 places


def test_the_toy_benchmark_knows_which_hidden_frames_one_frame_cannot_tell():
    """lookalikes_in_view on generated clips, against what their expressions promise: an attribute expression
    names its target alone, so no other shape fits its words; a position expression picks its target among
    shapes that its words fit, seen together on some frame. And frame by frame, the frames flagged are those
    whose label map shows another shape with the attributes the words name."""
    from mpgsam2.datasets.toy import referring
    from mpgsam2.datasets.toy import scoring as bench

    def looks(item):
        return item.size, item.colour, item.shape

    kinds, twin_frames = set(), 0
    for seed in range(910_000, 910_012):
        clip = generate_toy_clip(seed, bench.EVERY_PHRASING)
        seen = clip.masks.reshape(*clip.masks.shape[:2], -1).any(-1)  # (K, T)
        for expression in clip.expressions:
            flagged = referring.lookalikes_in_view(clip, expression)
            assert flagged.shape == (len(clip.frames),) and flagged.dtype == bool
            target_seen = seen[expression.object_id - 1]
            if expression.kind == "attributes":
                assert not flagged.any(), expression
            if expression.kind == "position":
                assert (flagged & target_seen).any(), expression
            # The frames flagged are those where a shape other than the target, with the words' attributes,
            # shows on the label map; the twins' frames, those where one with every attribute of the target
            # shows (a part of the above).
            words = referring.spoken_attributes(expression)
            twins = referring.lookalikes_in_view(clip, expression, twins=True)
            target = looks(clip.objects[expression.object_id - 1])
            for t, labels in enumerate(clip.labels):
                shown = {int(k) for k in np.unique(labels)} - {0, expression.object_id}
                fits = [all(getattr(clip.objects[k - 1], a) == v for a, v in words.items()) for k in shown]
                assert flagged[t] == any(fits), (expression, t)
                same = [looks(clip.objects[k - 1]) == target for k in shown]
                assert twins[t] == any(same), (expression, t)
            assert not (twins & ~flagged).any()
            hidden = ~target_seen
            assert referring.hidden_lookalikes(clip, expression) == flagged[hidden].tolist()
            assert referring.hidden_lookalikes(clip, expression, twins=True) == twins[hidden].tolist()
            twin_frames += int(twins[hidden].sum())
            kinds.add(expression.kind)
    assert {"attributes", "position", "behind"} <= kinds
    assert twin_frames > 0


def test_the_toy_benchmark_says_where_the_jf_is_lost():
    """jf_lost_by_cause on made-up predictions of generated clips whose answer is known: each cause takes what
    its frames lose, and the causes add up to 1 - J&F."""
    from mpgsam2.datasets.toy import scoring as bench

    checked = set()
    for seed in range(900_000, 900_040):
        clip = generate_toy_clip(seed)
        expression = clip.expressions[0]
        truth = clip.target_masks(expression)
        seen = truth.reshape(len(truth), -1).any(-1)
        others = [k for k in range(len(clip.objects)) if k != expression.object_id - 1]
        # Another shape, wherever it is in view and the target is not on it.
        elsewhere = np.any([clip.masks[k] for k in others], axis=0) & ~truth
        shown = elsewhere.reshape(len(truth), -1).any(-1)
        if seen.all() or not (shown & ~seen).any() or not (shown & seen).any():
            continue  # this clip cannot show every cause
        assert bench.jf_lost_by_cause(truth, truth) == dict.fromkeys(bench.LOSS_CAUSES, 0.0)

        nothing = np.zeros_like(truth)
        lost = bench.jf_lost_by_cause(nothing, truth)
        assert lost["missed"] == pytest.approx(seen.mean()) and lost["missed"] == pytest.approx(
            1 - bench.jf(nothing, truth)
        )

        wrong = np.where(seen[:, None, None], elsewhere, False)
        lost = bench.jf_lost_by_cause(wrong, truth)
        on_other = (seen & shown).mean()
        # J is 0 on a disjoint mask; F only where the outlines touch (the other shape beside the target).
        assert on_other / 2 <= lost["wrong_object"] <= on_other
        assert lost["missed"] == pytest.approx((seen & ~shown).mean())
        assert lost["mask"] == lost["hidden_shown"] == 0.0

        ghost = np.where(seen[:, None, None], truth, elsewhere)
        lost = bench.jf_lost_by_cause(ghost, truth)
        assert lost["hidden_shown"] == pytest.approx((~seen & shown).mean())
        assert sum(lost.values()) == pytest.approx(1 - bench.jf(ghost, truth))

        # A mask one pixel short on every side: still the target's, its outline off.
        shrunk = truth.copy()
        shrunk[:, 1:-1, 1:-1] &= (
            truth[:, :-2, 1:-1] & truth[:, 2:, 1:-1] & truth[:, 1:-1, :-2] & truth[:, 1:-1, 2:]
        )
        lost = bench.jf_lost_by_cause(shrunk, truth)
        assert lost["mask"] > 0 and lost["wrong_object"] == lost["hidden_shown"] == 0.0
        assert sum(lost.values()) == pytest.approx(1 - bench.jf(shrunk, truth))
        checked.add(seed)
        if len(checked) == 3:
            break
    assert len(checked) == 3


def test_the_toy_benchmarks_read_the_patch_tokens_and_teach_the_kinds(toy_model, tmp_path):
    """benchmarks/toy_model.py --patch-tokens and benchmarks/toy_encoder_kinds.py end to end, briefly."""
    import subprocess
    import sys

    folder = save_pretrained(toy_model, tmp_path / "toy", TOY_TOKENIZER)
    read, taught = tmp_path / "read.json", tmp_path / "taught.json"
    script = ROOT / "benchmarks" / "toy_model.py"
    command = [sys.executable, str(script), str(folder), "--patch-tokens", "--clips", "4", "--threads", "1"]
    done = subprocess.run([*command, "--json", str(read)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    figures = json.loads(read.read_text())
    assert figures["patch_tokens"] and figures["seeds"] == [900_000, 900_003]
    assert figures["fit_patches"] > figures["test_patches"] > 0
    for name in ("colour", "shape", "size"):
        assert 0.0 <= figures["accuracy"][name] <= 1.0 and 0.0 < figures["chance"][name] <= 1.0, name

    script = ROOT / "benchmarks" / "toy_encoder_kinds.py"
    options = [
        "--steps",
        "2",
        "--eval-every",
        "1",
        "--frames",
        "6",
        "--held-out-frames",
        "4",
        "--threads",
        "1",
    ]
    done = subprocess.run(
        [sys.executable, str(script), *options, "--json", str(taught)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    curve = json.loads(taught.read_text())["curve"]
    assert [point["step"] for point in curve] == [0, 1, 2]
    assert all(0.0 <= point["all"] <= 1.0 for point in curve)
    assert all(
        point[name] is None or 0.0 <= point[name] <= 1.0 for point in curve for name in ("small", "big")
    )
