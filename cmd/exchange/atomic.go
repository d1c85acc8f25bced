package main

import "sync/atomic"

// atomicValue is a typed atomic.Value.
type atomicValue[T any] struct{ v atomic.Value }

type boxed[T any] struct{ v T }

func (a *atomicValue[T]) Store(v T) { a.v.Store(boxed[T]{v}) }

func (a *atomicValue[T]) Load() T {
	b, _ := a.v.Load().(boxed[T])
	return b.v
}
