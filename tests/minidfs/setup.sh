#!/usr/bin/env bash
# Build the MiniDFSCluster launcher used by flux's HDFS integration tests.
#
# Idempotent: compiles tests/minidfs (Maven, tests skipped) and writes the runtime
# classpath to tests/minidfs/target/classpath.txt, so a test can start HDFS without Maven:
#
#   java -cp tests/minidfs/target/classes:$(cat tests/minidfs/target/classpath.txt) \
#        flux.test.MiniDfs 0 /tmp/some-empty-dir
#
# The first run downloads Hadoop and its dependencies (~100 MB) into ~/.m2.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

die() { echo "setup.sh: error: $*" >&2; exit 1; }

command -v java >/dev/null 2>&1 || die "java not found on PATH (Java 17+ is needed)"
command -v mvn >/dev/null 2>&1 || die "mvn (Apache Maven) not found on PATH"

java_major="$(java -XshowSettings:properties -version 2>&1 \
    | sed -n 's/^ *java\.specification\.version = //p' | head -n1)"
case "$java_major" in
    ''|1.*) die "java 17+ is needed, found: $(java -version 2>&1 | head -n1)" ;;
esac
[ "$java_major" -ge 17 ] || die "java 17+ is needed, found java $java_major"

# mvn -q still prints stray colour-reset escapes (Debian's Maven 3.8); strip them.
# With pipefail, mvn's exit status is kept.
mvn_quiet() { mvn -q -B -Dstyle.color=never "$@" 2>&1 | sed -u $'s/\e\\[[0-9;]*m//g'; }

echo "setup.sh: building $here with Maven (java $java_major; first run downloads Hadoop into ~/.m2)"
mvn_quiet -DskipTests package

classpath_file="$here/target/classpath.txt"
echo "setup.sh: writing runtime classpath to $classpath_file"
mvn_quiet dependency:build-classpath -Dmdep.includeScope=runtime \
    -Dmdep.outputFile="$classpath_file"
[ -s "$classpath_file" ] || die "classpath file $classpath_file was not written"
[ -f "$here/target/classes/flux/test/MiniDfs.class" ] || die "MiniDfs.class was not built"

echo "setup.sh: done. Start HDFS with:"
echo "  java -cp $here/target/classes:\$(cat $classpath_file) flux.test.MiniDfs 0 /path/to/tmpdir"
