"""On a CUDA device (skipped elsewhere; ``benchmarks/gpu_check.sh`` runs these): parity with the official
code's case A in fp32, and bf16 autocast against fp32 on the same case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from official import load_case, official_random_weights

from mpgsam2 import VideoPredictor, build_model
from mpgsam2.checkpoints import load_official_state_dict

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def case_a():
    return load_case("case_a")


@pytest.fixture(scope="module")
def cuda_model(case_a):
    model = build_model("large")
    load_official_state_dict(model, official_random_weights(seed=int(case_a["seed"])))
    return model.to("cuda")


def _segment(model, tokenizer, case_a, precision=None):
    predictor = VideoPredictor(model, tokenizer, device="cuda", precision=precision)
    (result,) = predictor.segment(case_a["frames_uint8"], [str(case_a["expression"])])
    return result


def test_case_a_on_cuda_in_fp32(cuda_model, tokenizer, case_a):
    result = _segment(cuda_model, tokenizer, case_a)
    assert np.abs(result.priors - case_a["prior_mask_14"]).max() <= 1e-4
    official = case_a["pred_mask_logits_orig_res"]
    assert np.abs(result.logits[0] - official[0]).max() <= 1e-3
    assert np.abs(result.logits[1:] - official[1:]).max() <= 1e-2
    assert (result.masks == case_a["pred_masks_binary"]).mean() >= 0.999
    np.testing.assert_allclose(result.object_scores, case_a["dec_obj_score_logits"][:, 0], atol=1e-3)


def test_bf16_autocast_agrees_with_fp32(cuda_model, tokenizer, case_a):
    fp32 = _segment(cuda_model, tokenizer, case_a)
    bf16 = _segment(cuda_model, tokenizer, case_a, precision="bf16")
    agreement = (fp32.masks == bf16.masks).mean()
    correlation = np.corrcoef(fp32.logits.ravel(), bf16.logits.ravel())[0, 1]
    print(f"bf16 vs fp32: masks agree on {agreement:.4%} of pixels, logits correlate {correlation:.4f}")
    assert agreement >= 0.98 and correlation >= 0.98
    assert torch.cuda.max_memory_allocated() > 0
