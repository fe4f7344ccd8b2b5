//go:build !linux

package postgrestest

import "errors"

func adoptOrphans() {}

func postmasterPID(string) (int, error) { return 0, errors.New("not supported on this system") }

func killServer(string) error { return errors.New("killing PostgreSQL is supported on Linux only") }

func reap(int) {}

func processAlive(int) bool { return false }
