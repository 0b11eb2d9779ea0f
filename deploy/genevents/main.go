// Command gen writes the sample Lambda events events/msk.json and events/schedule.json from
// fixed values (see deploy/internal/sample). Run from the repository root:
//
//	go run ./deploy/genevents
//
// deploy/template_test.go fails when the committed files differ from what this writes.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/docdb-dr/docdb-dr/deploy/internal/sample"
)

func main() {
	dir := flag.String("dir", "events", "directory to write msk.json and schedule.json into")
	flag.Parse()
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	files := map[string]func() ([]byte, error){
		"msk.json":      sample.MSKEventJSON,
		"schedule.json": sample.ScheduleEventJSON,
	}
	for name, build := range files {
		b, err := build()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", path)
	}
	return nil
}
