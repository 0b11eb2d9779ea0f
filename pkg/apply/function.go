package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/docdb-dr/docdb-dr/pkg/archive"
	"github.com/docdb-dr/docdb-dr/pkg/changeevent"
	"github.com/docdb-dr/docdb-dr/pkg/config"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
)

// Env is what NewFunction builds an apply function from. Getenv and AWS are required; the rest
// have defaults.
type Env struct {
	// Getenv reads the function's environment variables (os.Getenv in Lambda).
	Getenv func(string) string
	// AWS is the AWS SDK configuration: Secrets Manager and S3 use it.
	AWS aws.Config
	// Logger receives the function's logs; nil means JSON lines on os.Stdout at LOG_LEVEL.
	// Metrics receives the EMF lines; nil means os.Stdout. Lambda sends stdout to CloudWatch
	// Logs, which turns EMF lines into metrics.
	Logger  *slog.Logger
	Metrics io.Writer
	// WrapDR and WrapArchive, when set, decorate the DR writer and the archive the function
	// built (tests inject faults here). Each is called once, in NewFunction.
	WrapDR      func(DR) DR
	WrapArchive func(Archive) Archive
}

// Function is the apply Lambda function: what one container keeps between invocations. The
// Lambda main, the local runner, the CLI and the tests all build it with NewFunction. Handle may
// be called for one batch at a time; Close once, at shutdown.
type Function struct {
	cfg     config.Apply
	log     *slog.Logger
	dr      *docdb.Lazy
	handler *Handler
}

// NewFunction reads the configuration (every problem at once, each naming its variable) and
// builds the handler. DR is connected by the first batch, so a DR outage fails a batch (reported
// with its summary and metrics, and redelivered) rather than every cold start.
func NewFunction(ctx context.Context, env Env) (*Function, error) {
	if env.Getenv == nil {
		return nil, errors.New("apply: Env.Getenv is required")
	}
	cfg, err := config.LoadApply(env.Getenv)
	opts, oerr := OptionsFromConfig(cfg)
	if err := errors.Join(err, oerr); err != nil {
		return nil, err
	}
	log, emf := env.Logger, env.Metrics
	if log == nil {
		log = slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	}
	if emf == nil {
		emf = os.Stdout
	}
	f := &Function{
		cfg: cfg,
		log: log,
		dr:  docdb.NewLazy(cfg.DR, &docdb.SecretsManager{API: secretsmanager.NewFromConfig(env.AWS)}),
	}
	var dr DR = lazyDR{conn: f.dr, state: cfg.StateDB}
	if env.WrapDR != nil {
		dr = env.WrapDR(dr)
	}
	var ar Archive = archive.NewS3(archive.NewS3Client(env.AWS, cfg.Archive.S3Endpoint), cfg.Archive.Bucket)
	if env.WrapArchive != nil {
		ar = env.WrapArchive(ar)
	}
	opts.Logger, opts.Metrics = log, emf
	if f.handler, err = New(dr, ar, opts); err != nil {
		return nil, err
	}
	log.Info("apply configured", slog.String("dr", cfg.DR.String()), slog.String("bucket", cfg.Archive.Bucket),
		slog.String("prefix", cfg.Archive.Prefix), slog.String("topic", cfg.Topic),
		slog.String("policy", opts.Policy.String()), slog.String("namespaceMap", opts.NamespaceMap.String()), slog.Int("maxBulkOps", cfg.MaxBulkOps),
		slog.String("stateDB", cfg.StateDB), slog.Bool("history", cfg.History))
	return f, nil
}

// Config is the configuration NewFunction read.
func (f *Function) Config() config.Apply { return f.cfg }

// Handle applies one batch from the event source mapping (see Handler.Handle).
func (f *Function) Handle(ctx context.Context, ev events.KafkaEvent) (Summary, error) {
	return f.handler.Handle(ctx, ev)
}

// Close releases the DR connection (Lambda's SIGTERM at shutdown).
func (f *Function) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = f.dr.Disconnect(ctx)
}

// OptionsFromConfig maps the apply configuration to Options, parsing INTERCEPT_POLICY and
// NAMESPACE_MAP; every problem is reported at once, named by its variable. Logger and Metrics are
// left for the caller.
func OptionsFromConfig(c config.Apply) (Options, error) {
	policy, perr := ParsePolicy(c.InterceptPolicy)
	if perr != nil {
		perr = fmt.Errorf("INTERCEPT_POLICY: %w", perr)
	}
	nsmap, merr := ParseNamespaceMap(c.NamespaceMap)
	if merr != nil {
		merr = fmt.Errorf("NAMESPACE_MAP: %w", merr)
	}
	if err := errors.Join(perr, merr); err != nil {
		return Options{}, err
	}
	return Options{
		Policy:           &policy,
		NamespaceMap:     nsmap,
		MaxBulkOps:       c.MaxBulkOps,
		ArchivePrefix:    c.Archive.Prefix,
		ClaimCheckBucket: c.Archive.Bucket,
		History:          c.History,
	}, nil
}

