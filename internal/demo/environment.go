package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgtandem/pgtandem/broker2pg"
	"github.com/pgtandem/pgtandem/devbroker"
	"github.com/pgtandem/pgtandem/internal/catalog"
	"github.com/pgtandem/pgtandem/internal/pgbouncerlocal"
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/telemetry"
	"github.com/pgtandem/pgtandem/pg2broker"
)

// dirMarker marks a folder as a demo's, so that a run deletes only a
// folder it created itself (or an empty one) when --dir is mistyped.
const dirMarker = ".pgtandem-demo"

// topicPrefix gives the sample application's topics, app-pg15 for old.
const topicPrefix = "persistent://public/default/app"

// bouncerDir is the folder of PgBouncer under the demo's.
const bouncerDir = "pgbouncer"

// environment is what a rehearsal runs on: both servers, PgBouncer in
// front of old (clients reach the application only through it), the
// broker, and once started the capture and apply pipeline. close stops
// all of it.
type environment struct {
	dir       string
	old, new  *pglocal.Server
	bouncer   *pgbouncerlocal.Bouncer
	broker    *devbroker.Server
	brokerURL string
	adminURL  string
	// topic is old's, reverseTopic new's.
	topic, reverseTopic string
	pipe                *pipeline
	downstream          *downstream
}

// resetDir deletes what a previous run left in dir, stopping servers a
// killed run left running, and creates it again.
func resetDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if len(entries) > 0 {
		if _, err := os.Stat(filepath.Join(dir, dirMarker)); err != nil {
			return fmt.Errorf("demo: %s is not empty and not a previous demo's folder; choose another --dir", dir)
		}
		for _, cluster := range []string{oldCluster, newCluster} {
			stopStaleServer(filepath.Join(dir, cluster, "data"))
		}
		pgbouncerlocal.StopStale(filepath.Join(dir, bouncerDir))
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, dirMarker), []byte("created by pgtandem demo; deleted by the next run\n"), 0o644)
}

// stopStaleServer shuts down (immediate mode, SIGQUIT) a postmaster still
// running on dataDir after a run was killed before it could stop it.
func stopStaleServer(dataDir string) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil || pid <= 1 || syscall.Kill(pid, syscall.SIGQUIT) != nil {
		return
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && syscall.Kill(pid, 0) == nil; {
		time.Sleep(50 * time.Millisecond)
	}
}

// startEnvironment starts old, new, PgBouncer and the broker under dir. On
// error, what was started is stopped again.
func startEnvironment(ctx context.Context, dir string, log *slog.Logger) (*environment, error) {
	env := &environment{dir: dir, topic: catalog.Topic(topicPrefix, oldMajor), reverseTopic: catalog.Topic(topicPrefix, newMajor)}
	start := time.Now()
	// Throwaway data: no fsync spares the 2-core machine the flushes.
	settings := map[string]string{"fsync": "off", "full_page_writes": "off"}
	// A start cancelled by Ctrl-C stops the server it started (pglocal.Start).
	var g errgroup.Group
	g.Go(func() (err error) {
		env.old, err = pglocal.Start(ctx, pglocal.Options{Major: oldMajor, Dir: filepath.Join(dir, oldCluster), Settings: settings})
		return err
	})
	g.Go(func() (err error) {
		env.new, err = pglocal.Start(ctx, pglocal.Options{Major: newMajor, Dir: filepath.Join(dir, newCluster), Settings: settings})
		return err
	})
	err := g.Wait()
	if err == nil {
		env.bouncer, err = pgbouncerlocal.Start(ctx, pgbouncerlocal.Options{Dir: filepath.Join(dir, bouncerDir), Backend: env.old, Database: appDatabase})
	}
	if err == nil {
		err = env.startBroker(log)
	}
	if err != nil {
		return nil, errors.Join(err, env.close())
	}
	log.Info("environment started", "old", env.old.DSN(appDatabase), "new", env.new.DSN(appDatabase), "pgbouncer", env.bouncer.DSN(appDatabase),
		"broker", env.brokerURL, "took", time.Since(start))
	return env, nil
}

// clientDSN is where the application's clients connect: PgBouncer.
func (env *environment) clientDSN() string { return env.bouncer.DSN(appDatabase) }

func (env *environment) startBroker(log *slog.Logger) error {
	cfg := devbroker.DefaultConfig()
	cfg.Listen, cfg.AdminListen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", filepath.Join(env.dir, "broker")
	srv, err := devbroker.New(cfg, log.With("component", "broker"))
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	env.broker = srv
	env.brokerURL, env.adminURL = "pulsar://"+srv.Addr().String(), "http://"+srv.AdminAddr()
	return nil
}

// close stops the pipeline, PgBouncer, the broker and both servers,
// whatever was started, and returns the pipeline's error if it failed.
func (env *environment) close() error {
	var errs []error
	if env.pipe != nil {
		errs = append(errs, env.pipe.stop())
	}
	if env.bouncer != nil {
		errs = append(errs, env.bouncer.Stop())
	}
	if env.broker != nil {
		errs = append(errs, env.broker.Close())
	}
	// The run's context may be cancelled already (Ctrl-C): stopping gets its own.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, srv := range []*pglocal.Server{env.old, env.new} {
		if srv != nil {
			if err := srv.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop PostgreSQL %d: %w", srv.Major, err))
			}
		}
	}
	return errors.Join(errs...)
}

