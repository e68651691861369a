"""The example plugin distributions beside the tests, imported from their files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_example(folder: Path, module_name: str) -> ModuleType:
    """Import an example plugin's module from its file, without installing it in this process."""
    spec = importlib.util.spec_from_file_location(module_name, folder / f"{module_name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module
