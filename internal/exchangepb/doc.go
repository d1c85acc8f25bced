// Package exchangepb holds the Go code generated from
// proto/exchange/v1/exchange.proto, the published wire contract of the
// Exchange protocol (see docs/protocol.md).
//
// Do not edit the *.pb.go files: change the .proto and run `make proto`
// (scripts/genproto.sh, which installs the pinned generators). CI runs
// `make verify-proto` to check that the committed code is fresh.
//
// The package is internal on purpose: users of the exchange handle
// command.Command and command.Reply, never protobuf types. Only
// channel/grpcchannel (and, later, node-to-node forwarding) import it.
package exchangepb
