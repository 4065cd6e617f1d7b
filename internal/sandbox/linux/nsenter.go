package linux

// The exec helper (nsenter.c) must run before the Go runtime starts
// threads, as a C constructor; importing "C" links it into every binary
// that imports this package.

// #cgo CFLAGS: -Wall -O2
import "C"

// nsenterEnv is the variable that turns a process into the exec helper.
const nsenterEnv = "_SKIFF_NSENTER_PID"
