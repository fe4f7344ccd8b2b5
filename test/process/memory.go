package process

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Status reads the "Name: N kB" lines of /proc/<pid>/status, in bytes:
// VmRSS is the process's resident memory, VmHWM its peak (since it started
// or since ResetPeakRSS), RssAnon and RssFile the anonymous and file-backed
// parts of VmRSS. Linux only.
func Status(pid int) (map[string]float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(data)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 2 && f[1] == "kB" {
			if n, err := strconv.ParseFloat(f[0], 64); err == nil {
				out[k] = n * 1024
			}
		}
	}
	return out, nil
}

// PeakRSS is the process's peak resident memory (VmHWM) in bytes.
func PeakRSS(pid int) (int64, error) {
	status, err := Status(pid)
	if err != nil {
		return 0, err
	}
	peak, ok := status["VmHWM"]
	if !ok {
		return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
	}
	return int64(peak), nil
}

// ResetPeakRSS sets the process's peak resident memory (VmHWM) to its
// resident memory now, so that a later PeakRSS is the peak from this moment
// on (Linux 4.0 and later; the caller must own the process).
func ResetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}
