#!/usr/bin/env bash
# A no-op `flux build` over N (default 10,000) daily outputs on each remote store — S3
# (moto's server), HDFS (a MiniDFSCluster), GCS (fake-gcs-server) and Azure (Azurite),
# all on 127.0.0.1 as `.ci/setup-tests` installs them — beside Luigi's S3Target checking
# the same N objects on the same S3 server. Prints one line per run: requests, wall time,
# peak RSS. docs/performance.md ("Remote stores") holds the figures.
#
#   bash bench/stores.sh                  # N=10000, target/release/flux
#   N=1000 FLUX_BIN=target/debug/flux bash bench/stores.sh
#   HDFS_N=1000 bash bench/stores.sh      # fewer files on HDFS (slow to create)
#
# Each store is filled by flux itself (one task with a folder output: N uploads), except
# GCS (the emulator's JSON API; see below); then a project of N daily outputs over that
# prefix builds once (adopting the objects: one listing) and its second build, the no-op,
# is measured.
#
# Requests: flux's own count (`-v`), which the store pipeline tests check against a proxy
# on the wire; on S3 also the server's access log (moto logs every request), which is
# also where Luigi's requests are counted. Luigi 3.8.1 and boto3 go into
# $BENCH_VENV (default target/bench-venv) if missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

N=${N:-10000}
# HDFS may take fewer: the MiniDFSCluster creates files one by one through its datanode
# (3 a second on a busy 2-core machine, so 10,000 take most of an hour to make).
HDFS_N=${HDFS_N:-$N}
FLUX=$(realpath "${FLUX_BIN:-target/release/flux}")
VENV=${BENCH_VENV:-target/bench-venv}
MOTO=${FLUX_TEST_MOTO_SERVER:-.ci/venv/bin/moto_server}
FAKE_GCS=${FLUX_TEST_FAKE_GCS_SERVER:-.ci/gobin/fake-gcs-server}
AZURITE=${FLUX_TEST_AZURITE:-.ci/azurite/node_modules/.bin/azurite-blob}
for f in "$FLUX" "$MOTO" "$FAKE_GCS" "$AZURITE" tests/minidfs/target/classpath.txt; do
    [ -e "$f" ] || { echo "missing: $f (build flux; run .ci/setup-tests)" >&2; exit 1; }
done
if ! "$VENV/bin/python" -c 'import luigi, boto3' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "luigi==3.8.1" boto3
fi

work=$(mktemp -d /tmp/flux-bench-stores.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 2 # Azurite can outlive a SIGTERM
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 600); do curl -s --max-time 5 -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# N days from 2000-01-01, one file each, for the stores flux fills itself.
first=2000-01-01
mkdir -p "$work/src/out" "$work/src-hdfs/out"
python3 - "$work/src/out" "$N" <<'EOF'
import datetime, os, sys
d0 = datetime.date(2000, 1, 1)
for i in range(int(sys.argv[2])):
    d = (d0 + datetime.timedelta(days=i)).isoformat()
    with open(os.path.join(sys.argv[1], d + ".txt"), "w") as f:
        f.write(d + "\n")
EOF

# --- servers ------------------------------------------------------------------------------
S3P=$(port)
"$MOTO" -H 127.0.0.1 -p "$S3P" >"$work/moto.log" 2>&1 &
pids+=($!)
GCSP=$(port)
# GCS: the filesystem backend (the in-memory one slows down with every object added:
# 1,000 uploads take 2 s here, the next 1,000 take 9 s).
"$FAKE_GCS" -scheme http -host 127.0.0.1 -port "$GCSP" -public-host "127.0.0.1:$GCSP" -backend filesystem \
    -filesystem-root "$work/gcs-root" -log-level error >"$work/gcs.log" 2>&1 &
pids+=($!)
AZP=$(port)
"$AZURITE" --blobHost 127.0.0.1 --blobPort "$AZP" --inMemoryPersistence --skipApiVersionCheck --silent \
    >"$work/azurite.log" 2>&1 &
