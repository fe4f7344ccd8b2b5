package ports

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestFreeNGivesDistinctBindablePortsOutsideTheEphemeralRange(t *testing.T) {
	ps, err := FreeN(50)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi, ok := outsideEphemeral()
	seen := map[int]bool{}
	for _, p := range ps {
		if seen[p] {
			t.Errorf("port %d handed out twice", p)
		}
		seen[p] = true
		if ok && (p < lo || p > hi) {
			t.Errorf("port %d is outside %d-%d, where the kernel could give it to a connection", p, lo, hi)
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Errorf("port %d cannot be bound: %v", p, err)
			continue
		}
		l.Close()
	}
	more, err := FreeN(50)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range more {
		if seen[p] {
			t.Errorf("port %d handed out again by a later call", p)
		}
	}
}

const childEnv = "ANNEX_PORTS_TEST_PARENT_PORTS"

// TestReservationsHoldAcrossProcesses runs this test binary again as a child
// process, which must find every port of the parent reserved.
func TestReservationsHoldAcrossProcesses(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("run by the parent test")
	}
	ps, err := FreeN(20)
	if err != nil {
		t.Fatal(err)
	}
	var list []string
	for _, p := range ps {
		list = append(list, strconv.Itoa(p))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildSeesParentReservations$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join(list, ","))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestChildSeesParentReservations") {
		t.Fatalf("child process: %v\n%s", err, out)
	}
}

func TestChildSeesParentReservations(t *testing.T) {
	list := os.Getenv(childEnv)
	if list == "" {
		t.Skip("run by TestReservationsHoldAcrossProcesses")
	}
	for _, s := range strings.Split(list, ",") {
		p, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := reserve(p)
		if err != nil {
			t.Fatal(err)
		}
		if got {
			t.Errorf("port %d, reserved by the parent process, was reserved again", p)
		}
	}
	ps, err := FreeN(20)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if strings.Contains(","+list+",", ","+strconv.Itoa(p)+",") {
			t.Errorf("port %d of the parent handed out to the child", p)
		}
	}
}
