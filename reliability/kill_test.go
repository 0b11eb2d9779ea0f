package reliability

import (
	"context"

	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/docdb-dr/docdb-dr/pkg/capture"
	"github.com/docdb-dr/docdb-dr/pkg/config"
	"github.com/docdb-dr/docdb-dr/pkg/kafka"
)

// killSchedule is the capture schedule of the kill test: an invocation every second (the
// template's is a minute; a short period keeps the test short, and the bound below scales
// with it).
const killSchedule = time.Second

// maxLeaseTTL is the longest lease the product may default to (issue 12: a dead holder blocks
// the next run for at most one TTL, and that must be seconds).
const maxLeaseTTL = 30 * time.Second

// killSlack is what the bound allows beyond LEASE_TTL + one schedule period: a cold start, the
// change stream's open and the first publish, on a loaded 2-core machine.
const killSlack = 3 * time.Second

// TestCaptureKilled kills the real capture process (functions/capture's bootstrap behind the
// Runtime API stand-in) with SIGKILL at random points of its invocations, while writes go on and
// a schedule invokes capture every second, each invocation with a fresh request id. It measures
// the time from each kill to the next event published to Kafka (the producer's timestamp on the
// first record created after the kill), then lets the pipeline settle and accounts for every
// change: DR must equal the primary byte for byte and every event be applied or archived.
//
// Environment: KILL_COUNT (default 20), KILL_SEED (default 1), KILL_LEASE_TTL (default 5s;
// "default" uses pkg/config's LEASE_TTL default, the product's own, and holds it to the target
// of a lease of at most 30 s: with 15m that run fails, at 14m58.6s).
func TestCaptureKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("kills capture processes for minutes")
	}
	kills, seed := envInt(t, "KILL_COUNT", 20), envInt(t, "KILL_SEED", 1)
	ttl := 5 * time.Second
	boundTTL := func() time.Duration { return ttl }
	if s := os.Getenv("KILL_LEASE_TTL"); s == "default" {
		ttl = defaultLeaseTTL(t)
		boundTTL = func() time.Duration { return maxLeaseTTL }
	} else if s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("KILL_LEASE_TTL: %v", err)
		}
		ttl = d
	}
	bound := boundTTL() + killSchedule + killSlack
	wait := ttl + killSchedule + killSlack // how long a kill may take to heal here
	// A quarter of the lease, at most the template's 10 s, before the lease-capped deadline.
	env := map[string]string{"DEADLINE_MARGIN": min(ttl/4, 10*time.Second).String()}
	// The writers: one round (18 changes in the watched scope) every 100 ms; every second when
	// the lease is long (the wait would pile up hundreds of thousands of changes), with an idle
	// timeout longer than that so that a run is still draining when it is killed.
	writeEvery := 100 * time.Millisecond
	if ttl > time.Minute {
		writeEvery, env["IDLE_TIMEOUT"] = time.Second, "5s"
	}
	h := newHarness(t, harnessOptions{
		CaptureProcess: true,
		LeaseTTL:       ttl,
		Env:            env,
		// Each kill waits for a new process and its cold start; a loaded machine needs ~30 s.
		Timeout: time.Duration(kills)*(wait+45*time.Second) + 3*time.Minute,
	})
	pubs := h.watchPublishes()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(writeEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				h.write(1)
			}
		}
	})
	// The schedule: an invocation every killSchedule, each with a fresh request id (a late
	// tick waits for the invocation in progress, as with reserved concurrency 1).
	var started atomic.Int64 // invocations begun
	var inFlight atomic.Bool
	var mu sync.Mutex
	var owners []string
	var leaseHeld, failed int
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			begin := time.Now()
			inFlight.Store(true)
			started.Add(1)
			sum, err := h.capture(nil)
			inFlight.Store(false)
			mu.Lock()
			switch {
			case err != nil:
				failed++
			case sum.StopReason == capture.StopLeaseHeld:
				leaseHeld++
			}
			if err == nil {
				owners = append(owners, sum.Owner)
			}
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(time.Until(begin.Add(killSchedule))):
			}
		}
	})

	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	var gaps []time.Duration
	midRun := 0
	for i := range kills {
		// Kill at a random point of a running invocation, once replication flows again.
		n := started.Load()
		waitForLong(t, "an invocation to start", wait+time.Minute, func() bool { return started.Load() > n && inFlight.Load() })
		time.Sleep(time.Duration(rng.Int64N(int64(3 * time.Second))))
		pid := h.captureProc.PID()
		wasRunning := inFlight.Load()
		killedAt := time.Now()
		if !h.captureProc.Kill() {
			t.Logf("kill %d: no process at that moment; trying again", i)
			continue
		}
		if wasRunning {
			midRun++
		}
		next, ok := pubs.firstAfter(killedAt, wait+time.Minute)
		if !ok {
			t.Fatalf("kill %d: nothing was published within %v of the kill", i, wait+time.Minute)
		}
		if pid != 0 && syscall.Kill(pid, 0) == nil {
			t.Fatalf("kill %d: process %d still runs", i, pid)
		}
		gaps = append(gaps, next.Sub(killedAt))
		t.Logf("kill %d (pid %d, mid-invocation %v): next publish after %v", i, pid, wasRunning, next.Sub(killedAt).Round(time.Millisecond))
	}
	close(stop)
	wg.Wait()
	h.settle()
	l := h.account()

	mu.Lock()
	seen := map[string]bool{}
	for _, o := range owners {
		if seen[o] {
			t.Errorf("request id %s served two invocations", o)
		}
		seen[o] = true
	}
	mu.Unlock()
	if len(gaps) < kills {
		t.Fatalf("%d kills landed, want %d", len(gaps), kills)
	}
	sorted := slices.Clone(gaps)
	slices.Sort(sorted)
	median, worst := sorted[len(sorted)/2], sorted[len(sorted)-1]
	t.Logf("kill -9 of capture: %d kills (%d mid-invocation), seed %d, LEASE_TTL %v, schedule %v: kill -> next publish min %v, median %v, max %v; "+
		"%d lease-held runs, %d failed invocations, %d changes written, lost %d, DR mismatches %d",
		len(gaps), midRun, seed, ttl, killSchedule, sorted[0].Round(time.Millisecond), median.Round(time.Millisecond), worst.Round(time.Millisecond),
		leaseHeld, failed, l.Written, l.Lost, l.DRMismatch)
	if worst > bound {
		t.Errorf("a kill stopped replication for %v, more than a lease TTL of %v + one schedule period %v + %v", worst.Round(time.Millisecond), boundTTL(), killSchedule, killSlack)
	}
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// defaultLeaseTTL is pkg/config's default LEASE_TTL, the one a deployment gets.
func defaultLeaseTTL(t *testing.T) time.Duration {
	for _, v := range config.Variables() {
		if v.Name == "LEASE_TTL" {
			d, err := time.ParseDuration(v.Default)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
	}
	t.Fatal("pkg/config has no LEASE_TTL")
	return 0
}

// publishes is the topic as the broker has it: the producer timestamp of every record produced
// since the watch began.
type publishes struct {
	mu    sync.Mutex
	times []time.Time
	added chan struct{}
}

// watchPublishes consumes every partition from its end until the test ends.
func (h *harness) watchPublishes() *publishes {
	h.t.Helper()
	cfg, err := kafka.SaramaConfig(kafka.Settings{Brokers: h.brokers, Topic: topic})
	if err != nil {
		h.t.Fatal(err)
	}
	cfg.Consumer.MaxWaitTime = 10 * time.Millisecond
	consumer, err := sarama.NewConsumer(h.brokers, cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	p := &publishes{added: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for part := int32(0); part < partitions; part++ {
		pc, err := consumer.ConsumePartition(topic, part, sarama.OffsetNewest)
		if err != nil {
			h.t.Fatal(err)
		}
		wg.Go(func() {
			defer pc.Close()
			for {
				select {
				case m := <-pc.Messages():
					p.mu.Lock()
					p.times = append(p.times, m.Timestamp)
					p.mu.Unlock()
					select {
					case p.added <- struct{}{}:
					default:
					}
				case <-ctx.Done():
					return
				}
			}
		})
	}
	h.t.Cleanup(func() { cancel(); wg.Wait(); _ = consumer.Close() })
	return p
}

// firstAfter waits up to timeout for a record produced after t and returns its timestamp. A
// killed producer creates no timestamps after its death, so the first such record is the next
// event published after the kill.
func (p *publishes) firstAfter(t time.Time, timeout time.Duration) (time.Time, bool) {
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		var first time.Time
		for _, ts := range p.times {
			if ts.After(t) && (first.IsZero() || ts.Before(first)) {
				first = ts
			}
		}
		p.mu.Unlock()
		// A record may arrive slightly after a later one on another partition: give the
		// other partitions a moment once one was found.
		if !first.IsZero() && time.Since(first) > 100*time.Millisecond {
			return first, true
		}
		select {
		case <-p.added:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			return time.Time{}, false
		}
	}
}
