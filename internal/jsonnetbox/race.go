//go:build race

package jsonnetbox

// memoryFactor scales the child's data limit: the race detector's shadow
// memory grows with the heap it watches.
const memoryFactor = 8
