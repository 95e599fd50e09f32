//go:build !race

package jsonnetbox

// memoryFactor scales the child's data limit (see race.go).
const memoryFactor = 1