pids+=($!)
cp=$(cat tests/minidfs/target/classpath.txt)
mkfifo "$work/dfs-in"
java -cp "tests/minidfs/target/classes:$cp" flux.test.MiniDfs 0 "$work/dfs" <"$work/dfs-in" >"$work/dfs.out" 2>"$work/dfs.log" &
pids+=($!)
exec 9>"$work/dfs-in" # MiniDfs stops when its stdin closes (at exit)
wait_http "http://127.0.0.1:$S3P/"
wait_http "http://127.0.0.1:$GCSP/storage/v1/b"
wait_http "http://127.0.0.1:$AZP/"
for _ in $(seq 1200); do grep -q '^READY ' "$work/dfs.out" && break; sleep 0.1; done
HDFS=$(sed -n 's/^READY //p' "$work/dfs.out")
[ -n "$HDFS" ] || { echo "MiniDFSCluster did not start: $(tail -5 "$work/dfs.log")" >&2; exit 1; }

export AWS_ENDPOINT_URL="http://127.0.0.1:$S3P" AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret \
    AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$AZP"
curl -s -X PUT "http://127.0.0.1:$S3P/bench" -o /dev/null \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=bench/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0'
# GCS's objects, through the emulator's JSON API (flux uploads through the XML API, whose
# plain upload the emulator lacks; see docs/decisions.md).
curl -s -X POST -d '{"name":"bench"}' "http://127.0.0.1:$GCSP/storage/v1/b" -o /dev/null
python3 - "$GCSP" "$work/src/out" <<'EOF'
import http.client, os, sys
from concurrent.futures import ThreadPoolExecutor
port, src = int(sys.argv[1]), sys.argv[2]
def up(name):
    c = http.client.HTTPConnection("127.0.0.1", port)
    with open(os.path.join(src, name), "rb") as f:
        c.request("POST", f"/upload/storage/v1/b/bench/o?uploadType=media&name=out/{name}", body=f.read())
    r = c.getresponse()
    r.read()
    assert r.status == 200, (name, r.status)
with ThreadPoolExecutor(4) as ex:
    list(ex.map(up, sorted(os.listdir(src))))
