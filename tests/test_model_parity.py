"""Parity with the official MPG-SAM 2 code: case A of tests/data/official (large layout, seed 0).

The official code ran on the same random weights and inputs; our package must reproduce its outputs through
the public path (mpgsam2.checkpoints.load_official_state_dict -> VideoPredictor.segment).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from official import load_case, official_random_weights, read_manifest

from mpgsam2 import VideoPredictor, build_model
from mpgsam2.checkpoints import load_official_state_dict, official_state_dict
from mpgsam2.inference.frames import preprocess

pytestmark = pytest.mark.slow

MANIFEST_ENTRIES = 1939
MANIFEST_PARAMETERS = 919_446_580


@pytest.fixture(scope="module")
def large_model():
    torch.manual_seed(0)
    return build_model("large")


@pytest.fixture(scope="module")
def case_a():
    return load_case("case_a")


def test_large_layout_matches_the_official_manifest(large_model):
    manifest = read_manifest()
    official = official_state_dict(large_model)
    assert len(official) == MANIFEST_ENTRIES == len(manifest)
    assert {name: tuple(t.shape) for name, t in official.items()} == manifest
    assert sum(p.numel() for p in large_model.parameters()) == MANIFEST_PARAMETERS


@pytest.fixture(scope="module")
def loaded(large_model, case_a):
    state = official_random_weights(seed=int(case_a["seed"]))
    load_official_state_dict(large_model, state)
    return large_model


def test_case_a_through_the_public_predictor(loaded, tokenizer, case_a):
    expression = str(case_a["expression"])
    assert tokenizer.encode(expression).input_ids.tolist() == case_a["input_ids"].tolist()

    (result,) = VideoPredictor(loaded, tokenizer).segment(case_a["frames_uint8"], [expression])

    assert np.abs(result.priors - case_a["prior_mask_14"]).max() <= 1e-4
    logits, official = result.logits, case_a["pred_mask_logits_orig_res"]
    assert logits.shape == official.shape and logits.dtype == np.float32
    assert np.abs(logits[0] - official[0]).max() <= 1e-3
    assert np.abs(logits[1:] - official[1:]).max() <= 1e-2
    assert (result.masks == case_a["pred_masks_binary"]).mean() >= 0.999
    np.testing.assert_allclose(result.object_scores, case_a["dec_obj_score_logits"][:, 0], atol=1e-3)


def test_case_a_intermediates(loaded, tokenizer, case_a):
    """BEiT-3, prompts and decoder outputs frame by frame, through the model's own steps."""
    config = loaded.config
    pre = config.preprocess
    frames = case_a["frames_uint8"]
    images = torch.stack([preprocess(f, config.beit3.image_size, pre.mean, pre.std) for f in frames])
    assert np.abs(images.numpy() - case_a["imgs_beit"]).max() <= 1e-6

    predictor = VideoPredictor(loaded, tokenizer)
    encoded = tokenizer.encode(str(case_a["expression"]))
    with torch.inference_mode():
        context, beit3 = loaded.encode_clip(images, encoded.input_ids, encoded.padding)
        assert np.abs(beit3.hidden.numpy() - case_a["beit3_encoder_out"]).max() <= 1e-4
        assert np.abs(context.prior_logits.numpy() - case_a["prior_logits_14"]).max() <= 1e-4
        assert np.abs(context.sparse_prompts.numpy() - case_a["sam_text_embeds"][:, 0]).max() <= 1e-4
        sentence = loaded.mask_prior.sentence_scores(context.text_features)
        assert np.abs(sentence.numpy() - case_a["sen_feat"]).max() <= 1e-4

        session = predictor.init_session(frames, [str(case_a["expression"])])
        for t in range(len(frames)):
            tolerance = 1e-3 if t == 0 else 1e-2
            features = loaded.encode_frame(predictor.sam_input(frames[t]))
            out = loaded.track_frame(features, session.tracking, session.memory_bank, t)
            session.remember(t, out.memory)
            assert np.abs(out.dense_prompt.numpy() - case_a["sam_prompt_masks_256"][t : t + 1]).max() <= 1e-4
            decoder = out.decoder
            assert (
                np.abs(decoder.multimask_logits.numpy()[0] - case_a["dec_masks_pre_obj_gate"][t]).max()
                <= tolerance
            )
            assert np.abs(decoder.iou.numpy()[0] - case_a["dec_iou"][t]).max() <= tolerance
            assert np.abs(decoder.mask_tokens.numpy()[0] - case_a["dec_sam_tokens"][t]).max() <= tolerance
            high_res = torch.nn.functional.interpolate(out.low_res_logits, size=(1024, 1024), mode="bilinear")
            every_4th = high_res.numpy()[:, :, ::4, ::4]
            assert np.abs(every_4th - case_a["pred_mask_logits_every_4th"][t : t + 1]).max() <= tolerance
