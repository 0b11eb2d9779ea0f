//go:build unix

package lambdarun

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Build compiles the main package pkg (an import path, or a path relative to the current
// directory) into dir/bootstrap for this machine, the way `make build` builds it for Lambda
// (static, -trimpath, -tags lambda.norpc), and returns the executable's path.
func Build(ctx context.Context, pkg, dir string) (string, error) {
	out := filepath.Join(dir, "bootstrap")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "lambda.norpc", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("lambdarun: go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}
