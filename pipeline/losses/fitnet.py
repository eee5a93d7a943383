"""FitNets hint loss (Romero, Ballas, Kahou, Chassang, Gatta, Bengio, "FitNets: Hints for Thin Deep Nets",
ICLR 2015).

    L_hint = mean( (r(F_s) − F_t)² )   over batch, channels and positions (`F.mse_loss`, reduction "mean")

`r` is a learned regressor ("connector") that maps the student's hint feature map to the teacher's
shape. Its shape rule follows the RepDistiller yardstick (`ConvReg`: conv + BN + ReLU):
- student map 2× larger than the teacher's: 3×3 conv, stride 2, padding 1;
- student map 2× smaller: 4×4 transposed conv, stride 2, padding 1;
- student map equal to or less than 2× larger: a conv with kernel (1 + s_H − t_H, 1 + s_W − t_W), no padding.
Any other ratio (our rule, for pairs across architectures): a 1×1 conv to the teacher's channels with the
map resized to the teacher's H×W, by adaptive average pooling before the conv when the student map is
larger in both sides, else by bilinear interpolation after it (both linear, so the order only saves work).
The ReLU matches the teacher's post-ReLU stage outputs; `use_relu=False` drops it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import KdpipeError


class ConvReg(nn.Module):
    """Connector (B, C_s, H_s, W_s) -> (B, C_t, H_t, W_t): conv/transposed conv + BN (+ ReLU)."""

    def __init__(self, s_shape: tuple[int, ...], t_shape: tuple[int, ...], use_relu: bool = True) -> None:
        super().__init__()
        (_, cs, hs, ws), (_, ct, ht, wt) = s_shape, t_shape
        if min(hs, ws, ht, wt) < 1:
            raise KdpipeError(
                f"fitnet: empty hint map (student {hs}x{ws}, teacher {ht}x{wt}); "
                "choose another fitnet.hint stage"
            )
        self.resize: str | None = None  # None, "pool" (before the conv) or "interpolate" (after it)
        self.size = (ht, wt)
        if hs == 2 * ht and ws == 2 * wt:
            self.conv: nn.Module = nn.Conv2d(cs, ct, kernel_size=3, stride=2, padding=1)
        elif 2 * hs == ht and 2 * ws == wt:
            self.conv = nn.ConvTranspose2d(cs, ct, kernel_size=4, stride=2, padding=1)
        elif ht <= hs < 2 * ht and wt <= ws < 2 * wt:
            self.conv = nn.Conv2d(cs, ct, kernel_size=(1 + hs - ht, 1 + ws - wt))
        else:
            self.conv = nn.Conv2d(cs, ct, kernel_size=1)
            self.resize = "pool" if hs >= ht and ws >= wt else "interpolate"
        self.bn = nn.BatchNorm2d(ct)
        self.use_relu = use_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize == "pool":
            x = F.adaptive_avg_pool2d(x, self.size)
        x = self.conv(x)
        if self.resize == "interpolate":
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        x = self.bn(x)
        return F.relu(x) if self.use_relu else x


def hint_loss(f_s_mapped: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """mean((r(F_s) − F_t)²) over all elements; the teacher map is a fixed target (detached), float32."""
    return F.mse_loss(f_s_mapped.float(), f_t.detach().float())
