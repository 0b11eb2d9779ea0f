// Command docdbdr is the operator CLI of docdb-dr.
//
// Each subcommand lives in its own file (devstack.go, demo.go, ...) and
// registers itself from an init function:
//
//	func init() {
//		register(command{name: "verify", summary: "...", run: runVerify})
//	}
//
// main only picks the subcommand by name, gives it a context cancelled on
// SIGINT/SIGTERM, its arguments and its output streams, and turns its error
// into an exit status.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand.
type command struct {
	name    string
	summary string // one line for the usage text
	// run executes the subcommand. args are the arguments after its name;
	// machine-readable output goes to stdout, logs and messages to stderr.
	// It returns when done or when ctx is cancelled (Ctrl-C, SIGTERM).
	run func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands holds every registered subcommand by name.
var commands = map[string]command{}

// register adds a subcommand; called from init functions.
func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("docdbdr: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// errUsage reports bad arguments; the exit status is 2, like flag's.
var errUsage = errors.New("usage error")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "--version" || args[0] == "-version" {
		args = append([]string{"version"}, args[1:]...)
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "docdbdr: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	err := c.run(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		if err != errUsage { // a refusal that says why (guard.go); plain errUsage was explained already
			fmt.Fprintf(stderr, "docdbdr %s: %v\n", c.name, err)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "docdbdr %s: %v\n", c.name, err)
		return 1
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: docdbdr <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-18s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'docdbdr <command> -h' for a command's flags.")
}

// newFlagSet is a FlagSet for a subcommand that reports errors instead of
// exiting, and prints its usage to stderr.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("docdbdr "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args, mapping a parse failure to errUsage (flag has
// already printed why) and rejecting stray positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return errUsage
	}
	return nil
}

// collectionFlag is the --collection flag of a command about one collection, with --coll kept as
// its deprecated spelling. After parsing, value returns the collection, "" when neither was given,
// or an error when both were.
type collectionFlag struct{ name, deprecated string }

func addCollectionFlag(fs *flag.FlagSet, usage string) *collectionFlag {
	f := &collectionFlag{}
	fs.StringVar(&f.name, "collection", "", usage)
	fs.StringVar(&f.deprecated, "coll", "", "deprecated: --collection")
	return f
}

func (f *collectionFlag) value() (string, error) {
	if f.name != "" && f.deprecated != "" {
		return "", errors.New("give --collection (or the deprecated --coll), not both")
	}
	return f.name + f.deprecated, nil
}

// newLogger is the JSON slog logger of subcommands, at the given level
// (debug, info, warn, error).
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}
