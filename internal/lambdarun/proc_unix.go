//go:build unix

package lambdarun

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts the sandbox in its own process group, so that a kill reaches every
// process it started.
func setProcessGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

// signalGroup signals the sandbox's whole process group.
func signalGroup(cmd *exec.Cmd, sig syscall.Signal) error { return syscall.Kill(-cmd.Process.Pid, sig) }
