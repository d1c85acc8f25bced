package membership

import (
	"fmt"

	"github.com/hashicorp/memberlist"
)

// wrapTransport builds the NetTransport memberlist.Create would build on
// mc's bind address, and sets mc.Transport to wrap's wrapper of it. A port 0
// becomes the port bound, as memberlist does.
func wrapTransport(mc *memberlist.Config, wrap func(memberlist.Transport) memberlist.Transport) error {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{mc.BindAddr},
		BindPort:  mc.BindPort,
		Logger:    mc.Logger,
	})
	if err != nil {
		return fmt.Errorf("gossip transport: %w", err)
	}
	if mc.BindPort == 0 {
		port := nt.GetAutoBindPort()
		if mc.AdvertisePort == 0 {
			mc.AdvertisePort = port
		}
		mc.BindPort = port
	}
	mc.Transport = wrap(nt)
	return nil
}
