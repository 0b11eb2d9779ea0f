// Package e2e is the randomized end-to-end suite: a seeded random workload on watched and
// unwatched collections runs against the embedded stack while capture and apply run over and
// over, with capture crashing before its checkpoint and apply failing part way through batches.
// At the end DR must hold exactly "the primary plus every deleted document at its last version",
// byte for byte, and the archive exactly one record per delete record in Kafka.
//
//	go test ./e2e                          # 3 seeds (CI)
//	go test ./e2e -seeds 20                # or E2E_SEEDS=20
//	go test ./e2e -run 'TestRandomized/seed=7$' -v   # rerun one seed (printed on failure)
package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docdb-dr/docdb-dr/internal/faults"

	"github.com/docdb-dr/docdb-dr/internal/devstack"
	"github.com/docdb-dr/docdb-dr/internal/localrun"
	"github.com/docdb-dr/docdb-dr/pkg/apply"
	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/docdb"
)

var (
	seedsFlag = flag.Int("seeds", 0, "number of seeds to run, 1..N (default $E2E_SEEDS, else 3)")
	firstSeed = flag.Int("first-seed", 1, "first seed")
	opsFlag   = flag.Int("ops", 600, "workload operations per seed")
	updateDoc = flag.Bool("update", false, "write the run's archive figures into docs/reliability.md")
)

// seeds returns the seeds to run: -seeds, else $E2E_SEEDS, else 3, starting at -first-seed.
func seeds(t *testing.T) []uint64 {
	n := *seedsFlag
	if n == 0 {
		n = 3
		if s := os.Getenv("E2E_SEEDS"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 1 {
				t.Fatalf("E2E_SEEDS=%q is not a positive number", s)
			}
			n = v
		}
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(*firstSeed + i)
	}
	return out
}

func TestRandomized(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end suite")
	}
	var rows []seedRow
	for _, seed := range seeds(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("FAILED with seed %d: rerun with go test ./e2e -run 'TestRandomized/seed=%d$' -first-seed %d -seeds 1 -v", seed, seed, seed)
				}
			})
			row := runSeed(t, seed)
			row.failed = t.Failed()
			rows = append(rows, row)
		})
	}
	if *updateDoc {
		writeArchiveFigures(t, rows)
	}
}

// scenario is what a seed decides before the run starts.
type scenario struct {
	watched, others []ns
	env             map[string]string
	batchSize       int
	batchingWindow  time.Duration
	bigSize         int // 0: no document exceeds the Kafka message limit
}

func newScenario(rng *rand.Rand) scenario {
	sc := scenario{
		watched: []ns{{"shop", "orders"}},
		others:  []ns{{"other", "orders"}},
		env: map[string]string{
			"IDLE_TIMEOUT":     "150ms",
			"MAX_AWAIT":        "50ms",
			"DEADLINE_MARGIN":  "1s",
			"LEASE_TTL":        "2s", // a crash between acquiring and answering must not block for long
			"CHECKPOINT_EVERY": strconv.Itoa(1 + rng.IntN(40)),
			"MAX_EVENTS":       strconv.Itoa(10 + rng.IntN(150)),
		},
		batchSize:      1 + rng.IntN(120),
		batchingWindow: time.Duration(10+rng.IntN(100)) * time.Millisecond,
	}
	if rng.IntN(2) == 0 {
		// A list of collections: a database-level stream with a $match, and an unwatched
		// collection in the same database.
		sc.watched = append(sc.watched, ns{"shop", "customers"})
		sc.others = append(sc.others, ns{"shop", "audit"})
	}
	colls := make([]string, len(sc.watched))
	for i, w := range sc.watched {
		colls[i] = w.coll
	}
	sc.env["WATCH_DB"] = "shop"
	sc.env["WATCH_COLLECTIONS"] = strings.Join(colls, ",")
	if rng.IntN(2) == 0 {
		sc.env["KAFKA_MAX_MESSAGE_BYTES"] = "4096"
		sc.bigSize = 6000
	}
	return sc
}

