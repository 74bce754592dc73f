#!/usr/bin/env python3
"""Fails when the CMake build and the Bazel build disagree on what is built.

Bazel (the BUILD.bazel files) is the main build; CMakeLists.txt mirrors it
and names, for each of its targets, the Bazel target it mirrors. This check
configures CMake (which writes build_lists.txt: "<label>|<srcs>|<hdrs>" per
target), asks `bazel query` for every cc_library, cc_test and cc_binary in the
mirrored packages, and reports:
  * a Bazel target with no CMake counterpart (or a CMake label Bazel lacks);
  * a target whose srcs or hdrs differ, file by file.
Exit status 0 when they agree, 1 when not, 2 when a tool fails.

Usage: tools/check_build_lists.py [--manifest build_lists.txt]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

# Packages CMake mirrors (bench/ and third_party/ are Bazel-only).
PACKAGES = ["context", "interceptors", "limits", "w3c", "metrics", "async", "proto",
            "ledger", "services", "streams", "tests",
            "examples", "integrations", "logging", "drain"]
KINDS = "cc_library|cc_test|cc_binary"


def label_to_path(label):
    """//pkg/sub:file.cc -> pkg/sub/file.cc"""
    pkg, _, name = label.lstrip("/").partition(":")
    return f"{pkg}/{name}" if pkg else name


def bazel_targets(root):
    existing = [p for p in PACKAGES if os.path.isdir(os.path.join(root, p))]
    expr = " + ".join(f"//{p}/..." for p in existing)
    out = subprocess.run(
        ["bazel", "query", f'kind("{KINDS}", {expr})', "--output=xml"],
        cwd=root, check=True, capture_output=True, text=True).stdout
    targets = {}
    for rule in ET.fromstring(out).iter("rule"):
        lists = {"srcs": set(), "hdrs": set()}
        for lst in rule.findall("list"):
            if lst.get("name") in lists:
                lists[lst.get("name")] = {
                    label_to_path(e.get("value")) for e in lst.iter("label")}
        targets[rule.get("name")] = (lists["srcs"], lists["hdrs"])
    return targets


def cmake_targets(manifest):
    targets = {}
    with open(manifest) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            label, srcs, hdrs = line.split("|")
            split = lambda s: {x for x in s.split(",") if x}
            if label in targets:
                print(f"CMake: {label} is mirrored twice")
                targets[label] = None
                continue
            targets[label] = (split(srcs), split(hdrs))
    return targets


def configure(root, build_dir):
    subprocess.run(
        ["cmake", "-S", root, "-B", build_dir, "-DREQCTX_BUILD_TESTS=ON",
         "-DREQCTX_BUILD_SERVICES=ON"],
        check=True, capture_output=True, text=True)
    return os.path.join(build_dir, "build_lists.txt")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", help="an existing build_lists.txt")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        with tempfile.TemporaryDirectory(prefix="reqctx-lists-") as tmp:
            manifest = args.manifest or configure(root, tmp)
            cmake = cmake_targets(manifest)
        bazel = bazel_targets(root)
    except subprocess.CalledProcessError as e:
        print(f"check_build_lists: {' '.join(e.cmd)} failed:\n{e.stderr}")
        return 2
    problems = 0
    for label in sorted(set(bazel) | set(cmake)):
        if label not in cmake:
            print(f"{label}: a Bazel target with no CMake counterpart "
                  "(add it to CMakeLists.txt)")
            problems += 1
            continue
        if label not in bazel:
            print(f"{label}: named in CMakeLists.txt, but no such Bazel target")
            problems += 1
            continue
        if cmake[label] is None:
            problems += 1
            continue
        for kind, b, c in zip(("srcs", "hdrs"), bazel[label], cmake[label]):
            for f in sorted(b - c):
                print(f"{label}: {kind} has {f} in Bazel, not in CMakeLists.txt")
                problems += 1
            for f in sorted(c - b):
                print(f"{label}: {kind} has {f} in CMakeLists.txt, not in Bazel")
                problems += 1
    print(f"check_build_lists: {len(bazel)} Bazel targets, {len(cmake)} CMake "
          f"targets, {problems} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
