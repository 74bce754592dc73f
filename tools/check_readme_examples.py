#!/usr/bin/env python3
"""Fails when a README example differs from the file CI compiles.

In README.md, a fenced code block right after a line
    <!-- example: path/relative/to/the/repository -->
must be exactly that file's contents. The files are built and run by CI
(Bazel tests under examples/readme, the consumers in tools/ci_cmake.sh), so
the README shows only code that compiles. Exit status 0 when all match,
1 otherwise (each difference is printed).
"""
import difflib
import os
import re
import sys

MARKER = re.compile(r"^<!-- example: (\S+) -->$")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md")) as f:
        lines = f.read().split("\n")
    checked = problems = 0
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        i += 1
        if not m:
            continue
        path = m.group(1)
        if i >= len(lines) or not lines[i].startswith("```"):
            print(f"README.md:{i}: example marker for {path} not followed by a code block")
            problems += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and lines[end] != "```":
            end += 1
        block = "\n".join(lines[start:end]) + "\n"
        i = end + 1
        checked += 1
        try:
            with open(os.path.join(root, path)) as f:
                want = f.read()
        except OSError as e:
            print(f"README.md:{start}: {path}: {e.strerror}")
            problems += 1
            continue
        if block != want:
            problems += 1
            print(f"README.md:{start}: the example differs from {path}:")
            sys.stdout.writelines(difflib.unified_diff(
                want.splitlines(True), block.splitlines(True), path, "README.md"))
    print(f"check_readme_examples: {checked} examples, {problems} difference(s)")
    return 1 if problems or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
