package config

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestConfigurationDocMatchesTheRegistry keeps docs/configuration.md true to the registry: every
// variable is documented exactly once, nothing undocumented is listed, the "used by" column (or,
// in the sections without one, a mention of the CLI) names the programs that read it, and the
// default column shows the registered default.
func TestConfigurationDocMatchesTheRegistry(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := parseDocTables(string(doc))
	seen := map[string]int{}
	for _, r := range rows {
		for _, name := range r.names {
			seen[name]++
			v, ok := lookup(name)
			if !ok {
				t.Errorf("configuration.md documents %s, which the registry does not list", name)
				continue
			}
			if r.usedBy != "" {
				if got := programs(r.usedBy); !slices.Equal(got, sorted(v.Functions)) {
					t.Errorf("%s: used by %q in configuration.md, registry %v", name, r.usedBy, v.Functions)
				}
			} else {
				// A section without a "used by" column is its function's ("Common": all).
				if fn := strings.ToLower(r.section); fn != "common" && !slices.Contains(v.Functions, fn) {
					t.Errorf("%s is documented under %s, but the registry has %v", name, r.section, v.Functions)
				}
				if r.section == "Common" && len(v.Functions) != 3 {
					t.Errorf("%s is documented under Common, but the registry has %v", name, v.Functions)
				}
				cliSaid := r.section == "CLI" || strings.Contains(r.meaning, "CLI") ||
					(strings.Contains(r.intro, "`"+name+"`") && strings.Contains(r.intro, "CLI"))
				if cliSaid != slices.Contains(v.Functions, FuncCLI) {
					t.Errorf("%s: configuration.md says the CLI reads it: %v; registry: %v", name, cliSaid, v.Functions)
				}
			}
			if v.Default != "" && !strings.Contains(r.def, "`"+v.Default+"`") && r.def != "as above" {
				t.Errorf("%s: default %q in configuration.md, registry %q", name, r.def, v.Default)
			}
		}
	}
	for _, v := range Variables() {
		if seen[v.Name] != 1 {
			t.Errorf("%s is documented %d times in configuration.md, want once", v.Name, seen[v.Name])
		}
	}
}

type docRow struct {
	names                []string
	usedBy, def, meaning string
	section              string // the "## " title
	intro                string // the section's text before its table
}

var docName = regexp.MustCompile("`([A-Z][A-Z0-9_]+)`")

// parseDocTables reads the variable tables: the header names the columns (variable, used by,
// default, meaning).
func parseDocTables(doc string) []docRow {
	var rows []docRow
	var cols []string
	var intro strings.Builder
	var section string
	for _, line := range strings.Split(doc, "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			intro.Reset()
			cols = nil
			section = strings.TrimPrefix(line, "## ")
		case !strings.HasPrefix(line, "|"):
			intro.WriteString(line + "\n")
		case strings.HasPrefix(line, "|---"):
		default:
			cells := strings.Split(strings.Trim(line, "|"), "|")
			for i := range cells {
				cells[i] = strings.TrimSpace(cells[i])
			}
			if cells[0] == "variable" {
				cols = cells
				continue
			}
			r := docRow{intro: intro.String(), section: section}
			for i, c := range cells {
				if i >= len(cols) {
					break
				}
				switch cols[i] {
				case "variable":
					for _, m := range docName.FindAllStringSubmatch(c, -1) {
						r.names = append(r.names, m[1])
					}
				case "used by":
					r.usedBy = c
				case "default":
					r.def = c
				case "meaning":
					r.meaning = c
				}
			}
			rows = append(rows, r)
		}
	}
	return rows
}

// programs turns "capture, apply, CLI" or "all" into sorted function names.
func programs(usedBy string) []string {
	if usedBy == "all" {
		return sorted([]string{FuncCapture, FuncApply, FuncCLI})
	}
	var out []string
	for _, p := range strings.Split(usedBy, ",") {
		out = append(out, strings.ToLower(strings.TrimSpace(p)))
	}
	return sorted(out)
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
