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
	"github.com/pgtandem/pgtandem/internal/pglocal"
	"github.com/pgtandem/pgtandem/internal/telemetry"
	"github.com/pgtandem/pgtandem/pg2broker"
)

// dirMarker marks a folder as a demo's, so that a run deletes only a
// folder it created itself (or an empty one) when --dir is mistyped.
const dirMarker = ".pgtandem-demo"

// topicPrefix gives the sample application's topics, app-pg15 for old.
const topicPrefix = "persistent://public/default/app"

// environment is what a rehearsal runs on: both servers, the broker, and
// once started the capture and apply pipeline. close stops all of it.
type environment struct {
	dir       string
	old, new  *pglocal.Server
	broker    *devbroker.Server
	brokerURL string
	adminURL  string
	topic     string
	pipe      *pipeline
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

// startEnvironment starts old, new and the broker under dir. On error,
// what was started is stopped again.
func startEnvironment(ctx context.Context, dir string, log *slog.Logger) (*environment, error) {
	env := &environment{dir: dir, topic: catalog.Topic(topicPrefix, oldMajor)}
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
		err = env.startBroker(log)
	}
	if err != nil {
		return nil, errors.Join(err, env.close())
	}
	log.Info("environment started", "old", env.old.DSN(appDatabase), "new", env.new.DSN(appDatabase), "broker", env.brokerURL, "took", time.Since(start))
	return env, nil
}

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

// close stops the pipeline, the broker and both servers, whatever was
// started, and returns the pipeline's error if it failed.
func (env *environment) close() error {
	var errs []error
	if env.pipe != nil {
		errs = append(errs, env.pipe.stop())
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

// pipeline is pg2broker and broker2pg running in-process. A failure of
// either cancels ctx, which every later step of the rehearsal waits on.
type pipeline struct {
	ctx    context.Context
	cancel context.CancelFunc
	g      *errgroup.Group
	err    error
	done   bool
}

type service interface {
	Run(ctx context.Context) error
}

func (env *environment) startPipeline(ctx context.Context, log *slog.Logger) (*pipeline, error) {
	capture := pg2broker.DefaultConfig()
	capture.Cluster, capture.DSN, capture.Topic, capture.PulsarURL = oldCluster, env.old.DSN(appDatabase), env.topic, env.brokerURL
	apply := broker2pg.DefaultConfig()
	apply.Source, apply.Target, apply.SourceDSN, apply.TargetDSN = oldCluster, newCluster, env.old.DSN(appDatabase), env.new.DSN(appDatabase)
	apply.Topic, apply.PulsarURL, apply.AdminURL = env.topic, env.brokerURL, env.adminURL

	ctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(ctx)
	p := &pipeline{ctx: gctx, cancel: cancel, g: g}
	builders := map[string]func(*telemetry.Telemetry) (service, error){
		"pgtandem/pg2broker": func(tel *telemetry.Telemetry) (service, error) {
			return pg2broker.New(capture, log.With("service", "pg2broker"), tel)
		},
		"pgtandem/broker2pg": func(tel *telemetry.Telemetry) (service, error) {
			return broker2pg.New(apply, log.With("service", "broker2pg"), tel)
		},
	}
	for scope, build := range builders {
		tel, err := telemetry.New(scope)
		if err != nil {
			p.stop()
			return nil, err
		}
		svc, err := build(tel)
		if err != nil {
			_ = tel.Shutdown(context.Background())
			p.stop()
			return nil, fmt.Errorf("%s: %w", scope, err)
		}
		g.Go(func() error {
			defer tel.Shutdown(context.Background())
			if err := svc.Run(gctx); err != nil {
				return fmt.Errorf("%s: %w", scope, err)
			}
			return nil
		})
	}
	env.pipe = p
	return p, nil
}

// stop ends both services and returns the error that ended either early.
func (p *pipeline) stop() error {
	if !p.done {
		p.cancel()
		p.err, p.done = p.g.Wait(), true
	}
	return p.err
}

// stopIfFailed returns the error of a service that ended on its own, after
// stopping the other; nil while both run.
func (p *pipeline) stopIfFailed() error {
	if p.ctx.Err() == nil {
		return nil
	}
	return p.stop()
}
