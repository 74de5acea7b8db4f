"""CPU time per thread of one process: run the command given, read the utime and stime
of each of its threads from /proc every 50 ms until it exits, print the last reading of
each (a thread that ends between readings loses at most 50 ms).

    python3 bench/threads.py target/release/flux build -j 2 -q --date-range A..B
"""
import os
import subprocess
import sys
import time

p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
last = {}
while p.poll() is None:
    try:
        for tid in os.listdir(f"/proc/{p.pid}/task"):
            try:
                s = open(f"/proc/{p.pid}/task/{tid}/stat").read()
                name = s[s.index('(')+1:s.rindex(')')]
                f = s[s.rindex(')')+2:].split()
                last[tid] = (name, int(f[11]), int(f[12]))
            except Exception: pass
    except Exception: pass
    time.sleep(0.05)
hz = os.sysconf('SC_CLK_TCK')
tot = 0
for tid, (n, u, s) in sorted(last.items()):
    tot += u + s
    print(f"{tid:>8} {n:16} user {u/hz:6.2f} sys {s/hz:6.2f}")
print(f"total {tot/hz:.2f} s")
