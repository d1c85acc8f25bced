package testlog

import (
	"log/slog"
	"testing"
)

// Logging after the test ended is dropped, not a panic.
func TestLogAfterEnd(t *testing.T) {
	var log *slog.Logger
	t.Run("inner", func(t *testing.T) {
		log = New(t, slog.LevelDebug)
		log.Info("during the test")
	})
	log.Info("after the test") // would panic through t.Log
}
