"""bench/benchlib.py — what the report steps of bench/run*.sh share: how busy
the machine was during the run, and the CPU model. Imported by their inline
Python (run with BENCH_HERE pointing at bench/)."""
import os


def busy_seconds(stat_line):
    """CPU seconds spent busy (user nice system irq softirq steal) from /proc/stat's cpu line."""
    f = [int(x) for x in stat_line.split()[1:9]]
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / os.sysconf("SC_CLK_TCK")


def sh_times(text):
    """'1m56.729s 0m5.829s' (the sh `times` builtin) -> seconds."""
    total = 0.0
    for t in text.split():
        m, sec = t.rstrip("s").split("m")
        total += 60 * float(m) + float(sec)
    return total


def run_load():
    """-> (wall start, wall end, fraction of all CPU time other processes took),
    from BENCH_WALL, BENCH_STAT_START/END and BENCH_CHILDREN set by the runner."""
    w0, w1 = (float(x) for x in os.environ["BENCH_WALL"].split(":"))
    ncpu = os.cpu_count() or 1
    others = (busy_seconds(os.environ["BENCH_STAT_END"]) - busy_seconds(os.environ["BENCH_STAT_START"])
              - sh_times(os.environ["BENCH_CHILDREN"]))
    return w0, w1, max(0.0, others) / ((w1 - w0) * ncpu)


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def parse_bench_output(path):
    """A C bench's output -> (meta from '# key=value' lines, every 'result k=v ...' line as a dict,
    every 'stage name=... ms=... samples=...' line as name -> (ms, samples))."""
    meta, res, st = {}, [], {}
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("# ") and "=" in line:
            k, v = line[2:].split("=", 1)
            meta[k] = v
        elif line.startswith("result "):
            res.append(dict(f.split("=", 1) for f in line.split()[1:]))
        elif line.startswith("stage "):
            d = dict(f.split("=", 1) for f in line.split()[1:])
            st[d["name"]] = (float(d["ms"]), int(d["samples"]))
    return meta, res, st


def parse_meta_result(path):
    """A C bench's output -> (meta from '# key=value' lines, the last 'result k=v ...' line as a dict)."""
    meta, res, _ = parse_bench_output(path)
    return meta, res[-1] if res else {}
