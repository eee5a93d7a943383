"""The one training loop: learns, resumes exactly, stops on NaN with a clear message."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import KdpipeError
from pipeline.job_inputs import make_loader
from pipeline.methods import REGISTRY, Context, build_method
from pipeline.models import create_model
from pipeline.params import OptimParams
from pipeline.train import Loaders, fit, lr_factor

OPT = OptimParams(epochs=3, batch_size=64, lr=0.05)


def setup(d, seed=0):
    torch.manual_seed(seed)
    method = build_method("ce", Context(student=create_model("resnet8", 4, 1)), REGISTRY["ce"].Params())
    # the data's pad = 2, no flip
    tr = make_loader(d, "train", batch_size=64, train=True, seed=seed, augment=True)
    va = make_loader(d, "val", batch_size=256)
    return method, Loaders(tr, va)


def test_training_lowers_the_loss(tiny_data):
    method, loaders = setup(tiny_data)
    res = fit(method, loaders, OPT)
    losses = [h["train/loss"] for h in res.history]
    assert losses[-1] < losses[0]
    assert set(res.final) >= {"val/acc", "val/loss", "train/acc", "lr"}


class Interrupt(Exception):
    pass


class StopAfter:
    """A tracker that 'kills' the run when epoch `n` is logged (before its state is saved)."""

    def __init__(self, n):
        self.n = n

    def log_epoch(self, epoch, metrics):
        if epoch == self.n:
            raise Interrupt

    def close(self, final):
        pass


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_data, tmp_path):
    method, loaders = setup(tiny_data)
    ref = fit(method, loaders, OPT)
    ref_state = {k: v.clone() for k, v in method.student.state_dict().items()}

    state = tmp_path / "last.pt"
    method, loaders = setup(tiny_data)
    with pytest.raises(Interrupt):
        fit(method, loaders, OPT, tracker=StopAfter(3), state_path=state, fingerprint="f")
    assert torch.load(state, weights_only=True)["epoch"] == 2
    method, loaders = setup(tiny_data, seed=0)
    res = fit(method, loaders, OPT, state_path=state, fingerprint="f")
    assert res.resumed_from == 2
    for k, v in method.student.state_dict().items():
        torch.testing.assert_close(v, ref_state[k], msg=k)
    assert res.final["val/acc"] == pytest.approx(ref.final["val/acc"])


def test_state_of_other_params_is_not_resumed(tiny_data, tmp_path):
    state = tmp_path / "last.pt"
    method, loaders = setup(tiny_data)
    fit(method, loaders, OptimParams(epochs=1, batch_size=64), state_path=state, fingerprint="old")
    method, loaders = setup(tiny_data)
    assert (
        fit(
            method, loaders, OptimParams(epochs=1, batch_size=64), state_path=state, fingerprint="new"
        ).resumed_from
        == 0
    )


def test_nan_loss_stops_with_a_clear_message(tiny_data):
    method, loaders = setup(tiny_data)
    with pytest.raises(KdpipeError, match=r"loss became nan.*lower the learning rate"):
        fit(method, loaders, OptimParams(epochs=1, batch_size=64, lr=1e30, momentum=0.0, nesterov=False))


def test_schedules():
    cos = OptimParams(epochs=10, schedule="cosine")
    assert (
        lr_factor(cos, 0) == 1.0
        and lr_factor(cos, 5) == pytest.approx(0.5)
        and lr_factor(cos, 10) == pytest.approx(0.0)
    )
    ms = OptimParams(epochs=10, schedule="multistep", milestones=[3, 6], gamma=0.1)
    assert [lr_factor(ms, e) for e in (0, 3, 6)] == pytest.approx([1.0, 0.1, 0.01])
    warm = OptimParams(epochs=10, schedule="constant", warmup_epochs=2)
    assert (
        lr_factor(warm, 0) == pytest.approx(0.1)
        and lr_factor(warm, 1) == pytest.approx(0.55)
        and lr_factor(warm, 2) == 1.0
    )


class Recorder(torch.nn.Module):
    """A CE method that records the progress fit hands it before each step and offers its own validation."""

    def __init__(self) -> None:
        super().__init__()
        self.student, self.seen, self.progress = torch.nn.Linear(4, 2), [], None

    def trainable_parameters(self):
        return list(self.student.parameters())

    def ddp_modules(self):
        return ["student"]

    def forward(self, batch, epoch):
        self.seen.append((epoch, self.progress))
        return {
            "loss": torch.nn.functional.cross_entropy(self.student(batch[0]), batch[1])
        }  # no logits: no train/acc

    def validate(self, loader, amp=None):
        return {"val/batches": float(len(list(loader)))}


def test_fit_sets_fractional_progress_and_uses_the_method_validation():
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(5, 4, generator=g), torch.tensor([0, 1, 0, 1, 0]), torch.arange(5)) for _ in range(3)
    ]
    m = Recorder()
    res = fit(m, Loaders(batches, batches[:2]), OptimParams(epochs=2, batch_size=5, lr=0.01))
    # 3 steps per epoch: progress = e + (i + 1)/3 -> 1/3, 2/3, 1, then 4/3, 5/3, 2; epochs stay integers
    assert m.seen == [
        (0, pytest.approx(1 / 3)),
        (0, pytest.approx(2 / 3)),
        (0, 1.0),
        (1, pytest.approx(4 / 3)),
        (1, pytest.approx(5 / 3)),
        (1, 2.0),
    ]
    assert m.progress is None  # reset after training: evaluation calls see no training progress
    assert res.final["val/batches"] == 2.0 and "val/acc" not in res.final and "train/acc" not in res.final
