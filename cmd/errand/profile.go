package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/alecthomas/kingpin/v2"
)

// cpuProfile is the --cpu-profile flag of a long-running command: a CPU
// profile of the process from its start to its end, for `go tool pprof`.
type cpuProfile struct {
	path string
	f    *os.File
}

func addCPUProfileFlag(cmd *kingpin.CmdClause, envar string) *cpuProfile {
	p := &cpuProfile{}
	cmd.Flag("cpu-profile", "Write a CPU profile of this process to FILE, from its start to its end (for go tool pprof).").
		Envar(envar).PlaceHolder("FILE").StringVar(&p.path)
	return p
}

// start starts profiling when the flag is set.
func (p *cpuProfile) start() error {
	if p.path == "" {
		return nil
	}
	f, err := os.OpenFile(p.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("--cpu-profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("--cpu-profile: %w", err)
	}
	p.f = f
	return nil
}

// stop ends the profile and closes its file.
func (p *cpuProfile) stop() error {
	if p.f == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := p.f.Close()
	p.f = nil
	if err != nil {
		return fmt.Errorf("--cpu-profile: %w", err)
	}
	return nil
}
