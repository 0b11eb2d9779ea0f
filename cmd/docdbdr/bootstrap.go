package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/bootstrap"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/checkpoint"
	"github.com/docdb-dr/docdb-dr/pkg/config"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
	"github.com/docdb-dr/docdb-dr/pkg/restore"
	"github.com/docdb-dr/docdb-dr/pkg/scope"
)

func init() {
	register(command{
		name:    "bootstrap",
		summary: "copy the scope's existing documents from the primary to DR, then start capture where the copy began",
		run:     runBootstrap,
	})
}

func runBootstrap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bootstrap", stderr)
	sf := addScopeFlags(fs)
	workers := fs.Int("workers", 4, "parallel range copiers")
	ranges := fs.Int("ranges", 0, "_id ranges per collection (default 4 × workers)")
	batch := fs.Int("batch", 1000, "documents per bulk write")
	restart := fs.Bool("restart", false, "discard recorded progress and copy from the beginning with a new start position")
	noCheckpoint := fs.Bool("no-checkpoint", false, "do not set the capture checkpoint; only print the start position")
	retention := fs.String("retention", "", "the primary's change-stream retention: fail rather than set a start position older than this (default CHANGE_STREAM_RETENTION, 3h when unset)")
	who := fs.String("who", defaultWho(), "recorded as the operator in the state and checkpoint")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: docdbdr bootstrap [flags]

Copies every document of the scope (WATCH_DB / WATCH_COLLECTIONS, or --db / --collections) from
PRIMARY_* to DR_* with bulk upserts of the raw BSON in parallel _id ranges. The change-stream
position is taken before the copy starts; when the copy is complete the capture checkpoint
(STATE_DB.STATE_COLLECTION on the primary) is reset to it, so capture replays every change made
during the copy. Capture must not run for the scope during the copy (an event it publishes then
could be overwritten in DR by an older version the copy read): pause it first, and wait until
docdbdr status shows its lease free (docs/deployment.md). Progress is recorded in
docdbdr.bootstrap on DR: run the same command again to resume an interrupted copy. Documents are
written to DR where NAMESPACE_MAP maps them.

flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	env, sc, nsmap, primary, dr, err := openScoped(ctx, sf, stderr)
	if err != nil {
		return err
	}
	defer disconnect(primary, dr)
	ret := env.cfg.ChangeStreamRetention
	if *retention != "" {
		if ret, err = time.ParseDuration(*retention); err != nil || ret <= 0 {
			return refusef("--retention %q: want a positive duration such as 3h or 168h", *retention)
		}
	}

	opts := bootstrap.Options{
		Primary: primary, DR: dr, Scope: sc, MapNamespace: nsmap,
		Workers: *workers, Ranges: *ranges, BatchDocs: *batch, Restart: *restart,
		Who: *who, Retention: ret, Progress: stderr, Logger: env.log,
	}
	if !*noCheckpoint {
		opts.Checkpoint = bootstrap.CheckpointStore{Store: env.checkpoints(primary)}
	}
	res, err := bootstrap.Run(ctx, opts)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		// Durations in seconds, as every --json of the CLI.
		return enc.Encode(struct {
			bootstrap.Result
			Elapsed jsonDuration `json:"elapsed"`
		}{res, jsonDuration(res.Elapsed)})
	}
	switch {
	case res.AlreadyDone:
		fmt.Fprintf(stdout, "scope %s was already bootstrapped (start position %s); use --restart to copy again\n", sc.ID(), res.Start)
	default:
		fmt.Fprintf(stdout, "bootstrap of %s complete: %s documents, %s copied in %s\n", sc.ID(), thousands(res.Docs), humanBytes(res.Bytes), humanDuration(res.Elapsed))
		for _, c := range res.Collections {
			fmt.Fprintf(stdout, "  %s: %s documents in %d range(s)\n", c.Name, thousands(c.Docs), c.Ranges)
		}
		fmt.Fprintf(stdout, "start position: %s\n", res.Start)
		if res.CheckpointSet {
			fmt.Fprintln(stdout, "capture checkpoint reset to the start position: re-enable capture for the scope")
		} else {
			fmt.Fprintln(stdout, "capture checkpoint NOT set (--no-checkpoint): run docdbdr reset-checkpoint --to <start time> (with --force if capture never ran for the scope) before re-enabling capture")
		}
	}
	return nil
}

