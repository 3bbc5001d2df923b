"""The MPG-SAM 2 network, one module per box of the paper's figure.

* :mod:`.beit3` - the multimodal encoder (BEiT-3: vision and language experts, joint attention);
* :mod:`.mask_prior` - the mask prior generator: the clip-level ("global") stage that turns BEiT-3's outputs
  into each frame's prior mask, mask embeddings and prompts;
* :mod:`.aggregator` - the hierarchical global-historical aggregator inside SAM 2's mask decoder;
* :mod:`.sam2_adapter` - SAM 2 (Meta's ``sam2`` package) with MPG-SAM 2's prompts and fused decoder: one
  frame's tracking step;
* :mod:`.model` - :class:`MPGSAM2`, composing the above; :func:`build_model`;
* :mod:`.config` - frozen configurations and named presets; :mod:`.attention` - fused multi-head attention;
  :mod:`.random_init` - deterministic random weights for untrained models.
"""

from __future__ import annotations

from .config import MPGSAM2Config, get_config
from .model import MPGSAM2, build_model

__all__ = ["MPGSAM2", "MPGSAM2Config", "build_model", "get_config"]