EOF
"$VENV/bin/python" - "$AZP" <<'EOF'
# Azurite's container, with a request signed by the emulator's published key.
import base64, hashlib, hmac, sys, urllib.request
from email.utils import formatdate
acct, key = "devstoreaccount1", "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
date, ver = formatdate(usegmt=True), "2021-08-06"
sts = f"PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{ver}\n/{acct}/{acct}/bench\nrestype:container"
sig = base64.b64encode(hmac.new(base64.b64decode(key), sts.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/{acct}/bench?restype=container", method="PUT",
    headers={"x-ms-date": date, "x-ms-version": ver, "Authorization": f"SharedKey {acct}:{sig}", "Content-Length": "0"})
urllib.request.urlopen(req)
EOF

# --- flux ----------------------------------------------------------------------------------
# One project per store: fill the store (a folder output, uploaded by flux), then the
# measured project: N daily outputs over the filled prefix. Its first build adopts the
# objects it finds (one listing); the second is the no-op measured.
noop() { # name root [store table]
    local name=$1 r=$2 table=${3:-} n=$N src=src
    if [ "$name" = hdfs ]; then
        n=$HDFS_N src=src-hdfs
        python3 -c 'import os, sys; [os.symlink(f"{sys.argv[1]}/{f}", f"{sys.argv[2]}/{f}") for f in sorted(os.listdir(sys.argv[1]))[: int(sys.argv[3])]]' \
            "$work/src/out" "$work/src-hdfs/out" "$n"
    fi
    local last
    last=$(date -d "$first + $((n - 1)) days" +%F)
    mkdir -p "$work/$name/fill" "$work/$name/days"
    if [ "$name" != gcs ]; then
        printf '[step.fill]\noutputs = ["%s/out/"]\nrun = "mkdir -p {{ outputs[0] }} && cp -L %s/%s/out/* {{ outputs[0] }}/"\n' "$r" "$work" "$src" >"$work/$name/fill/Fluxfile"
        (cd "$work/$name/fill" && "$FLUX" build fill >/dev/null 2>"$work/$name/fill.err") ||
            { echo "$name: filling failed: $(tail -3 "$work/$name/fill.err")" >&2; exit 1; }
    fi
    printf '%s\n[step.day]\nparams = { date = "date" }\noutputs = ["%s/out/{{ date }}.txt"]\nrun = "echo {{ date }} > {{ outputs[0] }}"\n' \
        "$table" "$r" >"$work/$name/days/Fluxfile"
    (cd "$work/$name/days" && "$FLUX" build day --date-range "$first..$last" >/dev/null 2>&1)
    local before
    before=$(wc -l <"$work/moto.log")
    (cd "$work/$name/days" && /usr/bin/time -f 'TIME %e %M' "$FLUX" build -v day --date-range "$first..$last" \
        >"$work/$name/out" 2>"$work/$name/err") || { echo "$name: no-op failed: $(tail -3 "$work/$name/err")" >&2; exit 1; }
    local req t rss
    req=$(sed -n 's/.*remote requests: //p' "$work/$name/err")
    read -r t rss < <(sed -n 's/^TIME //p' "$work/$name/err")
    local wire=""
    if [ "$name" = s3 ]; then
        wire="; moto's log: $(tail -n +"$((before + 1))" "$work/moto.log" | grep -oE '"(GET|HEAD|PUT|POST|DELETE) ' | sort | uniq -c | awk '{printf "%s %s, ", $1, substr($2,2)}' | sed 's/, $//')"
    fi
    printf '%-6s flux no-op over %s outputs: %s; %.2f s; %d MB RSS%s\n' "$name" "$n" "$req" "$t" "$((rss / 1024))" "$wire"
}

noop s3 "s3://bench"
noop gcs "gs://bench" "$(printf '[store."gs://bench"]\nbase_url = "http://127.0.0.1:%s"\nskip_signature = true\nbearer_token = "emulator"\n' "$GCSP")"
noop azure "az://bench"

# --- Luigi ---------------------------------------------------------------------------------
# The same N objects on the same S3 server: a WrapperTask over N tasks whose output is an
# S3Target; with everything there, Luigi decides the no-op by calling exists() on each.
before=$(wc -l <"$work/moto.log")
/usr/bin/time -f 'TIME %e %M' "$VENV/bin/python" - "$N" >"$work/luigi.out" 2>"$work/luigi.err" <<'EOF'
import datetime, sys
import luigi
from luigi.contrib.s3 import S3Client, S3Target

N = int(sys.argv[1])
d0 = datetime.date(2000, 1, 1)
# One client for every target (Luigi's best case: an S3Target without one makes its own
# boto3 resource, about 0.3 s each here).
CLIENT = S3Client()

class Day(luigi.Task):
    date = luigi.DateParameter()
    def output(self):
        return S3Target(f"s3://bench/out/{self.date.isoformat()}.txt", client=CLIENT)
    def run(self):
        with self.output().open("w") as f:
            f.write(self.date.isoformat() + "\n")

class All(luigi.WrapperTask):
    def requires(self):
        return [Day(date=d0 + datetime.timedelta(days=i)) for i in range(N)]

ok = luigi.build([All()], local_scheduler=True, workers=1, log_level="WARNING")
print("luigi ok" if ok else "luigi FAILED")
EOF
read -r t rss < <(sed -n 's/^TIME //p' "$work/luigi.err")
luigi_req=$(tail -n +"$((before + 1))" "$work/moto.log" | grep -oE '"(GET|HEAD|PUT|POST|DELETE) ' | sort | uniq -c | awk '{printf "%s %s, ", $1, substr($2,2)}' | sed 's/, $//')
printf '%-6s Luigi S3Target no-op over %s targets (%s): moto'"'"'s log: %s; %.2f s; %d MB RSS\n' luigi "$N" "$(cat "$work/luigi.out")" "$luigi_req" "$t" "$((rss / 1024))"

noop hdfs "$HDFS/bench"
