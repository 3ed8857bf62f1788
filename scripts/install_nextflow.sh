#!/usr/bin/env bash
# Install a pinned Nextflow from Maven Central into .nf/ and write bin/nextflow.
#
#   scripts/install_nextflow.sh          (what `make nextflow` runs)
#
# - If bin/nextflow and its jars are already there for the pinned version: nothing to do.
# - Else if a `nextflow` is already on PATH (and is not our bin/nextflow): use it, write
#   nothing (set BONEMET_NEXTFLOW_FORCE=1 to install the pinned one anyway).
# - Else: `mvn dependency:copy-dependencies` on nextflow/pom.xml copies io.nextflow:nextflow,
#   nf-commons, nf-httpfs and their public dependencies into .nf/lib/<version>/, and
#   bin/nextflow becomes a launcher:
#     java <the --add-opens flags of Nextflow's launcher> -cp '.nf/lib/<version>/*' nextflow.cli.Launcher "$@"
#   with NXF_HOME defaulting to .nf/home, so it needs nothing outside the repository and
#   never downloads plugins (the pipeline uses none).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$ROOT/nextflow/pom.xml"
VERSION="$(sed -n 's:.*<nextflow.version>\(.*\)</nextflow.version>.*:\1:p' "$POM" | head -n1)"
[[ -n "$VERSION" ]] || { echo "install_nextflow: cannot read <nextflow.version> from $POM" >&2; exit 1; }
LIB="$ROOT/.nf/lib/$VERSION"
LAUNCHER="$ROOT/bin/nextflow"

installed() {
  [[ -x "$LAUNCHER" && -f "$LIB/.complete" ]] && grep -q "NXF_PINNED_VERSION=$VERSION\$" "$LAUNCHER"
}

if installed; then
  echo "nextflow $VERSION already installed: bin/nextflow"
  exit 0
fi

if [[ "${BONEMET_NEXTFLOW_FORCE:-0}" != 1 && ! -e "$LAUNCHER" ]]; then
  if existing="$(command -v nextflow 2>/dev/null)" && [[ "$existing" != "$LAUNCHER" ]]; then
    echo "using nextflow already on PATH: $existing (BONEMET_NEXTFLOW_FORCE=1 installs $VERSION into bin/nextflow)"
    exit 0
  fi
fi

command -v java >/dev/null || [[ -n "${JAVA_HOME:-}" ]] || {
  echo "install_nextflow: Java 11-23 is required (java not on PATH, JAVA_HOME unset)" >&2; exit 1; }
command -v mvn >/dev/null || {
  echo "install_nextflow: Maven (mvn) is required to fetch Nextflow $VERSION from Maven Central;" \
       "install it (e.g. apt-get install maven) or put a nextflow on PATH" >&2; exit 1; }

echo "installing nextflow $VERSION from Maven Central into .nf/lib/$VERSION"
tmp="$LIB.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
  -DoutputDirectory="$tmp" -DincludeScope=runtime -Dmdep.useRepositoryLayout=false
ls "$tmp"/nextflow-"$VERSION".jar >/dev/null
rm -rf "$LIB"
mv "$tmp" "$LIB"
trap - EXIT
touch "$LIB/.complete"

mkdir -p "$ROOT/bin"
cat > "$LAUNCHER.tmp" <<LAUNCH
#!/usr/bin/env bash
# Nextflow launcher written by scripts/install_nextflow.sh (make nextflow). Do not edit.
# NXF_PINNED_VERSION=$VERSION
set -e
here="\$(cd "\$(dirname "\${BASH_SOURCE[0]}")/.." && pwd)"
lib="\$here/.nf/lib/$VERSION"
if [[ ! -f "\$lib/.complete" ]]; then
  echo "bin/nextflow: \$lib is missing: run 'make nextflow'" >&2
  exit 1
fi
export NXF_HOME="\${NXF_HOME:-\$here/.nf/home}"
if [[ -n "\${JAVA_HOME:-}" && -x "\$JAVA_HOME/bin/java" ]]; then java="\$JAVA_HOME/bin/java"; else java=java; fi
opts=(
  -Dfile.encoding=UTF-8 -Djava.awt.headless=true -Dcom.sun.security.enableAIAcaIssuers=true
  --add-opens=java.base/java.lang=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED
  --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens=java.base/java.nio.file.spi=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens=java.base/sun.nio.fs=ALL-UNNAMED
  --add-opens=java.base/sun.net.www.protocol.http=ALL-UNNAMED
  --add-opens=java.base/sun.net.www.protocol.https=ALL-UNNAMED
  --add-opens=java.base/sun.net.www.protocol.ftp=ALL-UNNAMED
  --add-opens=java.base/sun.net.www.protocol.file=ALL-UNNAMED
  --add-opens=java.base/jdk.internal.misc=ALL-UNNAMED
  --add-opens=java.base/jdk.internal.vm=ALL-UNNAMED
  --add-opens=java.base/java.util.regex=ALL-UNNAMED
)
# like Nextflow's own launcher: quick start-up JIT settings for commands other than run
[[ "\${1:-}" != run && "\${1:-}" != node ]] && opts+=(-XX:+TieredCompilation -XX:TieredStopAtLevel=1)
# NXF_OPTS (e.g. -Xmx2g) and NXF_JVM_ARGS are honoured as by the official launcher
[[ -n "\${NXF_OPTS:-}" ]] && opts+=(\$NXF_OPTS)
[[ -n "\${NXF_JVM_ARGS:-}" ]] && opts+=(\$NXF_JVM_ARGS)
[[ -n "\${NXF_TEMP:-}" ]] && opts+=(-Djava.io.tmpdir="\$NXF_TEMP")
exec "\$java" "\${opts[@]}" -cp "\$lib/*" nextflow.cli.Launcher "\$@"
LAUNCH
chmod +x "$LAUNCHER.tmp"
mv "$LAUNCHER.tmp" "$LAUNCHER"
"$LAUNCHER" -version | sed -n 's/^ *version/nextflow version/p'
echo "installed: bin/nextflow (Nextflow $VERSION, jars in .nf/lib/$VERSION)"
