"""The multiview denoiser of stage 2 (the paper's SyncDreamer): K side-view silhouettes of one cell, denoised jointly.

One diffusers ``UNet2DModel`` is applied to the K views of a cell as a batch of K images. Each view gets

* two input channels: its own noisy silhouette and the condition, the top view (the cell's 2D mask, what a 2D
  annotation shows), the same for all K views;
* optionally (``view_chords=True``) a third, geometric one: the top view's **chord profile seen from that view** --
  column j holds the length of the line through the 2D mask along the view's ray direction, -1 where the line
  misses the mask (:meth:`MultiviewUNet.chord_profiles`). A side view's column j can only hold cell where that line
  meets the mask, so the channel tells each view its exact horizontal extent and the cell's thickness along its
  rays; without it the network has to learn to project the top view per view from the camera embedding alone.
  Measured on shape from one view (3 seeds), it helps with x0 prediction (mean IoU 0.801 with it, 0.790
  without) but not with noise prediction (0.779 vs 0.782); training uses it by default, the model class keeps
  ``False`` as its default so that model folders saved before the option load unchanged;
* a learned embedding of its camera angles (an MLP of sines and cosines of azimuth and elevation), added to the time
  embedding through ``UNet2DModel``'s ``class_embed_type="identity"``;
* cross-view attention: the UNet's self-attention layers (the low-resolution levels of the preset and the middle
  block) attend over the tokens of **all K views of the cell at once**, so the views agree with each other (one
  cell, one shape). :class:`CrossViewAttnProcessor` is the only layer written by hand here; it reuses the weights
  (q, k, v, output projection, group norm) of diffusers' ``Attention`` modules and only changes which tokens see
  each other. Everything else is diffusers.

Tensor layout: :meth:`MultiviewUNet.forward` takes ``(B, K + 1, S, S)`` -- the K noisy side views, then the top
view -- and returns the K predictions ``(B, K, S, S)``. That is the layout of the shared training loop
(:func:`cellcascade.training.loop.train_denoiser`: images (N, K, S, S), conditions (N, 1, S, S)), which is reused
unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import ModelMixin, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

from cellcascade.errors import CellcascadeError
from cellcascade.reconstruction.cameras import Views, ring_views

# Named sizes, as for the 2D UNet (models/unet.py). The middle block always has (cross-view) attention.
# Parameters at K = 8, S = 32: tiny 0.04 M, cpu 1.13 M, gpu 26.7 M.
PRESETS = {
    "tiny": {"block_out_channels": (8, 16), "attention_levels": (), "layers_per_block": 1},
    "cpu": {"block_out_channels": (32, 64, 64), "attention_levels": (2,), "layers_per_block": 1},
    "gpu": {"block_out_channels": (64, 128, 256, 256), "attention_levels": (2, 3), "layers_per_block": 2},
}
# Harmonics of the azimuth in the view embedding's input (orthographic views 180 degrees apart are mirror images,
# so the second harmonic, of period 180 degrees, is the informative one).
AZIMUTH_HARMONICS = (1, 2)
# Fine samples per top-view pixel side when measuring chord profiles (``view_chords``).
CHORD_SUPERSAMPLING = 4


class CrossViewAttnProcessor:
    """Self-attention over the tokens of all K views of each sample (hand-written; a diffusers attention processor).

    The wrapped ``Attention`` sees a batch of ``B * K`` feature maps (views of one sample contiguous). Group norm,
    q/k/v and the output projection act per view, as in diffusers' ``AttnProcessor2_0``; the attention itself runs
    on ``(B, K * H * W)`` tokens, so every position of every view attends to every position of all K views.

    Parameters
    ----------
    num_views : int
        K, the views per sample.
    """

    def __init__(self, num_views: int):
        self.num_views = int(num_views)

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or attn.spatial_norm is not None:
            raise CellcascadeError("cross-view attention is self-attention only (no encoder states, mask, spatial norm)")
        residual = hidden_states
        spatial = hidden_states.ndim == 4
        if spatial:
            batch_views, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_views, channels, height * width).transpose(1, 2)
        batch_views, tokens, _ = hidden_states.shape
        views = self.num_views
        if batch_views % views:
            raise CellcascadeError(f"cross-view attention got {batch_views} feature maps: not a multiple of {views} views")
        batch = batch_views // views
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        inner = key.shape[-1]
        head_dim = inner // attn.heads

        def joint(x: torch.Tensor) -> torch.Tensor:  # (B*K, T, inner) -> (B, heads, K*T, head_dim)
            return x.reshape(batch, views * tokens, attn.heads, head_dim).transpose(1, 2)

        query, key, value = joint(query), joint(key), joint(value)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch_views, tokens, inner).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if spatial:
            out = out.transpose(-1, -2).reshape(batch_views, channels, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class MultiviewUNet(ModelMixin, ConfigMixin):
    """Noise predictor for the K side-view silhouettes of a cell, given its top view (see the module notes).

    Parameters
    ----------
    sample_size : int
        Silhouette side S (divisible by ``2 ** (levels - 1)``).
    elevation, azimuth : sequence of float, length K
        Degrees: the K side views, as in :class:`~cellcascade.reconstruction.Views` (the top view is the condition,
        not one of them).
    block_out_channels : sequence of int
        Channels per UNet level.
    attention_levels : sequence of int
        Levels with (cross-view) attention in their down and up blocks; the middle block always has it.
    layers_per_block : int
    attention_head_dim : int
    cross_view_attention : bool
        False: every attention layer sees one view only (an ablation; the views are then denoised independently).
    view_chords : bool
        Give every view the top view's chord profile seen from it as a third input channel (module notes).

    Examples
    --------
    >>> unet = MultiviewUNet(sample_size=16, elevation=(0.0, 0.0), azimuth=(0.0, 90.0), block_out_channels=(8, 16),
    ...                      attention_levels=())
    >>> unet(torch.zeros(3, 3, 16, 16), 10).sample.shape
    torch.Size([3, 2, 16, 16])
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        elevation: tuple[float, ...] = (0.0,) * 8,
        azimuth: tuple[float, ...] = tuple(22.5 * k for k in range(8)),
        block_out_channels: tuple[int, ...] = (32, 64, 64),
        attention_levels: tuple[int, ...] = (2,),
        layers_per_block: int = 1,
        attention_head_dim: int = 8,
        cross_view_attention: bool = True,
        view_chords: bool = False,
    ):
        super().__init__()
        views = Views(tuple(elevation), tuple(azimuth))  # validates the angles
        channels = tuple(int(c) for c in block_out_channels)
        if not channels or any(c % attention_head_dim or c < attention_head_dim for c in channels):
            raise CellcascadeError(
                f"block_out_channels must be multiples of attention_head_dim={attention_head_dim}, got {channels}"
            )
        if any(not 0 <= int(level) < len(channels) for level in attention_levels):
            raise CellcascadeError(f"attention_levels must lie in 0..{len(channels) - 1}, got {tuple(attention_levels)}")
        factor = 2 ** (len(channels) - 1)
        if sample_size < 8 or sample_size % factor:
            raise CellcascadeError(f"silhouette size must be at least 8 and divisible by {factor}, not {sample_size}")
        down = tuple("AttnDownBlock2D" if i in attention_levels else "DownBlock2D" for i in range(len(channels)))
        up = tuple("AttnUpBlock2D" if b == "AttnDownBlock2D" else "UpBlock2D" for b in reversed(down))
        self.unet = UNet2DModel(
            sample_size=sample_size,
            in_channels=3 if view_chords else 2,  # the view's noisy silhouette, the top view (, its chord profile)
            out_channels=1,
            layers_per_block=layers_per_block,
            block_out_channels=channels,
            down_block_types=down,
            up_block_types=up,
            norm_num_groups=min(8, channels[0]),
            attention_head_dim=attention_head_dim,
            class_embed_type="identity",  # the view embedding below is added to the time embedding
        )
        time_dim = channels[0] * 4
        self.view_embedding = nn.Sequential(
            nn.Linear(2 * len(AZIMUTH_HARMONICS) + 2, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        self.num_views = len(views)
        if view_chords:
            self.register_buffer("chord_columns", _chord_columns(views, int(sample_size)), persistent=False)
        if cross_view_attention:
            for module in self.unet.modules():
                if isinstance(module, Attention):
                    module.set_processor(CrossViewAttnProcessor(self.num_views))

    @property
    def views(self) -> Views:
        """The K side views this model generates."""
        return Views(tuple(self.config.elevation), tuple(self.config.azimuth))

    def view_features(self) -> torch.Tensor:
        """float32 (K, F): sines and cosines of each view's azimuth harmonics and elevation (the embedding's input)."""
        azimuth = torch.tensor([math.radians(a) for a in self.config.azimuth], dtype=torch.float32)
        elevation = torch.tensor([math.radians(e) for e in self.config.elevation], dtype=torch.float32)
        parts = [f(m * azimuth) for m in AZIMUTH_HARMONICS for f in (torch.sin, torch.cos)]
        return torch.stack(parts + [torch.sin(elevation), torch.cos(elevation)], dim=1)

    def chord_profiles(self, top: torch.Tensor) -> torch.Tensor:
        """The top view's chord profile seen from each of the K views.

        Parameters
        ----------
        top : Tensor float (B, 1, S, S)
            Top views in [-1, 1] (cell where > 0).

        Returns
        -------
        Tensor float (B, K, S, S)
            Row-constant images: column j of view k is ``L - 1``, with L in [0, 2] the length (frame units, the frame
            being [-1, 1]) of the mask's intersection with the line of points that project onto column j of view k
            -- so -1 where the line misses the mask.
        """
        batch, _, size, _ = top.shape
        fine = F.interpolate(top.float(), scale_factor=CHORD_SUPERSAMPLING, mode="bilinear", align_corners=False)
        inside = (fine > 0).float().reshape(batch, -1, 1).expand(-1, -1, self.num_views).reshape(batch, -1)
        counts = torch.zeros(batch, self.num_views * size + 1, device=top.device)  # + 1: samples outside the frame
        counts.scatter_add_(1, self.chord_columns.reshape(1, -1).expand(batch, -1), inside)
        # Each fine sample covers (2 / (n S))^2 of the frame, a column is 2 / S wide: length = count * 2 / (n^2 S).
        length = counts[:, :-1] * (2.0 / (CHORD_SUPERSAMPLING**2 * size))
        profile = length.reshape(batch, self.num_views, 1, size) - 1.0
        return profile.expand(batch, self.num_views, size, size).to(top.dtype)

    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True):
        """Predict the noise of the K side views.

        Parameters
        ----------
        sample : Tensor float (B, K + 1, S, S)
            The K noisy side views, then the top view (condition) in [-1, 1].
        timestep : int or Tensor, scalar or (B,)

        Returns
        -------
        UNet2DOutput whose ``sample`` is (B, K, S, S) (or a 1-tuple if not `return_dict`).
        """
        views = self.num_views
        if sample.ndim != 4 or sample.shape[1] != views + 1:
            raise CellcascadeError(
                f"the multiview UNet takes (B, {views + 1}, S, S) inputs (K noisy views + top view), got {tuple(sample.shape)}"
            )
        batch, _, height, width = sample.shape
        noisy = sample[:, :views].reshape(batch * views, 1, height, width)
        condition = sample[:, views:].repeat_interleave(views, dim=0)
        timestep = torch.as_tensor(timestep, device=sample.device).reshape(-1)
        if timestep.numel() == 1:
            timestep = timestep.expand(batch)
        if timestep.numel() != batch:
            raise CellcascadeError(f"need one timestep or one per sample ({batch}), got {timestep.numel()}")
        embedding = self.view_embedding(self.view_features().to(device=sample.device, dtype=sample.dtype))
        inputs = [noisy, condition]
        if self.config.view_chords:
            inputs.append(self.chord_profiles(sample[:, views:]).reshape(batch * views, 1, height, width))
        out = self.unet(torch.cat(inputs, dim=1), timestep.repeat_interleave(views),
                        class_labels=embedding.repeat(batch, 1)).sample
        out = out.reshape(batch, views, height, width)
        return UNet2DOutput(sample=out) if return_dict else (out,)


def _chord_columns(views: Views, size: int) -> torch.Tensor:
    """int64 (n^2 S^2, K): the column ``k S + j`` of view k that each fine top-view sample projects onto, or ``K S``.

    A fine sample at frame position (y, x) projects onto a view's horizontal axis ``right = (cos az, -sin az)`` in
    (y, x) (:mod:`cellcascade.reconstruction.cameras`) at ``a = y cos az - x sin az``, i.e. onto column
    ``floor((a + 1) S / 2)``; samples that land outside the frame get ``K S`` (no column).
    """
    fine = CHORD_SUPERSAMPLING * size
    centres = (2 * torch.arange(fine, dtype=torch.float64) + 1) / fine - 1
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    azimuth = torch.tensor([math.radians(a) for a in views.azimuth], dtype=torch.float64)
    a = y.reshape(-1, 1) * torch.cos(azimuth) - x.reshape(-1, 1) * torch.sin(azimuth)  # (n^2 S^2, K)
    column = torch.floor((a + 1) * size / 2).long()
    index = torch.arange(len(views)) * size + column
    return torch.where((column >= 0) & (column < size), index, len(views) * size)


def check_multiview_preset(preset: str, size: int) -> None:
    """Raise CellcascadeError unless `preset` exists and the silhouette `size` suits its depth."""
    if preset not in PRESETS:
        raise CellcascadeError(f"preset must be one of {sorted(PRESETS)}, not {preset!r}")
    factor = 2 ** (len(PRESETS[preset]["block_out_channels"]) - 1)
    if int(size) < 8 or int(size) % factor:
        raise CellcascadeError(f"silhouette size must be at least 8 and divisible by {factor}, not {size}")


def build_multiview_unet(sample_size: int = 32, views: Views | None = None, preset: str = "cpu",
                         cross_view_attention: bool = True, view_chords: bool = False) -> MultiviewUNet:
    """A :class:`MultiviewUNet` of a named size for the side views `views` (default: 8 side views over 180°).

    Examples
    --------
    >>> unet = build_multiview_unet(16, ring_views(4, top=False), preset="tiny")
    >>> unet.num_views, unet.config.sample_size
    (4, 16)
    """
    check_multiview_preset(preset, sample_size)
    views = ring_views(8, top=False) if views is None else views
    if not isinstance(views, Views):
        raise CellcascadeError("views must be a cellcascade.reconstruction.Views")
    if any(abs(e) == 90.0 for e in views.elevation):
        raise CellcascadeError("the generated views must not include the top view: it is the condition")
    spec = PRESETS[preset]
    return MultiviewUNet(
        sample_size=int(sample_size),
        elevation=views.elevation,
        azimuth=views.azimuth,
        block_out_channels=spec["block_out_channels"],
        attention_levels=spec["attention_levels"],
        layers_per_block=spec["layers_per_block"],
        cross_view_attention=cross_view_attention,
        view_chords=view_chords,
    )
