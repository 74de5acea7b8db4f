"""Full builds of flux and ninja in turn (flux, ninja, flux, ninja, ...) on one generated
workload, each from scratch at -j 2: the median wall and CPU seconds (user + sys of the
whole process tree, from wait4) of each, and the median of the pair-by-pair ratios
flux / ninja, which holds when the machine's speed drifts during the series.

    python3 bench/pairs.py [--pairs 15] [--steps 10] [--days 1000] [--flux target/release/flux]

The trees go to bench/pairs/ (made with ../shared/bench/gen.py on first use).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

here = Path(__file__).resolve().parent
root = here.parent
shared = Path(os.environ.get("FLUX_SHARED", root.parent / "shared"))


def tree(tool: str, steps: int, days: int) -> Path:
    d = here / "pairs" / f"{tool}-S{steps}-D{days}"
    if not d.exists():
        gen = shared / "bench" / "gen.py"
        if not gen.exists():
            sys.exit(f"pairs: {gen} not found (shared/ must sit beside the repository)")
        subprocess.run([sys.executable, str(gen), "-S", str(steps), "-D", str(days), "--tool", tool,
                        "--out", str(d)], check=True, stdout=subprocess.DEVNULL)
    return d


def run(argv: list[str], cwd: Path, clean: list[str]) -> tuple[float, float]:
    for c in clean:
        p = cwd / c
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    t0 = time.monotonic()
    p = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "NO_COLOR": "1"})
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"pairs: {' '.join(argv)} failed in {cwd}")
    return wall, ru.ru_utime + ru.ru_stime


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("--pairs", type=int, default=15)
    a.add_argument("--steps", type=int, default=10)
    a.add_argument("--days", type=int, default=1000)
    a.add_argument("--flux", default=str(root / "target" / "release" / "flux"))
    o = a.parse_args()
    fd, nd = tree("flux", o.steps, o.days), tree("ninja", o.steps, o.days)
    srcs = sorted((fd / "src").iterdir())
    span = f"{srcs[0].stem}..{srcs[-1].stem}"
    flux = ([o.flux, "build", "-j", "2", "--date-range", span], fd, ["out", ".flux"])
    ninja = (["ninja", "-j", "2"], nd, ["out", ".ninja_log", ".ninja_deps"])
    run(*flux), run(*ninja)  # warm-up, not counted
    rows = []
    for i in range(o.pairs):
        f, n = run(*flux), run(*ninja)
        rows.append((f, n))
        print(f"pair {i + 1:2}: flux {f[0]:6.2f} s wall {f[1]:6.2f} s CPU   ninja {n[0]:6.2f} s wall "
              f"{n[1]:6.2f} s CPU   ratio wall {f[0] / n[0]:.3f} CPU {f[1] / n[1]:.3f}", flush=True)
    med = statistics.median
    print(f"median of {o.pairs}: flux {med(r[0][0] for r in rows):.2f} s wall, {med(r[0][1] for r in rows):.2f} s CPU; "
          f"ninja {med(r[1][0] for r in rows):.2f} s wall, {med(r[1][1] for r in rows):.2f} s CPU")
    print(f"flux / ninja, median of the pairs' ratios: wall {med(r[0][0] / r[1][0] for r in rows):.3f}, "
          f"CPU {med(r[0][1] / r[1][1] for r in rows):.3f}")


if __name__ == "__main__":
    main()
