//go:build unix && !linux

package lambdarun

// readPeakRSS is Linux only (VmHWM in /proc/<pid>/status): elsewhere Result.PeakRSS is 0.
func readPeakRSS(int) (int64, error) { return 0, nil }
