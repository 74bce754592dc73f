#!/usr/bin/python3
"""Counts passed and failed test cases from Bazel's test.xml files.

Usage: count_test_cases.py TESTLOGS_DIR LABEL...
Prints "PASSED FAILED" for the given test targets. A target with no test.xml
(it did not build or did not run), or whose XML holds no test case, counts as
one failed case, so a broken target can never look green.
"""
import os
import sys
import xml.etree.ElementTree as ET


def count(testlogs, label):
    pkg, _, name = label.lstrip("/").partition(":")
    path = os.path.join(testlogs, pkg, name, "test.xml")
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"count_test_cases: {label}: no usable test.xml ({e})", file=sys.stderr)
        return 0, 1
    passed = failed = 0
    for case in root.iter("testcase"):
        if case.get("status") == "notrun" or case.get("result") == "suppressed":
            continue
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        else:
            passed += 1
    # Bazel's own XML for a crashed binary has a testsuite with errors/failures
    # but maybe no failing testcase: trust the suite's counters too.
    suite_failures = sum(int(s.get("failures", 0)) + int(s.get("errors", 0))
                         for s in root.iter("testsuite"))
    if suite_failures > failed:
        failed = suite_failures
    if passed + failed == 0:
        print(f"count_test_cases: {label}: ran no test case", file=sys.stderr)
        failed = 1
    return passed, failed


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    testlogs = sys.argv[1]
    total_passed = total_failed = 0
    for label in sys.argv[2:]:
        p, f = count(testlogs, label)
        total_passed += p
        total_failed += f
    print(total_passed, total_failed)


if __name__ == "__main__":
    main()
