"""Copy the transport module out of the wheel maturin built (the only file of it we ship).

python scripts/unpack_native.py WHEEL_DIR DESTINATION
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path


def unpack(wheel_dir: Path, destination: Path) -> None:
    (wheel,) = wheel_dir.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith("/_native.abi3.so")]
        destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = destination.with_suffix(".tmp")
        temporary.write_bytes(archive.read(member))
        temporary.replace(destination)  # a running process keeps the module it loaded


if __name__ == "__main__":
    unpack(Path(sys.argv[1]), Path(sys.argv[2]))
