package capture

import "github.com/docdb-dr/docdb-dr/pkg/config"

// OptionsFromConfig maps the capture configuration (the environment the function reads) to
// Options. The Lambda function and the local pipeline both use it, so they drain alike.
func OptionsFromConfig(c config.Capture) Options {
	return Options{
		Scope:                 Scope{DB: c.WatchDB, Collections: c.WatchCollections},
		MaxEvents:             c.MaxEvents,
		MaxBytes:              c.MaxBytes,
		CheckpointEvery:       c.CheckpointEvery,
		IdleTimeout:           c.IdleTimeout,
		ContinuousDrain:       c.ContinuousDrain,
		DeadlineMargin:        c.DeadlineMargin,
		StartAt:               c.StartAt,
		LeaseTTL:              c.LeaseTTL,
		ChangeStreamRetention: c.ChangeStreamRetention,
		MaxMessageBytes:       c.Kafka.MaxMessageBytes,
		ArchivePrefix:         c.Archive.Prefix,
	}
}
