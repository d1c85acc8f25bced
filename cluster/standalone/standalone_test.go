package standalone_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/exchangekit/exchange/cluster/clustertest"
	"github.com/exchangekit/exchange/cluster/standalone"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	clustertest.Run(t, func(t *testing.T) []clustertest.Cluster { return []clustertest.Cluster{standalone.New("solo")} })
}
