#!/usr/bin/env bash
# kustomize.sh — the pinned kustomize, built once from the Go module proxy.
#
#   deploy/k8s/kustomize.sh install          build it if missing (about 1-2 min the first time)
#   deploy/k8s/kustomize.sh path             print the binary's path (exit 1 if not built)
#   deploy/k8s/kustomize.sh build DIR [...]  run `kustomize build`, building it first if missing
#
# `kubectl kustomize` (kubectl embeds a kustomize) renders the same; this one is pinned so that
# the tests render with the version they were written for. Cached under $COFFEEBUS_HOME
# (default ~/.cache/coffeebus), like the services of services/services.sh.
set -euo pipefail
KUSTOMIZE_VERSION=${KUSTOMIZE_VERSION:-v5.8.2}
MODULE=sigs.k8s.io/kustomize/kustomize/v5
COFFEEBUS_HOME=${COFFEEBUS_HOME:-$HOME/.cache/coffeebus}
DIR=$COFFEEBUS_HOME/kustomize/$KUSTOMIZE_VERSION
BIN=$DIR/kustomize

install() {
	[[ -x $BIN ]] && return 0
	command -v go >/dev/null || { echo "kustomize.sh: needs go on PATH to build kustomize" >&2; exit 1; }
	mkdir -p "$DIR"
	echo "kustomize.sh: building kustomize $KUSTOMIZE_VERSION from the Go module proxy (log: $DIR/build.log)" >&2
	if ! GOBIN=$DIR GOTOOLCHAIN=local CGO_ENABLED=0 go install "$MODULE@$KUSTOMIZE_VERSION" >"$DIR/build.log" 2>&1; then
		tail -20 "$DIR/build.log" >&2
		exit 1
	fi
}

case ${1:-} in
install) install ;;
path)
	[[ -x $BIN ]] || { echo "kustomize.sh: kustomize $KUSTOMIZE_VERSION not built: run make k8s-tools" >&2; exit 1; }
	echo "$BIN"
	;;
build)
	shift
	install
	exec "$BIN" build "$@"
	;;
*)
	sed -n '2,10p' "$0" >&2
	exit 2
	;;
esac
