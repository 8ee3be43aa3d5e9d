package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/pgtandem/pgtandem/internal/config"
	"github.com/pgtandem/pgtandem/internal/gctune"
	"github.com/pgtandem/pgtandem/internal/logging"
)

// app is what every command gets: the loaded configuration, a logger, and
// where to print.
type app struct {
	cfg    config.Config
	log    *slog.Logger
	stdout io.Writer
	stderr io.Writer
}

// exitError carries a specific exit code (verify uses 1 for "different", 2
// for "error"); any other error exits 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// errNotImplemented marks commands whose issue has not landed yet, so that
// scripts see a failure instead of a silent success.
type errNotImplemented struct{ command, issue string }

func (e *errNotImplemented) Error() string {
	return fmt.Sprintf("%s is not implemented in this build yet (%s)", e.command, e.issue)
}

// run executes the command line and returns the process exit code.
func run(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) int {
	root := newRootCmd(environ, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "pgtandem: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func newRootCmd(environ []string, stdout, stderr io.Writer) *cobra.Command {
	var cf configFlags
	a := &app{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "pgtandem",
		Short: "Keep two PostgreSQL clusters of different major versions in tandem through Apache Pulsar",
		Long: `pgtandem keeps two PostgreSQL clusters of different major versions in tandem through Apache
Pulsar, so that a major upgrade becomes a rehearsed, reversible, seconds-long switch.

Configuration comes from a YAML file (--config or PGTANDEM_CONFIG), PGTANDEM_* environment
variables (PGTANDEM_CLUSTERS_OLD_DSN sets clusters.old.dsn) and flags, later ones winning.
See docs/configuration.md.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Annotations["config"] == "none" {
				return nil
			}
			cfg, err := loadConfig(cf, cmd.Flags(), environ)
			if err != nil {
				return err
			}
			log, err := logging.New(stderr, cfg.Log.Level, cfg.Log.Format)
			if err != nil {
				return err
			}
			a.cfg, a.log = cfg, log
			return nil
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&cf.file, "config", "", "YAML config file (default $PGTANDEM_CONFIG)")
	pf.StringArrayVar(&cf.set, "set", nil, "set any config key, e.g. --set clusters.old.dsn=postgres://... (repeatable)")
	pf.String("log-level", "", "log level: debug, info, warn, error (log.level)")
	pf.String("log-format", "", "log format: auto, text, json (log.format)")
	pf.String("pulsar-url", "", "Pulsar service URL, pulsar://host:port (pulsar.url)")
	pf.String("topic-prefix", "", "topic prefix; a cluster's topic is <prefix>-pg<major> (pulsar.topic-prefix)")

	root.AddCommand(
		newVersionCmd(stdout),
		newBrokerCmd(a),
		newPg2brokerCmd(a),
		newBroker2pgCmd(a),
		newInitCmd(a),
		newVerifyCmd(a),
		newStatusCmd(a),
		newApplyCmd(a),
		newSwitchCmd(a),
		newTopicCmd(a),
		newCursorCmd(a),
		newDemoCmd(a),
	)
	return root
}

func main() {
	gctune.Apply()
	ctx, stop := signalContext()
	code := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
