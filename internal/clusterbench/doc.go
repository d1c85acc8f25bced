// Package clusterbench holds the cluster benchmarks that need every layer at
// once: a clustertest.Harness of real nodes, a controller on each node and
// connectors over gRPC. They live here, not in cluster, because cluster must
// not depend on connector (ARCHITECTURE §2). The package has no API: see its
// benchmarks and docs/benchmarks.md, "Cluster".
//
//	go test -run '^$' -bench . -benchmem ./internal/clusterbench/
package clusterbench
