"""Feature KD between unlike nets: stage pairing, any-ratio connectors, teacher input adapters."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import KdpipeError
from pipeline.losses.at import stage_pairs
from pipeline.losses.fitnet import ConvReg
from pipeline.methods import REGISTRY, Context, build_method
from pipeline.models import create_model
from pipeline.sources import OnlineTeachers, TeacherInput

CLASSES = 5
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def _ctx(student: str, teacher: str, size: int, teacher_norm=None) -> Context:
    torch.manual_seed(0)
    t = create_model(teacher, CLASSES).eval()
    data_norm = ([0.5] * 3, [0.25] * 3)
    source = OnlineTeachers([t], data_norm=data_norm, teacher_norms=[teacher_norm])
    return Context(
        student=create_model(student, CLASSES),
        source=source,
        num_classes=CLASSES,
        in_channels=3,
        input_size=size,
    )


def _step(name: str, ctx: Context, part: str, size: int, **args) -> nn.Module:
    """One SGD step: the feature loss is finite, positive and sends gradient into the student's stem."""
    method = build_method(name, ctx, REGISTRY[name].Params(**args)).train()
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(2, 3, size, size, generator=g), torch.tensor([0, 1]), torch.arange(2))
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.01)
    out = method(batch, 0)
    stem = next(m for m in ctx.student.modules() if isinstance(m, nn.Conv2d))
    assert math.isfinite(out[part].item()) and out[part].item() > 0
    (grad,) = torch.autograd.grad(out[part], stem.weight, retain_graph=True)
    assert grad.abs().sum() > 0
    before = stem.weight.detach().clone()
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    assert not torch.equal(stem.weight, before)
    return method


@pytest.mark.parametrize("name,part", [("at", "at"), ("fitnet", "hint")])
def test_resnet50_to_mobilenet_v3_small_teacher_at_other_size(name: str, part: str) -> None:
    # student at 64 px, teacher at 96 px with ImageNet normalisation: resnet50 layer2 is 12x12 (96/8),
    # mobilenet_v3_small's second stage 8x8 (64/8): a 1.5x ratio, bridged by pooling to 8x8 (AT) and by a
    # 1x1 connector with bilinear upsampling to 12x12 (FitNet)
    ctx = _ctx("mobilenet_v3_small", "resnet50", 64, teacher_norm=(96, *IMAGENET))
    method = _step(name, ctx, part, 64)
    if name == "fitnet":
        assert method.connector.regs[0].size == (12, 12) and method.connector.regs[0].resize == "interpolate"


@pytest.mark.parametrize("name,part", [("at", "at"), ("fitnet", "hint")])
def test_resnet20_to_mobilenetv2_cifar(name: str, part: str) -> None:
    # resnet20 has 3 stages (32, 16, 8 px), mobilenetv2_cifar 4 (16, 8, 4, 2 px): AT pairs student 1..3 with
    # teacher 0..2; FitNet's hint 1 meets teacher stage 1 − 4 + 3 = 0 (8 px vs 32 px: connector interpolates)
    ctx = _ctx("mobilenetv2_cifar", "resnet20", 32)
    method = _step(name, ctx, part, 32)
    if name == "fitnet":
        assert method.t_hints == {0: 0} and method.connector.regs[0].resize == "interpolate"


def test_default_pairs_align_from_the_end() -> None:
    # 4 student stages, 3 teacher stages: m = 3, pairs (4−3+i, 3−3+i) for i = 0, 1, 2
    assert stage_pairs(4, 3, [], "at.pairs") == [(1, 0), (2, 1), (3, 2)]
    assert stage_pairs(3, 3, [], "at.pairs") == [(0, 0), (1, 1), (2, 2)]
    assert stage_pairs(4, 3, [[-1, -1], [0, 2]], "at.pairs") == [(3, 2), (0, 2)]  # −1 % 4 = 3, −1 % 3 = 2