// lazyDR is the DR cluster through a MongoWriter, connected on first use. StateDB needs no
// connection.
type lazyDR struct {
	conn  *docdb.Lazy
	state string
}

func (l lazyDR) writer(ctx context.Context) (*MongoWriter, error) {
	c, err := l.conn.Client(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to DR: %w", err)
	}
	return NewMongoWriter(c).WithStateDB(l.state), nil
}

// do runs f with the connected writer.
func do[T any](ctx context.Context, l lazyDR, f func(*MongoWriter) (T, error)) (T, error) {
	w, err := l.writer(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	return f(w)
}

func (l lazyDR) BulkWrite(ctx context.Context, ns changeevent.Namespace, writes []Write) (BulkResult, error) {
	return do(ctx, l, func(w *MongoWriter) (BulkResult, error) { return w.BulkWrite(ctx, ns, writes) })
}

func (l lazyDR) FindByIDs(ctx context.Context, ns changeevent.Namespace, ids []bson.RawValue) (map[IDKey]bson.Raw, error) {
	return do(ctx, l, func(w *MongoWriter) (map[IDKey]bson.Raw, error) { return w.FindByIDs(ctx, ns, ids) })
}

func (l lazyDR) ScanIDs(ctx context.Context, ns changeevent.Namespace, fn func([]bson.RawValue) error) error {
	_, err := do(ctx, l, func(w *MongoWriter) (struct{}, error) { return struct{}{}, w.ScanIDs(ctx, ns, fn) })
	return err
}

func (l lazyDR) Collections(ctx context.Context, db string) ([]string, error) {
	return do(ctx, l, func(w *MongoWriter) ([]string, error) { return w.Collections(ctx, db) })
}

func (l lazyDR) Drop(ctx context.Context, ns changeevent.Namespace) error {
	_, err := do(ctx, l, func(w *MongoWriter) (struct{}, error) { return struct{}{}, w.Drop(ctx, ns) })
	return err
}

func (l lazyDR) Rename(ctx context.Context, from, to changeevent.Namespace) error {
	_, err := do(ctx, l, func(w *MongoWriter) (struct{}, error) { return struct{}{}, w.Rename(ctx, from, to) })
	return err
}

func (l lazyDR) StateDB() string { return l.state }

func (l lazyDR) EnsureState(ctx context.Context) error {
	_, err := do(ctx, l, func(w *MongoWriter) (struct{}, error) { return struct{}{}, w.EnsureState(ctx) })
	return err
}

func (l lazyDR) Archived(ctx context.Context, ids []string) (map[string]bool, error) {
	return do(ctx, l, func(w *MongoWriter) (map[string]bool, error) { return w.Archived(ctx, ids) })
}

func (l lazyDR) Claim(ctx context.Context, entries []LedgerEntry) (map[string]bool, error) {
	return do(ctx, l, func(w *MongoWriter) (map[string]bool, error) { return w.Claim(ctx, entries) })
}

func (l lazyDR) Written(ctx context.Context, ids []string) error {
	_, err := do(ctx, l, func(w *MongoWriter) (struct{}, error) { return struct{}{}, w.Written(ctx, ids) })
	return err
}

func (l lazyDR) Pending(ctx context.Context, topic string, partitions []int64) ([]LedgerEntry, error) {
	return do(ctx, l, func(w *MongoWriter) ([]LedgerEntry, error) { return w.Pending(ctx, topic, partitions) })
}

func (l lazyDR) Frontiers(ctx context.Context, topic string, partitions []int64) ([]Frontier, error) {
	return do(ctx, l, func(w *MongoWriter) ([]Frontier, error) { return w.Frontiers(ctx, topic, partitions) })
}

func (l lazyDR) SetFrontiers(ctx context.Context, fs []Frontier) error {
	_, err := do(ctx, l, func(w *MongoWriter) (struct{}, error) { return struct{}{}, w.SetFrontiers(ctx, fs) })
	return err
}

func (l lazyDR) Barrier(ctx context.Context, id string) (string, error) {
	return do(ctx, l, func(w *MongoWriter) (string, error) { return w.Barrier(ctx, id) })
}

func (l lazyDR) SetBarrier(ctx context.Context, m BarrierMarker) error {
	_, err := do(ctx, l, func(w *MongoWriter) (struct{}, error) { return struct{}{}, w.SetBarrier(ctx, m) })
	return err
}

func (l lazyDR) MarkHistory(ctx context.Context, nss []changeevent.Namespace, since time.Time) error {
	_, err := do(ctx, l, func(w *MongoWriter) (struct{}, error) { return struct{}{}, w.MarkHistory(ctx, nss, since) })
	return err
}

func (l lazyDR) ClearHistory(ctx context.Context) error {
	_, err := do(ctx, l, func(w *MongoWriter) (struct{}, error) { return struct{}{}, w.ClearHistory(ctx) })
	return err
}
