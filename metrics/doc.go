// Package metrics exports Exchange's figures to Prometheus.
//
// It has two halves, one per side of a channel:
//
//   - Controller implements controller.Metrics (and so channel.Observer): it
//     counts the commands a controller sends (exchange_commands_total by type
//     and outcome, exchange_command_duration_seconds), the commands it handles
//     (exchange_commands_handled_total), refused HELLOs and failed health
//     checks. It also collects, at scrape time, the state it reads through a
//     Source: channels by state, targets, primaries, commands in flight and
//     batches by status. Fed with controller events (OnEvent) it counts primary
//     elections.
//   - Connector implements channel.Observer for a connector and has hooks for
//     its connection state and primary role.
//
// # Usage
//
//  1. Create a registry and the controller metrics over the controller (which
//     satisfies Source):
//
//     reg := prometheus.NewRegistry()
//     m := metrics.NewController(reg, ctrl)
//
//  2. Pass m as the controller's Metrics and m.OnEvent as (or from) its event
//     listener; pass reg to management.New so /metrics serves it.
//
//  3. To report batches as well, give NewController a Source that also
//     implements BatchCounter, for example
//     metrics.WithBatchCounts(ctrl, metrics.CountBatches(runner.ListBatches)).
//
//  4. On a connector, give metrics.NewConnector(reg) as the channel Observer
//     and call its Connected, Disconnected and Primary methods from the
//     connector's OnState and OnPrimary callbacks.
//
// Every command outcome is classified once, by Outcome, from the typed errors
// of the channel and controller packages. Methods are safe for concurrent use
// and never block. This package starts no goroutines.
package metrics
