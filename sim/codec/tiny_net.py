"""The shipped ``tiny`` autoencoder: image (3 × H × W, [-1, 1]) ↔ latent (4 × H/8 × W/8).

Designed for a 2-core CPU: all heavy convolutions run at 1/8 and 1/4 resolution, resolution
changes are pixel (un)shuffles, and the full-resolution path is a single thin convolution.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TinyAutoencoder"]


class ResBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (channels unchanged)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(self.act(x))))


class Encoder(nn.Module):
    def __init__(self, latent_channels: int, widths: tuple[int, int, int]):
        super().__init__()
        w2, w4, w8 = widths
        self.net = nn.Sequential(
            nn.PixelUnshuffle(2), nn.Conv2d(12, w2, 3, padding=1), nn.SiLU(),
            nn.PixelUnshuffle(2), nn.Conv2d(4 * w2, w4, 3, padding=1), ResBlock(w4),
            nn.PixelUnshuffle(2), nn.Conv2d(4 * w4, w8, 3, padding=1), ResBlock(w8), ResBlock(w8),
            nn.SiLU(), nn.Conv2d(w8, latent_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, latent_channels: int, widths: tuple[int, int, int]):
        super().__init__()
        w2, w4, w8 = widths
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels, w8, 3, padding=1), ResBlock(w8), ResBlock(w8), ResBlock(w8),
            nn.SiLU(), nn.Conv2d(w8, 4 * w4, 3, padding=1), nn.PixelShuffle(2), ResBlock(w4), ResBlock(w4),
            nn.SiLU(), nn.Conv2d(w4, 4 * w2, 3, padding=1), nn.PixelShuffle(2), ResBlock(w2),
            nn.SiLU(), nn.Conv2d(w2, 12, 3, padding=1), nn.PixelShuffle(2),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class TinyAutoencoder(nn.Module):
    """Encoder/decoder pair with Stable Diffusion's latent geometry (4 channels, stride 8).

    Parameters
    ----------
    latent_channels : int
        Channels of the latent (4, as in SD).
    widths : tuple of int
        Feature widths at 1/2, 1/4 and 1/8 resolution.
    """

    def __init__(self, latent_channels: int = 4, widths: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        self.config = {"latent_channels": latent_channels, "widths": list(widths)}
        self.encoder = Encoder(latent_channels, tuple(widths))
        self.decoder = Decoder(latent_channels, tuple(widths))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → (B, 4, H/8, W/8)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 4, H/8, W/8) → (B, 3, H, W), not clamped."""
        return self.decoder(z)
