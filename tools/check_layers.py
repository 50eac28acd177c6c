#!/usr/bin/env python3
"""Checks that includes point one way: api -> scheduler -> cache, model -> kernels -> core.

Every #include "folder/..." in a source file of a layer must name that layer or one below it;
bench/ may include everything but api/. Prints each violation and exits 1 if there is one.
    python3 tools/check_layers.py
"""
import pathlib
import re
import subprocess
import sys

ALLOWED = {
    "core": {"core"},
    "kernels": {"kernels", "core"},
    "model": {"model", "kernels", "core"},
    "cache": {"cache", "core"},
    "scheduler": {"scheduler", "cache", "model", "kernels", "core"},
    "api": {"api", "scheduler", "cache", "model", "kernels", "core"},
    "bench": {"bench", "scheduler", "cache", "model", "kernels", "core"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/')


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    files = subprocess.check_output(["git", "ls-files", "*.h", "*.cpp", "*.cu", "*.cuh"],
                                    cwd=root, text=True).split()
    bad = 0
    for name in files:
        layer = name.split("/")[0]
        if layer not in ALLOWED:
            continue
        for number, line in enumerate((root / name).read_text().splitlines(), 1):
            m = INCLUDE.match(line)
            if m and m.group(1) in ALLOWED and m.group(1) not in ALLOWED[layer]:
                print(f"{name}:{number}: {layer}/ includes {m.group(1)}/: {line.strip()}")
                bad += 1
    if bad:
        print(f"check_layers: {bad} include(s) point upwards (see DEVELOPERS.md, Layout)")
        return 1
    print(f"check_layers: {len(files)} files, every include points down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
