#!/usr/bin/env bash
# refresh.sh [VERSION] — vendor KEDA's ScaledObject CRD (its OpenAPI schema) and the
# parameter names of its Kafka scaler, for tests/coffeebus/test_kubernetes.py.
#
# KEDA publishes them in its Go module (github.com/kedacore/keda/v2: config/crd/bases and
# pkg/scalers/kafka_scaler.go), which the Go module proxy serves with a checksum from the
# checksum database. This downloads that module (go mod download; only the zip is needed, so
# a module asking for a newer Go than this machine's is fine), copies the CRD and the
# license unchanged into keda-VERSION/, and lists the Kafka scaler's trigger parameters in
# keda-VERSION/kafka-scaler-parameters.json. Then set KEDA_VERSION in the test to VERSION
# and delete the old folder.
set -euo pipefail
VERSION=${1:-v2.21.1}
MODULE=github.com/kedacore/keda/v2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$HERE/keda-$VERSION
command -v go >/dev/null || { echo "refresh.sh: needs go on PATH" >&2; exit 1; }
info=$(cd "$(mktemp -d)" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION" || true)
mkdir -p "$OUT"
python3 - "$info" "$MODULE@$VERSION" "$OUT" <<'PY'
import json, re, sys, zipfile
from pathlib import Path

info, prefix, out = json.loads(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
zip_path = info.get("Zip")
if not zip_path or not Path(zip_path).is_file():
    sys.exit(f"refresh.sh: go mod download gave no zip: {info.get('Error')}")
with zipfile.ZipFile(zip_path) as z:
    read = lambda name: z.read(f"{prefix}/{name}")
    (out / "keda.sh_scaledobjects.yaml").write_bytes(read("config/crd/bases/keda.sh_scaledobjects.yaml"))
    (out / "LICENSE").write_bytes(read("LICENSE"))
    scaler = read("pkg/scalers/kafka_scaler.go").decode()
# `keda:"name=lagThreshold,order=triggerMetadata"`: parameters read from a trigger's
# metadata; those also read from the target's environment take a `FromEnv` suffix there.
metadata, from_env = set(), set()
for name, order in re.findall(r'keda:"name=(\w+),order=([\w;]+)', scaler):
    orders = order.split(";")
    if "triggerMetadata" in orders:
        metadata.add(name)
    if "resolvedEnv" in orders:
        from_env.add(name + "FromEnv")
doc = {
    "module": prefix,
    "sum": info.get("Sum"),
    "source": "pkg/scalers/kafka_scaler.go",
    "metadata": sorted(metadata),
    "metadata_from_env": sorted(from_env),
}
(out / "kafka-scaler-parameters.json").write_text(json.dumps(doc, indent=2) + "\n")
print(f"{out}: {len(metadata)} metadata parameters, {len(from_env)} from the environment")
PY