// The helpers below are shared by the operator tools: bootstrap, verify, restore and
// reset-checkpoint.

// toolEnv is the CLI configuration (pkg/config) and logger of an operator tool.
type toolEnv struct {
	cfg config.CLI
	log *slog.Logger
	aws *aws.Config // loaded on first use: only secrets and S3 need it
}

// loadToolEnv reads the environment; every problem is reported at once.
func loadToolEnv(stderr io.Writer) (*toolEnv, error) {
	cfg, err := config.LoadCLI(os.Getenv)
	if err != nil {
		return nil, err
	}
	log, err := newLogger(stderr, strings.ToLower(cfg.LogLevel.String()))
	if err != nil {
		return nil, err
	}
	return &toolEnv{cfg: cfg, log: log}, nil
}

// openScoped is the start of a tool that works on a scope in both clusters: the environment, the
// scope (flags over WATCH_*), NAMESPACE_MAP, and clients of the primary and DR, which the caller
// disconnects. A scope naming a database or collection the primary does not hold is refused
// (exit 2, naming it).
func openScoped(ctx context.Context, sf scopeFlags, stderr io.Writer) (env *toolEnv, sc scope.Scope,
	nsmap func(changeevent.Namespace) changeevent.Namespace, primary, dr *mongo.Client, err error) {
	if env, err = loadToolEnv(stderr); err != nil {
		return
	}
	if sc, err = env.scope(sf); err != nil {
		fmt.Fprintln(stderr, err)
		err = errUsage
		return
	}
	if nsmap, err = env.namespaceMap(); err != nil {
		return
	}
	if primary, dr, err = env.connectBoth(ctx); err != nil {
		return
	}
	if err = refuseMissing(ctx, primary, "the primary", sc); err != nil {
		disconnect(primary, dr)
		primary, dr = nil, nil
	}
	return
}

// scopeFlags override WATCH_DB / WATCH_COLLECTIONS.
type scopeFlags struct {
	db, collections *string
}

func addScopeFlags(fs *flag.FlagSet) scopeFlags {
	return scopeFlags{
		db:          fs.String("db", "", "database of the scope in the primary (default WATCH_DB; in DR it is where NAMESPACE_MAP maps it, as apply does: export the same NAMESPACE_MAP)"),
		collections: fs.String("collections", "", "comma-separated collections of the scope (default WATCH_COLLECTIONS when --db is WATCH_DB or unset; none: the whole database)"),
	}
}

func (e *toolEnv) scope(f scopeFlags) (scope.Scope, error) {
	s := scope.Scope{DB: e.cfg.WatchDB, Collections: e.cfg.WatchCollections}
	if *f.db != "" && *f.db != e.cfg.WatchDB {
		if len(s.Collections) > 0 && *f.collections == "" {
			e.log.Warn("WATCH_COLLECTIONS ignored: --db names another database than WATCH_DB; the scope is the whole database unless --collections",
				"db", *f.db, "WATCH_DB", e.cfg.WatchDB, "WATCH_COLLECTIONS", strings.Join(s.Collections, ","))
		}
		s = scope.Scope{DB: *f.db}
	}
	if *f.collections != "" {
		s.Collections = nil
		for _, c := range strings.Split(*f.collections, ",") {
			if c = strings.TrimSpace(c); c != "" {
				s.Collections = append(s.Collections, c)
			}
		}
	}
	if s.DB == "" {
		return s, errors.New("no scope: set WATCH_DB or pass --db")
	}
	return s, nil
}

