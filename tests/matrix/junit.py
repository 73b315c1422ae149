"""Prints `passed failed skipped failed-names` from a pytest junit file:
the counts the matrix adds up (a missing or broken file is one failure).
With --why, prints instead each failed test's name and the last lines of
its report, so that a CI log that keeps only the summary still says why."""
import sys
import xml.etree.ElementTree as ET

WHY_LINES = 25

why = sys.argv[1] == "--why"
try:
    root = ET.parse(sys.argv[-1]).getroot()
except (OSError, ET.ParseError):
    print("    pytest-did-not-run: no junit report" if why else "0 1 0 pytest-did-not-run")
    sys.exit(0)
p = f = s = 0
bad = []
for case in root.iter("testcase"):
    fails = [c for c in case if c.tag in ("failure", "error")]
    if fails:
        f += 1
        bad.append(case.get("name"))
        if why:
            print("    %s %s::%s" % (fails[0].tag, case.get("classname"), case.get("name")))
            text = (fails[0].text or fails[0].get("message") or "").rstrip().splitlines()
            for line in text[-WHY_LINES:]:
                print("      | " + line)
    elif any(c.tag == "skipped" for c in case):
        s += 1
    else:
        p += 1
if not why:
    print(p, f, s, ",".join(bad))
