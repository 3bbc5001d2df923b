"""Typed, frozen configuration of MPG-SAM 2 and its named presets.

Every width that a checkpoint fixes lives here; everything else is derived. The presets are:

* ``"large"``: the released "ytvos" and "mevis" models (BEiT-3-large, SAM 2.0 Hiera-L, 1024x1024).
* ``"base"``: the released "tiny" model (BEiT-3-base). The official code cannot build it, so its widths are
  read from the checkpoint when one is loaded (:func:`mpgsam2.checkpoints.config_from_state_dict`).
* ``"test"``: a tiny random configuration that runs a few frames on a CPU in about a second.
* ``"toy"``: every component at a small width (BEiT-3 at 112x112 with 8x8 patches, which keeps the 14x14
  grid; SAM 2 at 128x128 with the ``"toy"`` Hiera), small enough to train from scratch on a CPU on
  :mod:`mpgsam2.datasets.toy` (``configs/toy.json``; vocabulary ``assets/toy_tokenizer.model``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BEiT3Config:
    """The multiway BEiT-3 encoder (vision and language experts, joint self-attention)."""

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    ffn_dim: int = 4096
    image_size: int = 224
    patch_size: int = 16
    vocab_size: int = 64010
    max_text_positions: int = 1024
    layer_norm_eps: float = 1e-5
    # fairseq numbers positions from 2 (0 and 1 were reserved for padding), and BEiT-3 kept that.
    position_offset: int = 2

    @property
    def grid_size(self) -> int:
        """Patches per side of the image: 224 // 16 = 14."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def num_vision_tokens(self) -> int:
        """Patches plus the vision class token."""
        return self.num_patches + 1

    @property
    def vision_position_rows(self) -> int:
        return self.num_vision_tokens + self.position_offset

    @property
    def max_text_tokens(self) -> int:
        """The longest token sequence the text position table can number (1022 for the released models)."""
        return self.max_text_positions - self.position_offset


@dataclass(frozen=True)
class MaskPriorConfig:
    """The mask prior generator: joint visual self-attention, class-token attention, prior and embeddings."""

    width: int = 1024
    num_heads: int = 8
    ffn_dim: int = 4096
    # False drops the prior as SAM 2's dense prompt (the paper's "without mask prior" ablation).
    dense_prompt: bool = True


@dataclass(frozen=True)
class AggregatorConfig:
    """The hierarchical global-historical aggregator inside SAM 2's mask decoder.

    The switches and layer counts reproduce the paper's ablations; the defaults are the released model.
    """

    num_heads: int = 8
    ffn_dim: int = 1024
    patch_size: int = 2
    pixel_global: bool = True
    object_global: bool = True
    object_local: bool = True
    num_pixel_layers: int = 1
    num_object_layers: int = 1
    # SAM 2's max_obj_ptrs_in_encoder: how many past object pointers the historical fusion sees.
    max_object_pointers: int = 16


@dataclass(frozen=True)
class HieraConfig:
    """SAM 2's Hiera trunk (values of sam2's ``configs/sam2/sam2_hiera_*.yaml``)."""

    embed_dim: int = 144
    num_heads: int = 2
    stages: tuple[int, ...] = (2, 6, 36, 4)
    global_att_blocks: tuple[int, ...] = (23, 33, 43)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (7, 7)
    window_spec: tuple[int, ...] = (8, 4, 16, 8)

    @property
    def coarsest_stride(self) -> int:
        """Input pixels per token of the last stage: the patch embedding's 4, halved again at each later stage
        (32 for every preset); SAM 2's input side must be a multiple of it."""
        return 4 * 2 ** (len(self.stages) - 1)

    @property
    def channels(self) -> tuple[int, ...]:
        """Stage widths, deepest first, as the FPN neck lists them (each stage doubles the width)."""
        return tuple(self.embed_dim * 2**i for i in reversed(range(len(self.stages))))


HIERA_PRESETS: dict[str, HieraConfig] = {
    "tiny": HieraConfig(96, 1, (1, 2, 7, 2), (5, 7, 9), (7, 7), (8, 4, 14, 7)),
    "small": HieraConfig(96, 1, (1, 2, 11, 2), (7, 10, 13), (7, 7), (8, 4, 14, 7)),
    "base_plus": HieraConfig(112, 2, (2, 3, 16, 3), (12, 16, 20), (14, 14), (8, 4, 14, 7)),
    "large": HieraConfig(),
    # 128x128 inputs: stages of 32, 16, 8 and 4 tokens a side; block 5 (the third stage's last) is global.
    "toy": HieraConfig(32, 1, (1, 2, 3, 1), (5,), (8, 8), (8, 4, 8, 4)),
}


