package main

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/pgtandem/pgtandem/internal/config"
)

// configFlags are the flags every command has for reaching configuration.
type configFlags struct {
	file string
	set  []string
}

// keyFlags binds convenience flags to configuration keys; every other key is
// reachable through --set key=value.
var keyFlags = map[string]string{
	"log-level":    "log.level",
	"log-format":   "log.format",
	"pulsar-url":   "pulsar.url",
	"topic-prefix": "pulsar.topic-prefix",
}

// Environment variables with the PGTANDEM_ prefix that are not configuration
// keys: where the config file is, where tests and scripts find PostgreSQL
// binaries, the switch's fault injection (killAfterEnv), and what the switch
// gives its hooks (a hook may run pgtandem itself).
var nonKeyEnv = regexp.MustCompile(`^PGTANDEM_(CONFIG|CACHE|PG\d+_BIN|PG_MAJORS|TEST_.*|BENCH_.*|SWITCH_(KILL_AFTER|ID|FROM|TO|ACTION|CLUSTER|HOST|PORT|DBNAME))$`)

// loadConfig merges, lowest precedence first: defaults, the YAML file,
// PGTANDEM_* environment variables, then flags. Unknown keys in any of them
// are errors that name the key, because a mistyped key silently ignored is a
// setting the operator believes in and does not have.
func loadConfig(cf configFlags, flags *pflag.FlagSet, environ []string) (config.Config, error) {
	v := viper.New()
	setDefaults(v)

	file := cf.file
	if file == "" {
		file = lookupEnv(environ, "PGTANDEM_CONFIG")
	}
	if file != "" {
		v.SetConfigFile(file)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			var notFound *os.PathError
			if errors.As(err, &notFound) {
				return config.Config{}, fmt.Errorf("config file %s: %w", file, notFound.Err)
			}
			return config.Config{}, fmt.Errorf("config file %s: %v", file, err)
		}
		for _, key := range v.AllKeys() {
			if !config.KnownKey(key) {
				return config.Config{}, &config.Error{Key: key, Reason: "unknown key in " + file + knownKeysHint()}
			}
		}
	}

	envKeys := map[string]string{}
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "PGTANDEM_") || nonKeyEnv.MatchString(name) {
			continue
		}
		key, ok := config.KeyForEnv(name)
		if !ok {
			return config.Config{}, &config.Error{Key: name, Reason: "unknown environment variable" + knownKeysHint()}
		}
		envKeys[key] = value
	}
	for _, key := range slices.Sorted(maps.Keys(envKeys)) {
		v.Set(key, envKeys[key])
	}

	if flags != nil {
		for flag, key := range keyFlags {
			if f := flags.Lookup(flag); f != nil && f.Changed {
				v.Set(key, f.Value.String())
			}
		}
	}
	for _, kv := range cf.set {
		key, value, ok := strings.Cut(kv, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		if !ok {
			return config.Config{}, fmt.Errorf("--set %q: want key=value", redactSet(kv))
		}
		if !config.KnownKey(key) {
			return config.Config{}, &config.Error{Key: key, Reason: "unknown key in --set" + knownKeysHint()}
		}
		v.Set(key, value)
	}

	var cfg config.Config
	err := v.Unmarshal(&cfg, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	)))
	if err != nil {
		// mapstructure quotes the offending value; it may be a secret.
		return config.Config{}, fmt.Errorf("config: a value has the wrong type: %s", firstLine(scrubValues(err.Error())))
	}
	// viper leaves out clusters written without keys ("new: {}"); they are
	// declared all the same, and Validate must name their missing DSN.
	if raw, ok := v.Get("clusters").(map[string]any); ok {
		for name := range raw {
			if _, ok := cfg.Clusters[name]; !ok {
				if cfg.Clusters == nil {
					cfg.Clusters = map[string]config.Cluster{}
				}
				cfg.Clusters[name] = config.Cluster{}
			}
		}
	}
	return cfg, cfg.Validate()
}

// setDefaults registers the defaults key by key, so that viper knows every
// fixed key (and so decodes env and flag strings into their types).
func setDefaults(v *viper.Viper) {
	for key, value := range config.DefaultValues() {
		// Secrets and DSNs default to empty; viper wants plain values.
		switch val := value.(type) {
		case config.Secret:
			value = string(val)
		case config.DSN:
			value = string(val)
		}
		v.SetDefault(key, value)
	}
}

func knownKeysHint() string {
	return " (known keys: " + strings.Join(config.Keys(), ", ") + ")"
}

func lookupEnv(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, _ := strings.Cut(kv, "="); k == name {
			return v
		}
	}
	return ""
}

// redactSet hides the value of a malformed --set argument: it may be a DSN.
func redactSet(kv string) string {
	if len(kv) > 24 {
		return kv[:8] + "…"
	}
	return kv
}

var quoted = regexp.MustCompile(`'[^']*'|"[^"]*"`)

// scrubValues removes quoted values from a decoding error, keeping the key
// names mapstructure puts first.
func scrubValues(msg string) string {
	return quoted.ReplaceAllStringFunc(msg, func(q string) string {
		inner := q[1 : len(q)-1]
		if config.KnownKey(strings.ToLower(inner)) {
			return q
		}
		return "<value>"
	})
}

func firstLine(s string) string {
	for _, line := range strings.Split(s, "\n") {
		if strings.TrimSpace(line) != "" && !strings.HasPrefix(line, "decoding failed") {
			return strings.TrimSpace(line)
		}
	}
	return s
}
