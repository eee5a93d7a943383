"""FitNets hint loss (Romero, Ballas, Kahou, Chassang, Gatta, Bengio, "FitNets: Hints for Thin Deep Nets", ICLR 2015).

    L_hint = mean( (r(F_s) − F_t)² )   over batch, channels and positions (`F.mse_loss`, reduction "mean")

`r` is a learned regressor ("connector") that maps the student's hint feature map to the teacher's
shape. Its shape rule follows the RepDistiller yardstick (`ConvReg`: conv + BN + ReLU):
- student map 2× larger than the teacher's: 3×3 conv, stride 2, padding 1;
- student map 2× smaller: 4×4 transposed conv, stride 2, padding 1;
- otherwise (student ≥ teacher): a conv with kernel (1 + s_H − t_H, 1 + s_W − t_W), no padding.
A student map smaller than the teacher's by any other factor has no rule and is a user error.
The ReLU matches the teacher's post-ReLU stage outputs; `use_relu=False` drops it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.errors import KdpipeError


class ConvReg(nn.Module):
    """Connector (B, C_s, H_s, W_s) -> (B, C_t, H_t, W_t): conv/transposed conv + BN (+ ReLU)."""

    def __init__(self, s_shape: tuple[int, ...], t_shape: tuple[int, ...], use_relu: bool = True) -> None:
        super().__init__()
        (_, cs, hs, ws), (_, ct, ht, wt) = s_shape, t_shape
        if hs == 2 * ht and ws == 2 * wt:
            self.conv: nn.Module = nn.Conv2d(cs, ct, kernel_size=3, stride=2, padding=1)
        elif 2 * hs == ht and 2 * ws == wt:
            self.conv = nn.ConvTranspose2d(cs, ct, kernel_size=4, stride=2, padding=1)
        elif hs >= ht and ws >= wt:
            self.conv = nn.Conv2d(cs, ct, kernel_size=(1 + hs - ht, 1 + ws - wt))
        else:
            raise KdpipeError(f"fitnet: student hint map {hs}x{ws} is smaller than the teacher's {ht}x{wt} by other than 2x; "
                              "choose another fitnet.hint stage")
        self.bn = nn.BatchNorm2d(ct)
        self.use_relu = use_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.use_relu else x


def hint_loss(f_s_mapped: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """mean((r(F_s) − F_t)²) over all elements; the teacher map is a fixed target (detached), float32."""
    return F.mse_loss(f_s_mapped.float(), f_t.detach().float())
