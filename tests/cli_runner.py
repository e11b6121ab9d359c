"""Run the installed ``stirshaken`` entry point as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

STIRSHAKEN = Path(sys.executable).parent / "stirshaken"


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STIRSHAKEN), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
