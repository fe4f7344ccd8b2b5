package bench

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
	stats, self := readProcStats(), os.Getpid()
	for pid, st := range stats {
		if inRun(stats, pid, self) {
			s.ours += st.cpu + st.children
		}
	}
	return s
}

// procStat is what /proc/<pid>/stat says about a process.
type procStat struct {
	ppid int
	// name is the command's name, its first 15 bytes.
	name string
	// cpu is its CPU time (user and system) in clock ticks, children
	// that of its reaped children.
	cpu, children float64
}

// readProcStats reads /proc/<pid>/stat of every process, by pid.
func readProcStats() map[int]procStat {
	out := map[int]procStat{}
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
		open, end := strings.IndexByte(string(data), '('), strings.LastIndexByte(string(data), ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(string(data[end+1:]))
		if len(f) < 15 {
			continue
		}
		// utime, stime, cutime, cstime are fields 14 to 17.
		var t [4]float64
		for i, v := range f[11:15] {
			t[i], _ = strconv.ParseFloat(v, 64)
		}
		ppid, _ := strconv.Atoi(f[1])
		out[pid] = procStat{ppid: ppid, name: string(data[open+1 : end]), cpu: t[0] + t[1], children: t[2] + t[3]}
	}
	return out
}

// inRun says that pid is self or descends from it.
func inRun(stats map[int]procStat, pid, self int) bool {
	for p, hops := pid, 0; p > 0 && hops < 64; p, hops = stats[p].ppid, hops+1 {
		if p == self {
			return true
		}
	}
	return false
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