def test_impossible_pairings_fail_at_construction() -> None:
    ctx = _ctx("mobilenetv2_cifar", "resnet20", 32)  # 4 student stages, 3 teacher stages
    cases = [
        ("at", {"pairs": [[0, 5]]}, r"^at\.pairs: pair \[0, 5\]"),
        ("at", {"pairs": [[0]]}, r"^at\.pairs"),
        ("at", {"layers": [3]}, r"^at\.layers=\[3\] out of range"),
        ("at", {"layers": [1], "pairs": [[1, 1]]}, r"at\.layers and at\.pairs"),
        ("fitnet", {"teacher_hint": 7}, r"^fitnet\.teacher_hint"),
        ("fitnet", {"hint": 0}, r"^fitnet\.hint: teacher stage -1"),  # 0 − 4 + 3 = −1: no aligned stage
        ("fitnet", {"hint": 9}, r"^fitnet\.hint=9"),
    ]
    for name, args, msg in cases:
        with pytest.raises(KdpipeError, match=msg):
            build_method(name, ctx, REGISTRY[name].Params(**args))


@pytest.mark.parametrize(
    "s_hw,t_hw,resize",
    [
        ((12, 12), (8, 8), None),
        ((8, 8), (12, 12), "interpolate"),
        ((28, 28), (7, 7), "pool"),
        ((7, 9), (5, 3), "pool"),
        ((4, 10), (6, 5), "interpolate"),
        ((16, 16), (8, 8), None),
    ],
)
def test_convreg_any_ratio(s_hw: tuple[int, int], t_hw: tuple[int, int], resize: str | None) -> None:
    reg = ConvReg((2, 6, *s_hw), (2, 10, *t_hw))
    assert reg.resize == resize
    out = reg(torch.randn(2, 6, *s_hw))
    assert out.shape == (2, 10, *t_hw)
    out.sum().backward()
    assert reg.conv.weight.grad.abs().sum() > 0


class _Recorder(nn.Module):
    """A one-stage 'teacher' that keeps the input it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.stage_channels = [3]

    def forward_stages(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        self.seen = x
        return [x], x.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[1]


def test_teacher_input_resizes_and_renormalises() -> None:
    # data mean 0.5, std 0.25; teacher mean 0.4, std 0.2: x = 2 is the raw value 2·0.25 + 0.5 = 1.0,
    # which the teacher sees as (1.0 − 0.4)/0.2 = 3.0; a constant image stays constant when resized
    t = _Recorder()
    src = OnlineTeachers([t], data_norm=([0.5] * 3, [0.25] * 3), teacher_norms=[(4, [0.4] * 3, [0.2] * 3)])
    src.logits((torch.full((1, 3, 8, 8), 2.0), None, None))
    assert t.seen.shape == (1, 3, 4, 4)
    torch.testing.assert_close(t.seen, torch.full((1, 3, 4, 4), 3.0))
    # random images: the adapter equals normalise_t(resize(x·std + mean)) in the stated order
    mean, std = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1), torch.tensor([0.5, 0.6, 0.7]).view(1, 3, 1, 1)
    adapter = TeacherInput(([0.1, 0.2, 0.3], [0.5, 0.6, 0.7]), 5, IMAGENET[0], IMAGENET[1])
    x = torch.randn(2, 3, 16, 16)
    raw = F.interpolate(x * std + mean, size=(5, 5), mode="bilinear", antialias=True, align_corners=False)
    want = (raw - torch.tensor(IMAGENET[0]).view(1, 3, 1, 1)) / torch.tensor(IMAGENET[1]).view(1, 3, 1, 1)
    torch.testing.assert_close(adapter(x), want)


def test_matching_teacher_input_is_identity() -> None:
    norm = ([0.5], [0.25])
    src = OnlineTeachers([_Recorder(), _Recorder()], data_norm=norm, teacher_norms=[(None, *norm), None])
    assert all(isinstance(a, nn.Identity) for a in src.inputs)
    assert all(isinstance(a, nn.Identity) for a in OnlineTeachers([_Recorder()]).inputs)  # the old call
    with pytest.raises(KdpipeError, match="teacher normalisation has 3 channels but the data 1"):
        OnlineTeachers([_Recorder()], data_norm=norm, teacher_norms=[(8, *IMAGENET)])
    with pytest.raises(KdpipeError, match="2 teacher\\(s\\) but 1"):
        OnlineTeachers([_Recorder(), _Recorder()], data_norm=norm, teacher_norms=[None])
