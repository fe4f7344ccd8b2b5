package process

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
)

var ballast []byte

func TestMemory(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	pid := os.Getpid()
	status, err := Status(pid)
	if err != nil {
		t.Fatal(err)
	}
	if status["VmRSS"] <= 0 || status["VmHWM"] < status["VmRSS"] || status["RssAnon"]+status["RssFile"] > status["VmRSS"] {
		t.Errorf("VmRSS %v, VmHWM %v, RssAnon %v, RssFile %v", status["VmRSS"], status["VmHWM"], status["RssAnon"], status["RssFile"])
	}

	// 64 MiB touched and let go raise the peak; a reset brings it back
	// down to what is resident once they are returned to the kernel.
	const size = 64 << 20
	ballast = make([]byte, size)
	for i := 0; i < size; i += 4096 {
		ballast[i] = 1
	}
	peak, err := PeakRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	if peak < int64(status["VmRSS"])+size/2 {
		t.Errorf("peak RSS %d MiB after touching 64 MiB, RSS before %d MiB", peak>>20, int64(status["VmRSS"])>>20)
	}
	ballast = nil
	runtime.GC()
	debug.FreeOSMemory()
	if err := ResetPeakRSS(pid); err != nil {
		t.Fatal(err)
	}
	after, err := PeakRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	if after > peak-size/2 {
		t.Errorf("peak RSS after the memory was returned and the peak reset: %d MiB, before %d MiB", after>>20, peak>>20)
	}
	if _, err := PeakRSS(-1); err == nil {
		t.Error("the peak RSS of no process was read")
	}
}
