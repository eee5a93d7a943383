"""Data sources -> prepared uint8 images (memory-mappable files) -> one loader factory.

- `params`: the `data` params section (`DataParams` and one block per source).
- `sources`: the source registry (`SOURCES`), each with `load` and `raw_paths`.
- `imagefolder`: folders of class folders, decoded once with torchvision.io (bad images handled).
- `build`: validation held out of the training split by seed, subsets, mean/std; `prepare`, `prepare_to`.
- `cache`: the prepared-data directory (`{split}.u8`, `{split}.labels`, `meta.json`): `load_prepared`.
- `augment`: resizing and the on-device training augmentation (pad-crop, random-resized-crop, flip).
- `loaders`: `make_loader` -> `DeviceLoader` (split resident on the device) or `StreamLoader`
  (memmap + workers).
- `scan`: `kdpipe init-data` (class list, counts, sizes, a profile); `bench.throughput`: the loader benchmark.

Names are imported lazily so `pipeline.params` can import `pipeline.data.params` without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataParams": "params",
    "AugmentParams": "params",
    "ImageFolderParams": "params",
    "SyntheticParams": "params",
    "TorchvisionParams": "params",
    "SOURCES": "sources",
    "raw_paths": "sources",
    "prepare": "build",
    "prepare_to": "build",
    "summary": "build",
    "load_prepared": "cache",
    "augments_data": "augment",
    "DeviceLoader": "loaders",
    "StreamLoader": "loaders",
    "make_loader": "loaders",
    "scan_folder": "scan",
    "profile_text": "scan",
    "throughput": "bench",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"pipeline.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'pipeline.data' has no attribute {name!r}")
