#!/usr/bin/env bash
# Copies of a 2 GiB file through `action = "copy"` against a local S3 server (moto): local
# → S3, S3 → S3 across two buckets (two stores: a stream), S3 → S3 within one bucket (a
# server-side copy) and S3 → local. For each: flux's peak RSS (/usr/bin/time -v), wall
# time and the requests flux counted (-v). Usage: bench/copies.sh [FLUX_BINARY]
# (default: target/debug/flux, built here). Needs .ci/venv (bash .ci/setup-tests) or
# MOTO_SERVER=/path/to/moto_server, and about 9 GiB free under $TMPDIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
flux=${1:-}
if [ -z "$flux" ]; then
  (cd "$root" && cargo build --quiet)
  flux=$root/target/debug/flux
fi
moto=${MOTO_SERVER:-$root/.ci/venv/bin/moto_server}
size=${COPY_BENCH_SIZE:-2G}
work=$(mktemp -d "${TMPDIR:-/tmp}/flux-copies.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$moto" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null; rm -rf "$work"' EXIT
auth='Authorization: AWS4-HMAC-SHA256 Credential=bench/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0'
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
for b in src dst; do curl -s -o /dev/null -X PUT -H "$auth" "http://127.0.0.1:$port/$b"; done
export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=bench \
  AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true NO_COLOR=1
cd "$work"
head -c "$size" /dev/urandom >big.bin
# moto takes more than flux's 30 s read timeout to complete a 2 GiB multipart upload or
# copy (S3 itself keeps the connection alive meanwhile), hence the longer timeouts here.
cat >Fluxfile <<'EOF'
[store."s3://src"]
read_timeout = "10m"
timeout = "1h"

[store."s3://dst"]
read_timeout = "10m"
timeout = "1h"

[step.up]
inputs = ["big.bin"]
outputs = ["s3://src/big.bin"]
action = "copy"

[step.across]
inputs = ["s3://src/big.bin"]
outputs = ["s3://dst/big.bin"]
action = "copy"

[step.within]
inputs = ["s3://src/big.bin"]
outputs = ["s3://src/copy/big.bin"]
action = "copy"

[step.down]
inputs = ["s3://dst/big.bin"]
outputs = ["back.bin"]
action = "copy"
EOF
printf '| copy | %s | flux peak RSS | wall | requests |\n| --- | --- | --- | --- | --- |\n' "$size"
for step in up across within down; do
  /usr/bin/time -v -o time.txt "$flux" build -v "$step" >out.txt 2>err.txt || { cat err.txt >&2; exit 1; }
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f MB", $2 / 1024}' time.txt)
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' time.txt)
  reqs=$(sed -n 's/.*remote requests: //p' err.txt)
  printf '| %s | | %s | %s | %s |\n' "$step" "$rss" "$wall" "$reqs"
done
cmp big.bin back.bin && echo "back.bin is identical to big.bin"