// pipeline is pg2broker and broker2pg running in-process, old -> new and,
// once armed, new -> old. A failure of any cancels ctx, which every later
// step of the rehearsal waits on.
type pipeline struct {
	ctx    context.Context
	cancel context.CancelFunc
	g      *errgroup.Group
	log    *slog.Logger
	err    error
	done   bool
}

// startPipeline starts capture on old and apply on new.
func (env *environment) startPipeline(ctx context.Context, log *slog.Logger) (*pipeline, error) {
	ctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(ctx)
	p := &pipeline{ctx: gctx, cancel: cancel, g: g, log: log}
	env.pipe = p
	if _, err := p.startCapture(env.captureConfig(oldCluster, env.old, env.topic)); err != nil {
		return nil, errors.Join(err, p.stop())
	}
	if err := p.startApply(env.applyConfig(oldCluster, newCluster, env.old, env.new, env.topic)); err != nil {
		return nil, errors.Join(err, p.stop())
	}
	d, err := startDownstream(gctx, env, log.With("component", "downstream"))
	if err != nil {
		return nil, errors.Join(err, p.stop())
	}
	env.downstream = d
	p.g.Go(func() error { return d.run(p.ctx) })
	return p, nil
}

// armReverse starts capture on new (creating its publication and slot)
// and apply on old, as an operator does before the maintenance window,
// and returns once the capture streams. Nothing but pgtandem writes on new
// until the switch, so the reverse flow stays idle until then.
func (env *environment) armReverse(ctx context.Context) error {
	cfg := env.captureConfig(newCluster, env.new, env.reverseTopic)
	cfg.CreateSlot = true
	capture, err := env.pipe.startCapture(cfg)
	if err != nil {
		return err
	}
	if err := env.pipe.startApply(env.applyConfig(newCluster, oldCluster, env.new, env.old, env.reverseTopic)); err != nil {
		return err
	}
	readyCtx, cancel := context.WithTimeout(ctx, armTimeout)
	defer cancel()
	err = poll(readyCtx, 50*time.Millisecond, func() (bool, error) { return capture.Ready() == nil, nil })
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("arm the reverse flow: pg2broker --from %s does not stream after %s: %v", newCluster, armTimeout, capture.Ready())
	}
	return err
}

// armTimeout bounds the wait for the reverse capture to stream.
const armTimeout = time.Minute

func (env *environment) captureConfig(cluster string, srv *pglocal.Server, topic string) pg2broker.Config {
	cfg := pg2broker.DefaultConfig()
	cfg.Cluster, cfg.DSN, cfg.Topic, cfg.PulsarURL = cluster, srv.DSN(appDatabase), topic, env.brokerURL
	return cfg
}

func (env *environment) applyConfig(source, target string, src, dst *pglocal.Server, topic string) broker2pg.Config {
	cfg := broker2pg.DefaultConfig()
	cfg.Source, cfg.Target, cfg.SourceDSN, cfg.TargetDSN = source, target, src.DSN(appDatabase), dst.DSN(appDatabase)
	cfg.Topic, cfg.PulsarURL, cfg.AdminURL = topic, env.brokerURL, env.adminURL
	return cfg
}

func (p *pipeline) startCapture(cfg pg2broker.Config) (*pg2broker.Service, error) {
	tel, err := telemetry.New("pgtandem/pg2broker")
	if err != nil {
		return nil, err
	}
	svc, err := pg2broker.New(cfg, p.log.With("service", "pg2broker", "from", cfg.Cluster), tel)
	if err != nil {
		_ = tel.Shutdown(context.Background())
		return nil, fmt.Errorf("pg2broker --from %s: %w", cfg.Cluster, err)
	}
	p.run("pg2broker --from "+cfg.Cluster, svc.Run, tel)
	return svc, nil
}

func (p *pipeline) startApply(cfg broker2pg.Config) error {
	tel, err := telemetry.New("pgtandem/broker2pg")
	if err != nil {
		return err
	}
	svc, err := broker2pg.New(cfg, p.log.With("service", "broker2pg", "from", cfg.Source, "to", cfg.Target), tel)
	if err != nil {
		_ = tel.Shutdown(context.Background())
		return fmt.Errorf("broker2pg --from %s --to %s: %w", cfg.Source, cfg.Target, err)
	}
	p.run("broker2pg --from "+cfg.Source+" --to "+cfg.Target, svc.Run, tel)
	return nil
}

// run runs a service until the pipeline stops; its telemetry is shut down
// after it.
func (p *pipeline) run(name string, run func(context.Context) error, tel *telemetry.Telemetry) {
	p.g.Go(func() error {
		defer tel.Shutdown(context.Background())
		if err := run(p.ctx); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
}

// stop ends every service and returns the error that ended one early.
func (p *pipeline) stop() error {
	if !p.done {
		p.cancel()
		p.err, p.done = p.g.Wait(), true
	}
	return p.err
}

// stopIfFailed returns the error of a service that ended on its own, after
// stopping the others; nil while all run.
func (p *pipeline) stopIfFailed() error {
	if p.ctx.Err() == nil {
		return nil
	}
	return p.stop()
}
