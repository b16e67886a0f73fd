"""The denoising UNets: diffusers' ``UNet2DModel`` at sizes a 2-core CPU can train, with larger GPU presets."""

from __future__ import annotations

from diffusers import UNet2DModel

from cellcascade.errors import CellcascadeError

# Named sizes. "cpu" trains the shipped default in minutes on 2 cores; "gpu" is the documented larger preset.
PRESETS = {
    "tiny": {"block_out_channels": (8, 16), "attention_levels": (), "layers_per_block": 1},
    "cpu": {"block_out_channels": (32, 64, 64), "attention_levels": (2,), "layers_per_block": 1},
    "gpu": {"block_out_channels": (64, 128, 256, 256), "attention_levels": (2, 3), "layers_per_block": 2},
}


def check_preset_size(preset: str, size: int, what: str) -> None:
    """Raise CellcascadeError unless `preset` exists and `size` (the `what`, e.g. "crop size") suits its depth."""
    if preset not in PRESETS:
        raise CellcascadeError(f"preset must be one of {sorted(PRESETS)}, not {preset!r}")
    factor = 2 ** (len(PRESETS[preset]["block_out_channels"]) - 1)
    if size < 8 or size % factor:
        raise CellcascadeError(f"{what} must be at least 8 and divisible by {factor}, not {size}")


def build_unet(
    sample_size: int,
    in_channels: int = 1,
    out_channels: int = 1,
    preset: str = "cpu",
) -> UNet2DModel:
    """A noise-predicting UNet for `sample_size`² inputs of `in_channels` (noisy image + any condition channels).

    Parameters
    ----------
    sample_size : int
        Side of the square inputs; must be divisible by 2**(levels - 1).
    in_channels, out_channels : int
        Channels in and out (out = the predicted noise).
    preset : {"tiny", "cpu", "gpu"}
        Width and depth; see ``PRESETS``.

    Examples
    --------
    >>> unet = build_unet(32, preset="tiny")
    >>> unet.config.sample_size
    32
    """
    spec = PRESETS[preset]
    channels = tuple(spec["block_out_channels"])
    down = tuple("AttnDownBlock2D" if i in spec["attention_levels"] else "DownBlock2D" for i in range(len(channels)))
    up = tuple("AttnUpBlock2D" if b == "AttnDownBlock2D" else "UpBlock2D" for b in reversed(down))
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels,
        layers_per_block=spec["layers_per_block"],
        block_out_channels=channels,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=min(8, channels[0]),
        attention_head_dim=8,
    )
