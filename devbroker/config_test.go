package devbroker

import (
	"testing"
	"time"
)

func TestConfigValidateNamesTheField(t *testing.T) {
	for field, mutate := range map[string]func(*Config){
		"Listen":            func(c *Config) { c.Listen = "6650" },
		"AdminListen":       func(c *Config) { c.AdminListen = "localhost" },
		"DataDir":           func(c *Config) { c.DataDir = "" },
		"MaxMessageSize":    func(c *Config) { c.MaxMessageSize = 10 },
		"RetentionSize":     func(c *Config) { c.RetentionSize = -1 },
		"RetentionTime":     func(c *Config) { c.RetentionTime = -1 },
		"RetentionInterval": func(c *Config) { c.RetentionInterval = -time.Second },
		"SegmentSize":       func(c *Config) { c.SegmentSize = -1 },
	} {
		cfg := DefaultConfig()
		mutate(&cfg)
		err := cfg.Validate()
		ce, ok := err.(*ConfigError)
		if !ok || ce.Field != field || !IsConfigError(err) {
			t.Errorf("bad %s: got %v", field, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
}

func TestParseTopicNameNormalizesLikePulsar(t *testing.T) {
	for in, want := range map[string]string{
		"my-topic":                      "persistent://public/default/my-topic",
		"acme/cdc/orders":               "persistent://acme/cdc/orders",
		"persistent://acme/cdc/orders":  "persistent://acme/cdc/orders",
		"persistent://a/b/with%20space": "persistent://a/b/with%20space",
	} {
		got, err := ParseTopicName(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseTopicName(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "non-persistent://a/b/c", "persistent://a/b", "persistent://a/cluster/ns/t", "t-partition-3", "http://a/b/c", "persistent://a/b/..", "persistent://../x/t", "persistent://a/../t"} {
		if _, err := ParseTopicName(bad); err == nil {
			t.Errorf("ParseTopicName(%q) accepted", bad)
		}
	}
}
