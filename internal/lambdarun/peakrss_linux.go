package lambdarun

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// readPeakRSS reads process pid's peak resident set size, in bytes, from /proc/<pid>/status.
func readPeakRSS(pid int) (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("lambdarun: peak RSS: %w", err)
	}
	rss, err := parseVmHWM(status)
	if err != nil {
		return 0, fmt.Errorf("lambdarun: peak RSS of process %d: %w", pid, err)
	}
	return rss, nil
}

// parseVmHWM returns the VmHWM line of a /proc/<pid>/status file ("VmHWM:    9216 kB") in
// bytes. The kernel writes that line in kB (KiB) and leaves it out for kernel threads.
func parseVmHWM(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		value, ok := bytes.CutPrefix(line, []byte("VmHWM:"))
		if !ok {
			continue
		}
		number, ok := bytes.CutSuffix(bytes.TrimSpace(value), []byte(" kB"))
		if !ok {
			return 0, fmt.Errorf("VmHWM %q is not in kB", bytes.TrimSpace(value))
		}
		kb, err := strconv.ParseInt(string(bytes.TrimSpace(number)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmHWM: %w", err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("no VmHWM line")
}
