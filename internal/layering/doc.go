// Package layering holds only a test: the one that keeps the dependency
// direction of ARCHITECTURE §2 true as the code grows.
package layering
