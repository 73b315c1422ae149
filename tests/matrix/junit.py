"""Prints `passed failed skipped failed-names` from a pytest junit file:
the counts the matrix adds up (a missing or broken file is one failure)."""
import sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print("0 1 0 pytest-did-not-run")
    sys.exit(0)
p = f = s = 0
bad = []
for case in root.iter("testcase"):
    kinds = {c.tag for c in case}
    if kinds & {"failure", "error"}:
        f += 1
        bad.append(case.get("name"))
    elif "skipped" in kinds:
        s += 1
    else:
        p += 1
print(p, f, s, ",".join(bad))
