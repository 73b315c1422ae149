"""Reads a Chrome trace-event JSON file the way the trace tests need it.

trace_reader.py FILE  prints {"reader": ..., "slices": [...], "errors": [...]}
where each slice is {name, cat, pid, tid, ts, dur, depth, parent}.

With the `perfetto` package (installed by `make test` into .build/venv) and
its trace_processor_shell (downloaded once by the package, or named by
PERFETTO_TP_BIN), Perfetto's own importer reads the file: reader
"perfetto", errors from its stats table. Offline, without the binary, a
schema check does the same by hand (reader "schema"): the fields Perfetto's
JSON importer needs, and slices on one track that nest.
"""
import json
import os
import sys


def with_perfetto(path):
    from perfetto.trace_processor import TraceProcessor, TraceProcessorConfig
    cfg = TraceProcessorConfig(bin_path=os.environ.get("PERFETTO_TP_BIN") or None,
                               load_timeout=60)
    tp = TraceProcessor(trace=path, config=cfg)
    try:
        slices = [dict(name=r.name, cat=r.category, pid=r.pid, tid=r.tid,
                       ts=r.ts / 1000.0, dur=r.dur / 1000.0, depth=r.depth,
                       parent=r.parent)
                  for r in tp.query("""
            SELECT s.name, s.category, s.ts, s.dur, s.depth, p.name AS parent,
                   t.tid, pr.pid
            FROM slice s LEFT JOIN slice p ON s.parent_id = p.id
            JOIN thread_track tt ON s.track_id = tt.id
            JOIN thread t USING (utid) LEFT JOIN process pr USING (upid)
            ORDER BY s.ts""")]
        errors = ["%s=%d" % (r.name, r.value) for r in tp.query(
            "SELECT name, value FROM stats WHERE severity IN ('error', "
            "'data_loss') AND value > 0")]
    finally:
        tp.close()
    return slices, errors


def with_schema(path):
    errors = []
    with open(path) as f:
        doc = json.load(f)
    events = doc.get("traceEvents")
    if not isinstance(events, list):
        return [], ["traceEvents is not a list"]
    tracks = {}
    for e in events:
        ph = e.get("ph")
        if ph not in ("X", "M"):
            errors.append("unexpected ph %r" % ph)
            continue
        if not isinstance(e.get("pid"), int) or not isinstance(e.get("tid"), int):
            errors.append("pid/tid not integers: %r" % e)
        if not isinstance(e.get("name"), str):
            errors.append("name not a string: %r" % e)
        if ph == "M":
            if e["name"] not in ("process_name", "thread_name", "process_sort_index",
                                 "thread_sort_index"):
                errors.append("unknown metadata %r" % e["name"])
            continue
        for k in ("ts", "dur"):
            if not isinstance(e.get(k), (int, float)) or e[k] < 0:
                errors.append("%s missing or negative: %r" % (k, e))
        tracks.setdefault((e["pid"], e["tid"]), []).append(e)
    slices = []
    for (pid, tid), evs in tracks.items():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []
        for e in evs:
            end = e["ts"] + e["dur"]
            while stack and e["ts"] >= stack[-1][1]:
                stack.pop()
            if stack and end > stack[-1][1] + 1e-3:
                errors.append("misnested slice %s at %.3f" % (e["name"], e["ts"]))
            slices.append(dict(name=e["name"], cat=e.get("cat"), pid=pid, tid=tid,
                               ts=e["ts"], dur=e["dur"], depth=len(stack),
                               parent=stack[-1][0] if stack else None))
            stack.append((e["name"], end))
    slices.sort(key=lambda s: s["ts"])
    return slices, errors


def main():
    path = sys.argv[1]
    reader, note = "schema", ""
    out = os.dup(1)
    os.dup2(2, 1)  # the package and its download print on stdout
    try:
        slices, errors = with_perfetto(path)
        reader = "perfetto"
    except Exception as e:  # no package, or no binary offline
        note = "%s: %s" % (type(e).__name__, str(e)[:300])
        slices, errors = with_schema(path)
    finally:
        sys.stdout.flush()
        os.dup2(out, 1)
    json.dump({"reader": reader, "note": note, "slices": slices,
               "errors": errors}, sys.stdout)


if __name__ == "__main__":
    main()
