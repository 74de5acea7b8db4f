#!/usr/bin/env python3
"""Interleaved rounds at S10xD1000: flux-before, flux-after, ninja (make optional):
full build (wall, CPU of the process tree), then the first no-op and a second no-op."""
import os, resource, subprocess, sys, time, json, shutil
shared = os.environ.get("FLUX_SHARED_BENCH", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench"))
work = sys.argv[1]; rounds = int(sys.argv[2]); hog = sys.argv[3] == "hog"
D = int(os.environ.get("D", "1000"))
tools = {"before": os.environ["FLUX_BEFORE"], "after": os.environ["FLUX_AFTER"]}
rng = "2000-01-01.." + {1000: "2002-09-26", 10000: "2027-05-18"}[D]
def gen(tool, out):
    if os.path.exists(out): shutil.rmtree(out)
    subprocess.run(["python3", f"{shared}/gen.py", "-S", "10", "-D", str(D), "--tool", tool, "--out", out], check=True, stdout=subprocess.DEVNULL)
def cmd(name):
    if name in tools: return [tools[name], "build", "-j", "2", "-q", "--date-range", rng]
    if name == "ninja": return ["ninja", "-j", "2"]
    if name == "make": return ["make", "-j", "2", "-s"]
def run(name, cwd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN); t0 = time.perf_counter()
    p = subprocess.run(cmd(name), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t1 = time.perf_counter(); r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0: print(name, "FAILED", p.stderr[-500:], file=sys.stderr); sys.exit(1)
    return t1 - t0, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
names = ["before", "after", "ninja"] + (["make"] if os.environ.get("MAKE") else [])
hogp = None
if hog:
    hogp = subprocess.Popen(["sh", "-c", "while :; do :; done"])
res = {n: [] for n in names}
try:
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            d = f"{work}/{n}"
            gen("flux" if n in tools else n, d)
            full = run(n, d); n1 = run(n, d); n2 = run(n, d)
            la = os.getloadavg()[0]
            res[n].append({"full": full[0], "cpu_ms_task": full[1] * 1000 / (11 * D), "noop1": n1[0], "noop2": n2[0], "load": la})
            print(r, n, json.dumps(res[n][-1]), flush=True)
finally:
    if hogp: hogp.kill()
json.dump(res, open(f"{work}/res-{'hog' if hog else 'plain'}.json", "w"), indent=1)
def med(xs): xs = sorted(xs); return xs[len(xs)//2]
for n in names:
    print(n, {k: round(med([x[k] for x in res[n]]), 4) for k in ["full", "cpu_ms_task", "noop1", "noop2", "load"]})