@dataclass(frozen=True)
class SAM2Config:
    """SAM 2.0 (the configuration the official model vendors), built from the ``sam2`` package."""

    hiera: HieraConfig = field(default_factory=HieraConfig)
    image_size: int = 1024
    hidden_dim: int = 256
    memory_dim: int = 64
    num_maskmem: int = 7
    memory_attention_layers: int = 4
    memory_attention_ffn_dim: int = 2048
    # The mask decoder's two-way transformer and IoU head: sam2 fixes them for its 256-wide models, and every
    # released model has these values.
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    # SAM 2 stores past memories in bfloat16; the official outputs carry that rounding.
    memory_storage_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        stride = self.hiera.coarsest_stride
        if self.image_size < stride or self.image_size % stride:
            raise ValueError(
                f"SAM 2's image_size must be a multiple of {stride} (its Hiera's coarsest stride); "
                f"got {self.image_size}."
            )

    @property
    def backbone_stride(self) -> int:
        return 16

    @property
    def embedding_size(self) -> int:
        """Side of the top-level image embedding: 1024 // 16 = 64."""
        return self.image_size // self.backbone_stride

    @property
    def low_res_mask_size(self) -> int:
        """Side of the decoder's mask logits and of the dense prompt: 4x the embedding."""
        return self.embedding_size * 4


@dataclass(frozen=True)
class PreprocessConfig:
    """How frames become model inputs (the official scripts' torchvision transforms)."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    mask_threshold: float = 0.5


@dataclass(frozen=True)
class MPGSAM2Config:
    """The whole model. ``name`` is informative only."""

    name: str = "large"
    beit3: BEiT3Config = field(default_factory=BEiT3Config)
    mask_prior: MaskPriorConfig = field(default_factory=MaskPriorConfig)
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    sam2: SAM2Config = field(default_factory=SAM2Config)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    # Width of SAM 2's prompts; the sparse class-token prompt and the mask embeddings are projected to it.
    @property
    def prompt_dim(self) -> int:
        return self.sam2.hidden_dim

    def replace(self, **changes) -> MPGSAM2Config:
        """A copy with some top-level fields replaced (configs are frozen)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MPGSAM2Config:
        """Inverse of :meth:`to_dict` (lists from JSON become tuples); missing sections keep defaults."""

        def tuples(values: dict) -> dict:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}

        sam2 = dict(data.get("sam2", {}))
        hiera = HieraConfig(**tuples(sam2.pop("hiera", {})))
        return cls(
            name=data.get("name", "custom"),
            beit3=BEiT3Config(**data.get("beit3", {})),
            mask_prior=MaskPriorConfig(**data.get("mask_prior", {})),
            aggregator=AggregatorConfig(**data.get("aggregator", {})),
            sam2=SAM2Config(hiera=hiera, **sam2),
            preprocess=PreprocessConfig(**tuples(data.get("preprocess", {}))),
        )


def _large() -> MPGSAM2Config:
    return MPGSAM2Config(name="large")


def _base() -> MPGSAM2Config:
    beit3 = BEiT3Config(embed_dim=768, depth=12, num_heads=12, ffn_dim=3072)
    # The official code hard-codes the prior generator's FFN at 4096 independently of the width.
    return MPGSAM2Config(name="base", beit3=beit3, mask_prior=MaskPriorConfig(width=768, ffn_dim=4096))


def _test() -> MPGSAM2Config:
    beit3 = BEiT3Config(embed_dim=64, depth=2, num_heads=4, ffn_dim=128)
    sam2 = SAM2Config(hiera=HIERA_PRESETS["tiny"], image_size=256)
    return MPGSAM2Config(
        name="test", beit3=beit3, mask_prior=MaskPriorConfig(width=64, num_heads=8, ffn_dim=128), sam2=sam2
    )


def _toy() -> MPGSAM2Config:
    beit3 = BEiT3Config(
        embed_dim=128,
        depth=4,
        num_heads=4,
        ffn_dim=256,
        image_size=112,
        patch_size=8,
        vocab_size=128,  # assets/toy_tokenizer.model's pieces and [SEG]
        max_text_positions=66,  # 64 tokens, several times the longest toy expression
    )
    sam2 = SAM2Config(
        hiera=HIERA_PRESETS["toy"],
        image_size=128,
        hidden_dim=64,
        memory_dim=32,
        memory_attention_layers=2,
        memory_attention_ffn_dim=256,
        decoder_mlp_dim=256,
        decoder_num_heads=4,
        iou_head_hidden_dim=64,
    )
    return MPGSAM2Config(
        name="toy",
        beit3=beit3,
        mask_prior=MaskPriorConfig(width=128, num_heads=4, ffn_dim=256),
        aggregator=AggregatorConfig(num_heads=4, ffn_dim=128),
        sam2=sam2,
    )


PRESETS = {"large": _large, "base": _base, "test": _test, "toy": _toy}


def get_config(preset: str) -> MPGSAM2Config:
    """The configuration of a named preset: ``"large"``, ``"base"``, ``"test"`` or ``"toy"``."""
    try:
        return PRESETS[preset]()
    except KeyError:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)}.") from None
