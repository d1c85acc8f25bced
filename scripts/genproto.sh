#!/usr/bin/env bash
# genproto.sh regenerates internal/exchangepb from proto/exchange/v1/*.proto.
#
# It installs its tools, pinned, into ./bin/tools when they are missing (or
# present at another version), so it is idempotent and needs only Go and npm:
#
#   buf                 @bufbuild/buf from the npm registry (the package ships
#                       the binary); used as the protobuf compiler.
#   protoc-gen-go       from google.golang.org/protobuf, the version go.mod
#                       requires, so the generated code matches the runtime.
#   protoc-gen-go-grpc  from google.golang.org/grpc/cmd/protoc-gen-go-grpc.
#
# Generated code is committed; building and testing never need these tools.
# `make verify-proto` runs this script and fails if the committed code differs.
set -euo pipefail

BUF_VERSION=1.75.0
PROTOC_GEN_GO_VERSION=v1.36.12      # = google.golang.org/protobuf in go.mod
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2   # generates grpc.SupportPackageIsVersion9 code (grpc >= 1.64)

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/bin/tools"
mkdir -p "$tools"
cd "$root"

# The protobuf runtime in go.mod must match protoc-gen-go, or the generated
# code's version checks fail at init.
want_pb=$(go list -m -f '{{.Version}}' google.golang.org/protobuf)
if [ "$want_pb" != "$PROTOC_GEN_GO_VERSION" ]; then
	echo "genproto: go.mod has google.golang.org/protobuf $want_pb but protoc-gen-go is pinned at $PROTOC_GEN_GO_VERSION; update the pin" >&2
	exit 1
fi

# install_go NAME PKG VERSION: go install PKG@VERSION into $tools unless the
# binary there was built from exactly that version.
install_go() {
	local name=$1 pkg=$2 version=$3 bin="$tools/$1"
	if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null | grep -q "[[:space:]]mod[[:space:]].*[[:space:]]$version[[:space:]]"; then
		return
	fi
	echo "genproto: installing $name $version" >&2
	GOBIN="$tools" GOFLAGS=-mod=mod go install "$pkg@$version"
}

install_go protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
install_go protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

buf="$tools/node_modules/.bin/buf"
if [ ! -x "$buf" ] || [ "$("$buf" --version 2>/dev/null)" != "$BUF_VERSION" ]; then
	echo "genproto: installing buf $BUF_VERSION" >&2
	npm install --silent --no-audit --no-fund --no-save --prefix "$tools" "@bufbuild/buf@$BUF_VERSION" >&2
fi

# Generate into a scratch directory, then replace internal/exchangepb's
# generated files, so a removed .proto leaves no stale output behind.
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

PATH="$tools:$PATH" "$buf" generate proto \
	--template '{"version":"v2","plugins":[
		{"local":"protoc-gen-go","out":"'"$out"'","opt":["paths=source_relative"]},
		{"local":"protoc-gen-go-grpc","out":"'"$out"'","opt":["paths=source_relative"]}]}'

mkdir -p internal/exchangepb
rm -f internal/exchangepb/*.pb.go
cp "$out"/exchange/v1/*.pb.go internal/exchangepb/
echo "genproto: internal/exchangepb regenerated" >&2
