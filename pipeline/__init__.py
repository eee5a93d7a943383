"""kdpipe: knowledge distillation to a deployable student (library part, no CLI)."""

from __future__ import annotations

__version__ = "0.1.0"
