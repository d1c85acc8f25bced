package state

// White-box hooks for the black-box tests in package state_test.

// CheckIndex verifies that s's indexes are the ones a rebuild from scratch
// makes, well linked, and pointing at s's own channels.
func CheckIndex(s *State) error { return s.checkIndex() }

// BatchScenario is a history mixing registry and batch ops (every kind of
// batch op), for the fuzz tests' seeds.
var BatchScenario = batchScenario