// namespaceMap is NAMESPACE_MAP (where apply writes each primary namespace in DR), or nil.
func (e *toolEnv) namespaceMap() (func(changeevent.Namespace) changeevent.Namespace, error) {
	spec := e.cfg.NamespaceMap
	if spec == "" {
		return nil, nil
	}
	m, err := apply.ParseNamespaceMap(spec)
	if err != nil {
		return nil, fmt.Errorf("NAMESPACE_MAP: %w", err)
	}
	return m.Map, nil
}

func (e *toolEnv) awsConfig(ctx context.Context) (aws.Config, error) {
	if e.aws == nil {
		c, err := awsconfig.LoadDefaultConfig(ctx)
		if err != nil {
			return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
		}
		e.aws = &c
	}
	return *e.aws, nil
}

// connect builds a client of one cluster; name is PRIMARY or DR, for the error message.
func (e *toolEnv) connect(ctx context.Context, name string, s docdb.Settings) (*mongo.Client, error) {
	if s.URI == "" && s.SecretARN == "" {
		return nil, fmt.Errorf("%s_URI or %s_SECRET_ARN is required", name, name)
	}
	var secrets docdb.SecretGetter
	if s.SecretARN != "" {
		c, err := e.awsConfig(ctx)
		if err != nil {
			return nil, err
		}
		secrets = &docdb.SecretsManager{API: secretsmanager.NewFromConfig(c)}
	}
	client, err := docdb.Connect(ctx, s, secrets)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", strings.ToLower(name), err)
	}
	e.log.Debug("connected", "cluster", name, "to", s.String())
	return client, nil
}

func (e *toolEnv) connectBoth(ctx context.Context) (primary, dr *mongo.Client, err error) {
	if primary, err = e.connect(ctx, "PRIMARY", e.cfg.Primary); err != nil {
		return nil, nil, err
	}
	if dr, err = e.connect(ctx, "DR", e.cfg.DR); err != nil {
		disconnect(primary)
		return nil, nil, err
	}
	return primary, dr, nil
}

// checkpoints is capture's state collection on the primary.
func (e *toolEnv) checkpoints(primary *mongo.Client) *checkpoint.Store {
	db, coll := e.cfg.StateDB, e.cfg.StateCollection
	if db == "" {
		db = "docdbdr"
	}
	if coll == "" {
		coll = "checkpoints"
	}
	return checkpoint.New(primary.Database(db).Collection(coll), nil)
}

// archiveReader reads the delete archive; ok is false when ARCHIVE_BUCKET is not set.
func (e *toolEnv) archiveReader(ctx context.Context) (r restore.ArchiveReader, ok bool, err error) {
	a := e.cfg.Archive
	if a.Bucket == "" {
		return restore.ArchiveReader{}, false, nil
	}
	c, err := e.awsConfig(ctx)
	if err != nil {
		return restore.ArchiveReader{}, false, err
	}
	client := archive.NewS3Client(c, a.S3Endpoint)
	return restore.ArchiveReader{Store: archive.NewS3(client, a.Bucket), Layout: archive.Layout{Prefix: a.Prefix}}, true, nil
}

// requireArchive is archiveReader for a command that cannot work without the archive.
func (e *toolEnv) requireArchive(ctx context.Context, command string) (restore.ArchiveReader, error) {
	r, ok, err := e.archiveReader(ctx)
	if err == nil && !ok {
		err = fmt.Errorf("ARCHIVE_BUCKET is required: %s reads the archive", command)
	}
	return r, err
}

func disconnect(clients ...*mongo.Client) {
	for _, c := range clients {
		if c != nil {
			_ = c.Disconnect(context.Background())
		}
	}
}

// humanBytes is a byte count for people, with the exact count: "70.8 MiB (74,288,890 bytes)".
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB (%s bytes)", float64(n)/float64(div), "KMGTPE"[exp], thousands(n))
}

// defaultWho names the operator: user@host.
func defaultWho() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}
