package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cpuSample is the CPU time, in clock ticks, that the machine and this run
// (the driver and every process it started, with their reaped children) had
// used at one moment, from /proc.
type cpuSample struct {
	busy, total float64
	ours        float64
}

func sampleCPU() cpuSample {
	var s cpuSample
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(data), "\n")
		f := strings.Fields(line)
		// cpu user nice system idle iowait irq softirq steal (guest time is
		// counted in user already).
		if len(f) >= 9 && f[0] == "cpu" {
			for i := 1; i <= 8; i++ {
				v, _ := strconv.ParseFloat(f[i], 64)
				s.total += v
				if i != 4 && i != 5 {
					s.busy += v
				}
			}
		}
	}
	parents := map[int]int{}
	times := map[int]float64{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue
		}
		// The command name, in parentheses, may hold spaces: the fields
		// that follow it start with the state (field 3).
		i := strings.LastIndexByte(string(data), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		parents[pid] = ppid
		// utime, stime, cutime, cstime are fields 14 to 17.
		var t float64
		for _, v := range f[11:15] {
			x, _ := strconv.ParseFloat(v, 64)
			t += x
		}
		times[pid] = t
	}
	self := os.Getpid()
	for pid, t := range times {
		for p, hops := pid, 0; p > 0 && hops < 64; p, hops = parents[p], hops+1 {
			if p == self {
				s.ours += t
				break
			}
		}
	}
	return s
}

// othersCPU is the share of the machine's CPU (0 to 1) that processes
// outside this run used between a and b; NaN if unknown.
func othersCPU(a, b cpuSample) float64 {
	total := b.total - a.total
	if total <= 0 {
		return nan
	}
	others := (b.busy - a.busy) - (b.ours - a.ours)
	return max(0, others/total)
}
