"""Shapes, conventions and device/dtype handling of each component, on the tiny "test" preset."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mpgsam2.devices import autocast, parse_dtype, pick_device
from mpgsam2.modeling.aggregator import HierarchicalAggregator
from mpgsam2.modeling.beit3 import BEiT3
from mpgsam2.modeling.config import AggregatorConfig, MPGSAM2Config, get_config


def test_presets_derive_their_sizes():
    large = get_config("large")
    assert large.beit3.grid_size == 14 and large.beit3.num_vision_tokens == 197
    assert large.beit3.vision_position_rows == 199 and large.beit3.max_text_tokens == 1022
    assert large.sam2.embedding_size == 64 and large.sam2.low_res_mask_size == 256
    assert large.sam2.hiera.channels == (1152, 576, 288, 144)
    base = get_config("base")
    assert base.beit3.embed_dim == base.mask_prior.width == 768
    with pytest.raises(ValueError, match="Unknown preset"):
        get_config("huge")


@pytest.mark.parametrize("preset", ["large", "base", "test", "toy"])
def test_config_round_trips_through_a_dict(preset):
    config = get_config(preset)
    assert MPGSAM2Config.from_dict(config.to_dict()) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.name = "x"


def test_beit3_shapes_and_padding(untrained_model):
    beit3: BEiT3 = untrained_model.multimodal_encoder
    images = torch.randn(2, 3, 224, 224)
    ids = torch.tensor([[0, 10, 11, 12, 2], [0, 10, 11, 12, 2]])
    with torch.inference_mode():
        out = beit3(images, ids)
        assert out.hidden.shape == (2, 197 + 5, 64)
        assert out.class_token.shape == (2, 64) and out.visual_tokens.shape == (2, 196, 64)
        assert out.text_tokens.shape == (2, 5, 64)
        # A padded token is invisible to every other token: padding a shorter sequence changes nothing else.
        short = beit3(images[:1], ids[:1, :4])
        padding = torch.tensor([[False, False, False, False, True]])
        padded = beit3(images[:1], torch.tensor([[0, 10, 11, 12, 3]]), padding)
        torch.testing.assert_close(padded.hidden[:, :201], short.hidden, atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="text tokens"):
            beit3(images[:1], torch.zeros(1, 2000, dtype=torch.long))


def test_mask_prior_outputs(untrained_model):
    frames = 3
    images = torch.randn(1, 3, 224, 224).expand(frames, -1, -1, -1)
    ids = torch.tensor([0, 10, 11, 2])
    with torch.inference_mode():
        context, _ = untrained_model.encode_clip(images, ids, chunk_size=2)
    assert context.priors.shape == context.prior_logits.shape == (frames, 14, 14)
    assert bool(((context.priors > 0) & (context.priors < 1)).all())
    torch.testing.assert_close(context.priors, torch.sigmoid(context.prior_logits))
    assert context.mask_embeddings.shape == (frames, 196, 256)
    assert context.sparse_prompts.shape == (frames, 256) and context.text_features.shape == (frames, 4, 256)
    # Identical frames differ only by the temporal code, which is the same at every position of a frame.
    delta = context.mask_embeddings[1] - context.mask_embeddings[0]
    torch.testing.assert_close(delta, delta[:1].expand_as(delta), atol=1e-5, rtol=0)
    assert delta.abs().max() > 0.1


def test_patch_merge_channel_order():
    aggregator = HierarchicalAggregator(AggregatorConfig(), dim=8)
    with torch.no_grad():
        aggregator.patch_merge.weight.zero_()
        aggregator.patch_merge.bias.zero_()
        # Output channel k reads merged channel 4*k + 1 (c = k, dy = 0, dx = 1).
        for k in range(8):
            aggregator.patch_merge.weight[k, 4 * k + 1] = 1.0
    grid = torch.arange(2 * 196 * 8, dtype=torch.float32).reshape(2, 14, 14, 8)
    merged = aggregator.merge_patches(grid.reshape(2, 196, 8))
    assert merged.shape == (2 * 49, 8)
    # Token of frame 1, cell (row 2, column 3) = top-left pixel (4, 6), so dx = 1 is pixel (4, 7).
    token = 49 + 2 * 7 + 3
    torch.testing.assert_close(merged[token], grid[1, 4, 7])


def test_object_memory_follows_the_official_selection():
    aggregator = HierarchicalAggregator(AggregatorConfig(), dim=8)
    pointers = {t: torch.full((8,), float(t)) for t in range(30)}
    assert aggregator.object_memory(0, 30, {}, ()) is None  # the initial frame: an empty memory bank
    stacked, codes = aggregator.object_memory(5, 30, pointers, (0,))
    # Frame 0 (the conditioning frame) first at distance 5, then frames 4, 3, 2, 1.
    assert stacked[:, 0].tolist() == [0.0, 4.0, 3.0, 2.0, 1.0]
    far, _ = aggregator.object_memory(25, 30, pointers, (0,))
    assert far[:, 0].tolist() == [0.0] + [float(25 - d) for d in range(1, 16)]
    # Distances are normalised by min(T, 16) - 1: a gap of 1 in a 3-frame clip is coded as 0.5.
    _, short_codes = aggregator.object_memory(1, 3, {0: pointers[0]}, (0,))
    _, long_codes = aggregator.object_memory(1, 30, {0: pointers[0]}, (0,))
    assert not torch.allclose(short_codes, long_codes)
    assert codes.shape == stacked.shape
    # Several conditioning frames (SAM 2's selection): each at its distance, and not again as a past frame.
    several, _ = aggregator.object_memory(8, 30, pointers, (0, 6))
    assert several[:, 0].tolist() == [0.0, 6.0, 7.0, 5.0, 4.0, 3.0, 2.0, 1.0]


@pytest.mark.parametrize(
    "switches",
    [
        {},
        {"pixel_global": False},
        {"object_global": False, "object_local": False},
        {"num_pixel_layers": 2, "num_object_layers": 3},
    ],
)
def test_aggregator_switches_build_and_run(switches, tokenizer, synthetic_frames):
    from mpgsam2 import VideoPredictor, build_model

    base = get_config("test")
    config = base.replace(aggregator=dataclasses.replace(base.aggregator, **switches))
    model = build_model(config)
    layers = {
        name: len(getattr(model.aggregator, name))
        for name in ("pixel_global", "object_global", "object_local")
    }
    assert layers["pixel_global"] == (
        0 if switches.get("pixel_global") is False else switches.get("num_pixel_layers", 1)
    )
    (result,) = VideoPredictor(model, tokenizer).segment(synthetic_frames[:2], ["the red square"])
    assert result.masks.shape == (2, 96, 128) and np.isfinite(result.logits).all()


def test_devices_and_dtypes(untrained_model, tokenizer, synthetic_frames):
    from mpgsam2 import VideoPredictor

    assert pick_device("cpu").type == "cpu"
    assert pick_device().type in {"cpu", "cuda", "mps"}
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype(None) is None
    with pytest.raises(ValueError, match="precision"):
        parse_dtype("int8")
    with pytest.raises(ValueError, match="float16"):
        autocast(torch.device("cpu"), torch.float16)
    fp32 = VideoPredictor(untrained_model, tokenizer, device="cpu").segment(
        synthetic_frames[:2], ["red square"]
    )[0]
    bf16 = VideoPredictor(untrained_model, tokenizer, device="cpu", precision="bf16")
    result = bf16.segment(synthetic_frames[:2], ["red square"])[0]
    assert result.logits.dtype == np.float32 and np.isfinite(result.logits).all()
    # bf16 autocast changes numbers but not the kind of answer on random weights.
    assert np.corrcoef(result.logits.ravel(), fp32.logits.ravel())[0, 1] > 0.9
    assert untrained_model.device.type == "cpu" and untrained_model.dtype == torch.float32


def test_attention_in_query_chunks_and_with_padded_keys_is_unchanged():
    """The MPS path (queries in chunks) and the batched expressions' padded text keys give the attention of
    ``nn.MultiheadAttention`` itself."""
    from torch import nn

    from mpgsam2.modeling.attention import multihead_attention

    torch.manual_seed(0)
    module = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    query, key = torch.randn(2, 50, 16), torch.randn(2, 30, 16)
    padding = torch.zeros(2, 30, dtype=torch.bool)
    padding[1, 24:] = True
    with torch.no_grad():
        whole = multihead_attention(module, query, key, key, key_padding=padding)
        chunked = multihead_attention(module, query, key, key, key_padding=padding, query_chunk=7)
        reference, _ = module(query, key, key, key_padding_mask=padding)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(whole, reference, atol=1e-6, rtol=1e-5)


def test_sine_cosine_positions_give_rows_and_columns_linearly():
    from mpgsam2.modeling.beit3 import sine_cosine_positions

    grid, dim = 14, 128
    codes = sine_cosine_positions(grid, dim).double()
    assert codes.shape == (grid * grid, dim)
    design = torch.cat([codes, torch.ones(grid * grid, 1, dtype=torch.float64)], dim=1)
    rows = torch.arange(grid, dtype=torch.float64).repeat_interleave(grid)
    columns = torch.arange(grid, dtype=torch.float64).repeat(grid)
    for coordinate in (rows, columns):
        fitted = design @ torch.linalg.lstsq(design, coordinate[:, None]).solution
        assert torch.allclose(fitted[:, 0], coordinate, atol=1e-6)
    # Codes of nearby patches are closer than codes of distant ones, in both directions.
    table = codes.reshape(grid, grid, dim)
    assert torch.dist(table[3, 3], table[3, 4]) < torch.dist(table[3, 3], table[3, 10])
    assert torch.dist(table[3, 3], table[4, 3]) < torch.dist(table[3, 3], table[10, 3])
    with pytest.raises(ValueError, match="divisible by 4"):
        sine_cosine_positions(grid, 130)


def test_training_a_preset_can_start_its_vision_positions_on_the_grid(tmp_path):
    from mpgsam2.modeling.beit3 import sine_cosine_positions
    from mpgsam2.training import ModelSpec, build_training_model

    model, _, _ = build_training_model(ModelSpec(init="test", seed=0, vision_positions="sine_cosine"))
    beit3 = model.multimodal_encoder
    config = beit3.config
    table = beit3.encoder.embed_positions.A.weight
    first_patch = config.position_offset + 1
    assert torch.equal(table[first_patch:], sine_cosine_positions(config.grid_size, config.embed_dim))
    assert not table[:first_patch].any() and table.requires_grad
    # Everything else is the seed's usual weights.
    plain, _, _ = build_training_model(ModelSpec(init="test", seed=0))
    others = {k: v for k, v in plain.state_dict().items() if "embed_positions.A" not in k}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in others.items())
    with pytest.raises(ValueError, match="choose one of"):
        ModelSpec(init="test", vision_positions="learned")
    with pytest.raises(ValueError, match="keeps its own"):
        build_training_model(ModelSpec(init=str(tmp_path), vision_positions="sine_cosine"))
