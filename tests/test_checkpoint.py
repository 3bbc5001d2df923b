"""Checkpoint names, strict loading and the Hugging Face layouts, on checkpoints written here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from official import BASE_MANIFEST, LARGE_MANIFEST, read_manifest

from mpgsam2 import CheckpointError, VideoPredictor, build_model, get_config, load_model, save_pretrained
from mpgsam2.checkpoints import (
    OFFICIAL_TO_OURS,
    config_from_state_dict,
    from_official,
    load_official_state_dict,
    official_state_dict,
    read_weights,
    resolve_source,
    to_official,
)


def test_name_table_maps_every_official_name_both_ways(untrained_model):
    official = list(read_manifest(LARGE_MANIFEST))
    ours = from_official(dict.fromkeys(official))
    # Every official name is renamed (none falls through), and the reverse mapping restores it exactly.
    assert not [name for name in ours if name.startswith(("visual_model.", "mm_extractor.", "vmtoken."))]
    assert list(to_official(ours)) == official
    prefixes = {ours for _, ours in OFFICIAL_TO_OURS}
    assert all(any(name.startswith(p) for p in prefixes) for name in ours)
    # Our own model's names all have an official counterpart, and back.
    mine = untrained_model.state_dict()
    assert from_official(to_official(mine)).keys() == mine.keys()


def test_wrapper_prefixes_of_training_checkpoints_are_stripped(untrained_model):
    official = official_state_dict(untrained_model)
    wrapped = {f"module.evf_model.{k}": v for k, v in official.items()}
    assert from_official(wrapped).keys() == untrained_model.state_dict().keys()


def test_strict_load_names_missing_unexpected_and_shape_conflicts(untrained_model):
    state = official_state_dict(untrained_model)
    state.pop("mask_linear.weight")
    state["visual_model.extra.weight"] = torch.zeros(1)
    state["text_feat_linear.weight"] = torch.zeros(3, 3)
    model = build_model("test")
    with pytest.raises(CheckpointError) as error:
        load_official_state_dict(model, state)
    message = str(error.value)
    assert "missing keys" in message and "mask_prior.channel_modulation.weight" in message
    assert "unexpected keys" in message and "sam2.extra.weight" in message
    assert "shape conflicts" in message and "(3, 3)" in message


def test_integer_weights_are_refused(untrained_model):
    state = official_state_dict(untrained_model)
    state["meo_linear.weight"] = state["meo_linear.weight"].to(torch.int32)
    with pytest.raises(CheckpointError, match="non-floating-point"):
        load_official_state_dict(build_model("test"), state)


def test_half_precision_weights_load_as_float32(untrained_model):
    state = {k: v.to(torch.bfloat16) for k, v in official_state_dict(untrained_model).items()}
    model = build_model("test")
    load_official_state_dict(model, state)
    assert model.dtype == torch.float32
    expected = untrained_model.mask_prior.prior_head.weight.to(torch.bfloat16).float()
    torch.testing.assert_close(model.mask_prior.prior_head.weight, expected)


def _write_layout(model, folder, layout):
    if layout == "safetensors":
        save_pretrained(model, folder)
    elif layout == "sharded":
        save_pretrained(model, folder, max_shard_bytes=40_000_000)
        assert len(list(folder.glob("model-*-of-*.safetensors"))) > 1
    elif layout == "bin":
        save_pretrained(model, folder)
        (folder / "model.safetensors").unlink()
        torch.save(official_state_dict(model), folder / "pytorch_model.bin")
    return folder


@pytest.mark.parametrize("layout", ["bin", "safetensors", "sharded"])
def test_hf_layouts_load_offline_and_segment(
    layout, untrained_model, tokenizer, tmp_path, monkeypatch, synthetic_frames
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _write_layout(untrained_model, tmp_path / "ckpt", layout)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "evf" and config["hidden_size"] == 64
    loaded = load_model(folder, device="cpu")
    for name, tensor in untrained_model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, atol=0, rtol=0)
    assert loaded.config == untrained_model.config
    frames = synthetic_frames[:2]
    expected = VideoPredictor(untrained_model, tokenizer).segment(frames, ["the square"])[0]
    got = VideoPredictor(loaded, tokenizer).segment(frames, ["the square"])[0]
    np.testing.assert_array_equal(got.logits, expected.logits)


def test_single_weights_file_loads(untrained_model, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"model": official_state_dict(untrained_model)}, path)
    (tmp_path / "config.json").write_text(json.dumps({"mpgsam2": untrained_model.config.to_dict()}))
    loaded = load_model(path, device="cpu")
    torch.testing.assert_close(
        loaded.aggregator.patch_merge.weight, untrained_model.aggregator.patch_merge.weight
    )


def test_offline_and_not_cached_gives_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        resolve_source("ytvos")
    with pytest.raises(CheckpointError, match="neither an existing file"):
        resolve_source("not a path or id")


def test_broken_and_foreign_files(tmp_path, untrained_model):
    good = tmp_path / "good.safetensors"
    save_pretrained(untrained_model, tmp_path / "folder")
    data = (tmp_path / "folder" / "model.safetensors").read_bytes()
    good.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated"):
        read_weights(good)
    (tmp_path / "random.bin").write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        read_weights(tmp_path / "random.bin")
    # A plain SAM 2 checkpoint (no BEiT-3) is named as such.
    sam_only = {
        k: v for k, v in official_state_dict(untrained_model).items() if k.startswith("visual_model.")
    }
    torch.save({"model": {k[len("visual_model.") :]: v for k, v in sam_only.items()}}, tmp_path / "sam2.pt")
    with pytest.raises(CheckpointError, match="not an MPG-SAM 2 checkpoint"):
        load_model(tmp_path / "sam2.pt")


def test_config_is_read_from_checkpoint_widths():
    """The large manifest gives the large config; the official 'base as coded' layout is refused clearly."""
    large = {name: torch.empty(shape, device="meta") for name, shape in read_manifest(LARGE_MANIFEST).items()}
    config = config_from_state_dict(large)
    assert config.beit3.embed_dim == 1024 and config.beit3.depth == 24 and config.beit3.num_heads == 16
    assert config.mask_prior.width == 1024 and config.mask_prior.ffn_dim == 4096
    assert config.sam2.hiera.embed_dim == 144 and sum(config.sam2.hiera.stages) == 48
    # Read from the shapes, these are the released values (the large preset's).
    large_preset = get_config("large")
    assert config.beit3 == large_preset.beit3 and config.sam2 == large_preset.sam2
    base = {name: torch.empty(shape, device="meta") for name, shape in read_manifest(BASE_MANIFEST).items()}
    with pytest.raises(ValueError, match="must equal BEiT-3"):
        build_model(config_from_state_dict(base))


def test_switches_survive_save_and_load(tmp_path):
    """Ablation models (no dense prior, stacked fusion layers) come back with the same configuration."""
    import dataclasses

    from mpgsam2 import get_config

    base = get_config("test")
    config = base.replace(
        mask_prior=dataclasses.replace(base.mask_prior, dense_prompt=False),
        aggregator=dataclasses.replace(base.aggregator, num_pixel_layers=2, num_object_layers=3),
    )
    model = build_model(config, seed=3)
    loaded = load_model(save_pretrained(model, tmp_path / "ablation"), device="cpu")
    assert loaded.config.mask_prior.dense_prompt is False
    assert len(loaded.aggregator.pixel_global) == 2 and len(loaded.aggregator.object_local) == 3
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, atol=0, rtol=0)
