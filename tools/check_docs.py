#!/usr/bin/env python3
"""Fails when README.md or docs/*.md shows code CI does not compile, or a
link that leads nowhere.

1. Examples. A fenced code block right after a line
       <!-- example: path/relative/to/the/repository -->
   must be exactly that file's contents. The files are built and run by CI
   (Bazel tests under examples/readme, the consumers in tools/ci_cmake.sh),
   so the docs show only code that compiles. The README must hold at least
   one (its tour).
2. Links. Every relative Markdown link `[text](target)` must name a file or
   directory that exists, and its `#anchor` (also `(#anchor)` alone) a
   heading of that Markdown file, spelled as GitHub spells heading anchors
   (lower case; punctuation other than `-` and `_` removed; spaces become
   `-`; a repeated heading gets `-1`, `-2`...). Links with a scheme
   (http:, https:, mailto:) are not checked: CI is offline.

Exit status 0 when everything matches, 1 otherwise (each problem printed
with its file and line).
"""
import difflib
import glob
import os
import re
import sys

MARKER = re.compile(r"^<!-- example: (\S+) -->$")
FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) or [text](target "title"); images too. Not inside `code`.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def markdown_files(root):
    files = [os.path.join(root, "README.md")]
    files += sorted(glob.glob(os.path.join(root, "docs", "*.md")))
    return files


def prose_lines(lines):
    """Yields (index, line) for lines outside fenced code blocks."""
    in_fence = False
    for i, line in enumerate(lines):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            yield i, line


def slug(heading):
    text = INLINE_CODE.sub(lambda m: m.group(0)[1:-1], heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(lines):
    seen = {}
    out = set()
    for _, line in prose_lines(lines):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def check_examples(root, rel, lines):
    checked = problems = 0
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        i += 1
        if not m:
            continue
        path = m.group(1)
        if i >= len(lines) or not lines[i].startswith("```"):
            print(f"{rel}:{i}: example marker for {path} not followed by a code block")
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
            print(f"{rel}:{start}: {path}: {e.strerror}")
            problems += 1
            continue
        if block != want:
            problems += 1
            print(f"{rel}:{start}: the example differs from {path}:")
            sys.stdout.writelines(difflib.unified_diff(
                want.splitlines(True), block.splitlines(True), path, rel))
    return checked, problems


def check_links(root, path, rel, lines, anchor_cache):
    checked = problems = 0
    for i, line in prose_lines(lines):
        for m in LINK.finditer(INLINE_CODE.sub("``", line)):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue
            checked += 1
            file_part, _, anchor = target.partition("#")
            dest = (os.path.normpath(os.path.join(os.path.dirname(path), file_part))
                    if file_part else path)
            if not os.path.exists(dest):
                print(f"{rel}:{i + 1}: link to {target}: no such file")
                problems += 1
                continue
            if not anchor:
                continue
            if not dest.endswith(".md") or os.path.isdir(dest):
                print(f"{rel}:{i + 1}: link to {target}: an anchor into a file that is not Markdown")
                problems += 1
                continue
            if dest not in anchor_cache:
                with open(dest) as f:
                    anchor_cache[dest] = anchors(f.read().split("\n"))
            if anchor not in anchor_cache[dest]:
                print(f"{rel}:{i + 1}: link to {target}: no heading with that anchor")
                problems += 1
    return checked, problems


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    examples = links = problems = 0
    anchor_cache = {}
    for path in markdown_files(root):
        rel = os.path.relpath(path, root)
        with open(path) as f:
            lines = f.read().split("\n")
        c, p = check_examples(root, rel, lines)
        if rel == "README.md" and c == 0:
            print("README.md: no compiled example")
            p += 1
        examples += c
        problems += p
        c, p = check_links(root, path, rel, lines, anchor_cache)
        links += c
        problems += p
    print(f"check_docs: {len(markdown_files(root))} files, {examples} examples, "
          f"{links} relative links, {problems} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