// injected are the failures, armed by the chaos loop.
type injected struct {
	save, write, put faults.Fault
}

func (f *injected) hooks() localrun.Hooks {
	return localrun.Hooks{
		CaptureDeps: func(d capture.Deps) capture.Deps {
			d.Checkpoints = faults.FailingCheckpoints{Checkpoints: d.Checkpoints, SaveFault: &f.save}
			return d
		},
		DR:      func(d apply.DR) apply.DR { return faults.FailingDR{DR: d, WriteFault: &f.write} },
		Archive: func(a apply.Archive) apply.Archive { return faults.FailingArchive{Archive: a, PutFault: &f.put} },
	}
}

// stats count what happened during a run, for the log.
type stats struct {
	mu                                        sync.Mutex
	captures, captureErrors, republishingRuns int
	saveCrashes, cancelCrashes                int
	applies, applyErrors                      int
	claimChecks                               int
	replays                                   int   // consumer-group rewinds during the run
	replayed                                  int64 // records they delivered again
	replayErr                                 error
}

func runSeed(t *testing.T, seed uint64) seedRow {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	sc := newScenario(rng)
	t.Logf("scenario: watched %v, ignored %v, batch %d/%s, env %v", sc.watched, sc.others, sc.batchSize, sc.batchingWindow, sc.env)
	workloadRNG := rand.New(rand.NewPCG(seed, 1))
	chaosRNG := rand.New(rand.NewPCG(seed, 2))

	// The embedded S3 is strict (403 for a missing key, as to apply's role) and slows down 2% of
	// object requests, as S3 does under load.
	st, err := devstack.Start(ctx, devstack.Options{S3SlowDownRate: 0.02, S3SlowDownSeed: seed})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	var f injected
	var s stats
	p, err := localrun.New(ctx, localrun.Options{
		Getenv:          localrun.Getenv(sc.env, st.Env(), nil),
		ManualCapture:   true, // the chaos loop invokes capture, deciding which invocations crash
		BatchSize:       sc.batchSize,
		BatchingWindow:  sc.batchingWindow,
		RetryBackoff:    5 * time.Millisecond,
		MaxRetryBackoff: 50 * time.Millisecond,
		Logger:          slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Hooks:           f.hooks(),
		OnCapture: func(r localrun.CaptureResult) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.captures++
			s.claimChecks += r.Summary.ClaimChecks
			if r.Err != nil {
				s.captureErrors++
				if r.Summary.Acknowledged > 0 {
					s.republishingRuns++ // acknowledged events whose checkpoint may not have moved
				}
			}
		},
		OnApply: func(r localrun.ApplyResult) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.applies++
			if r.Err != nil {
				s.applyErrors++
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := docdb.EnableChangeStreams(ctx, p.Primary(), p.Scope()); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	if _, err := p.CaptureOnce(ctx, capture.Overrides{}); err != nil { // pins the start
		t.Fatal(err)
	}
	p.Start(ctx)

	w := newWorkload(workloadRNG, p.Primary(), sc.watched, sc.others, sc.bigSize)
	done := make(chan struct{})
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		chaos(ctx, p, st, &f, &s, chaosRNG, done)
	}()
	werr := w.run(ctx, *opsFlag, 16*time.Millisecond)
	close(done)
	<-chaosDone
	if werr != nil {
		t.Fatal(werr)
	}

	// A final clean capture to the end of the stream, and apply caught up. Apply faults still
	// armed fire here and are retried.
	f.save.Disarm()
	syncCtx, cancelSync := context.WithTimeout(ctx, 180*time.Second) // a batch may be one record: 2000+ invocations
	defer cancelSync()
	if err := p.Sync(syncCtx); err != nil {
		t.Fatalf("final sync: %v", err)
	}
	// Then the whole topic once more: a consumer-group reset to the oldest offset.
	p.Stop()
	again, err := rewindGroup(st, localrun.DefaultGroupID, chaosRNG, true)
	if err != nil {
		t.Fatal(err)
	}
	p.Start(ctx)
	// The whole topic again, one invocation per batch (a batch can be one record): its own time.
	replayCtx, cancelReplay := context.WithTimeout(ctx, 150*time.Second)
	defer cancelReplay()
	if err := p.Sync(replayCtx); err != nil {
		t.Fatalf("sync after the final consumer-group reset: %v", err)
	}

	s.mu.Lock()
	t.Logf("workload: %v, deletes %v, big documents %d", w.ops, w.deletes, w.bigDocs)
	t.Logf("capture: %d invocations, %d failed (%d crashed before the checkpoint, %d cancelled), %d left acknowledged events behind a stale checkpoint, %d claim checks",
		s.captures, s.captureErrors, s.saveCrashes, s.cancelCrashes, s.republishingRuns, s.claimChecks)
	t.Logf("apply: %d invocations, %d failed (DR write faults fired %d, archive faults fired %d)", s.applies, s.applyErrors, f.write.Fired(), f.put.Fired())
	t.Logf("consumer group: %d rewinds during the run delivered %d records again; the final reset to the oldest offset %d", s.replays, s.replayed, again)
	replayErr := s.replayErr
	s.mu.Unlock()
	if replayErr != nil {
		t.Fatal(replayErr)
	}

	checkDR(ctx, t, p, w)
	c := checkArchive(ctx, t, p, w, st)
	checkVerifyArchive(ctx, t, p, c, started)
	checkRestore(ctx, t, p, w)
	s.mu.Lock()
	defer s.mu.Unlock()
	return seedRow{seed: seed, archive: c, captureCrashes: s.saveCrashes + s.cancelCrashes, applyFailures: s.applyErrors,
		rewinds: s.replays + 1, replayed: s.replayed + again}
}

// chaos runs capture again and again until done, crashing some invocations before their
// checkpoint (a failing Save, or a context cancelled at a random moment), and arms apply faults
// (a bulk write failing after k writes, an archive PUT failing) that the event source mapping
// retries through.
func chaos(ctx context.Context, p *localrun.Pipeline, st *devstack.Stack, f *injected, s *stats, rng *rand.Rand, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(10+rng.IntN(70)) * time.Millisecond):
		}
		if rng.IntN(4) == 0 && !f.write.Armed() {
			f.write.Arm(rng.IntN(40), 1+rng.IntN(2))
		}
		if rng.IntN(6) == 0 && !f.put.Armed() {
			f.put.Arm(rng.IntN(3), 1)
		}
		if rng.IntN(15) == 0 {
			// An operator resets the consumer group's offsets back into what was applied.
			p.Stop()
			n, err := rewindGroup(st, localrun.DefaultGroupID, rng, false)
			p.Start(ctx)
			s.mu.Lock()
			s.replays++
			s.replayed += n
			s.replayErr = errors.Join(s.replayErr, err)
			s.mu.Unlock()
		}
		switch x := rng.Float64(); {
		case x < 0.25:
			// Published, acknowledged, then "crashed" before (some of) its checkpoint saves.
			f.save.Arm(rng.IntN(2), -1)
			_, _ = p.CaptureOnce(ctx, capture.Overrides{})
			f.save.Disarm()
			s.mu.Lock()
			s.saveCrashes++
			s.mu.Unlock()
		case x < 0.45:
			// Killed at a random moment.
			cctx, cancel := context.WithTimeout(ctx, time.Duration(5+rng.IntN(300))*time.Millisecond)
			_, _ = p.CaptureOnce(cctx, capture.Overrides{})
			cancel()
			s.mu.Lock()
			s.cancelCrashes++
			s.mu.Unlock()
		default:
			_, _ = p.CaptureOnce(ctx, capture.Overrides{})
		}
	}
}
