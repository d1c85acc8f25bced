package channel

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string // "" for valid
	}{
		{"zero", Config{}, ""},
		{"defaults", DefaultConfig(), ""},
		{"custom", Config{MaxInFlight: 1, MaxHandlers: 1, DefaultTimeout: time.Millisecond, RetryAfter: time.Millisecond, SendQueue: 1}, ""},
		{"MaxInFlight", Config{MaxInFlight: -1}, "MaxInFlight"},
		{"MaxHandlers", Config{MaxHandlers: -1}, "MaxHandlers"},
		{"MaxControl", Config{MaxControl: -1}, "MaxControl"},
		{"DefaultTimeout", Config{DefaultTimeout: -time.Second}, "DefaultTimeout"},
		{"RetryAfter", Config{RetryAfter: -time.Second}, "RetryAfter"},
		{"SendQueue", Config{SendQueue: -1}, "SendQueue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate() = %v, want an error naming %s", err, tc.wantErr)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	want := Config{
		MaxInFlight:    1024,
		MaxHandlers:    1024,
		MaxControl:     16,
		DefaultTimeout: 60 * time.Second,
		RetryAfter:     100 * time.Millisecond,
		SendQueue:      256,
	}
	if got := DefaultConfig(); got != want {
		t.Errorf("DefaultConfig() = %+v, want %+v", got, want)
	}
	for _, cfg := range []Config{{}, {MaxInFlight: -5, MaxHandlers: -5, MaxControl: -5, DefaultTimeout: -1, RetryAfter: -1, SendQueue: -1}} {
		got := cfg.withDefaults()
		if got.Logger == nil {
			t.Errorf("withDefaults(%+v).Logger = nil, want a discarding logger", cfg)
		}
		got.Logger = nil
		if got != want {
			t.Errorf("withDefaults(%+v) = %+v, want the defaults", cfg, got)
		}
	}
	custom := Config{MaxInFlight: 7, MaxHandlers: 8, MaxControl: 3, DefaultTimeout: time.Second, RetryAfter: time.Millisecond, SendQueue: 9}
	got := custom.withDefaults()
	got.Logger = nil
	if got != custom {
		t.Errorf("withDefaults(%+v) = %+v, want it unchanged", custom, got)
	}
}
