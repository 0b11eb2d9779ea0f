package devstack

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/twmb/franz-go/pkg/kfake"
)

// startKafka starts a one-broker kfake cluster with the topic. With a data
// directory kfake persists its log and group offsets under DataDir/kafka and
// reloads them on the next start (on new ports).
func (st *Stack) startKafka(opts Options) error {
	kopts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.ClusterID("docdbdr-devstack"),
		kfake.SeedTopics(int32(opts.Partitions), opts.Topic),
		kfake.WithLogger(kfakeLogger{opts.Logger.With("component", "kfake")}),
	}
	if opts.DataDir != "" {
		kopts = append(kopts, kfake.DataDir(filepath.Join(opts.DataDir, "kafka")))
	}
	cluster, err := kfake.NewCluster(kopts...)
	if err != nil {
		return fmt.Errorf("devstack: kafka: %w", err)
	}
	st.onClose(func() error { cluster.Close(); return nil })
	st.KafkaBrokers = cluster.ListenAddrs()
	return nil
}

// kfakeLogger passes kfake's warnings and errors to slog; its info and
// debug lines (one per request) are dropped.
type kfakeLogger struct{ log *slog.Logger }

func (l kfakeLogger) Logf(level kfake.LogLevel, msg string, args ...any) {
	switch level {
	case kfake.LogLevelError:
		l.log.Error(fmt.Sprintf(msg, args...))
	case kfake.LogLevelWarn:
		l.log.Warn(fmt.Sprintf(msg, args...))
	}
}
