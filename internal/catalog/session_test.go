package catalog_test

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgtandem/pgtandem/internal/catalog"
)

// TestPinTextSettings: the settings that shape text forms become startup
// parameters, over whatever the DSN asked for, and other parameters stay.
func TestPinTextSettings(t *testing.T) {
	cfg, err := pgx.ParseConfig("postgres://u@h/db?DateStyle=German&TimeZone=Europe/Berlin&application_name=app&client_encoding=LATIN1")
	if err != nil {
		t.Fatal(err)
	}
	catalog.PinTextSettings(&cfg.Config)
	want := map[string]string{
		"DateStyle": "ISO, MDY", "IntervalStyle": "postgres", "TimeZone": "UTC", "extra_float_digits": "3",
		"bytea_output": "hex", "lc_monetary": "C", "client_encoding": "UTF8", "xmloption": "content",
		"array_nulls": "on", "standard_conforming_strings": "on", "application_name": "app",
	}
	for name, value := range want {
		if got := cfg.RuntimeParams[name]; got != value {
			t.Errorf("startup parameter %s = %q, want %q", name, got, value)
		}
	}
	if len(cfg.RuntimeParams) != len(want) {
		t.Errorf("startup parameters %v, want exactly %v", cfg.RuntimeParams, want)
	}

	var empty pgx.ConnConfig
	catalog.PinTextSettings(&empty.Config)
	if empty.RuntimeParams["DateStyle"] != "ISO, MDY" {
		t.Errorf("a config without parameters: %v", empty.RuntimeParams)
	}
}

// TestTextSettingsOptions: the same settings as libpq's options, with the
// space in "ISO, MDY" escaped.
func TestTextSettingsOptions(t *testing.T) {
	want := `-c DateStyle=ISO,\ MDY -c IntervalStyle=postgres -c TimeZone=UTC -c array_nulls=on -c bytea_output=hex` +
		` -c client_encoding=UTF8 -c extra_float_digits=3 -c lc_monetary=C -c standard_conforming_strings=on -c xmloption=content`
	if got := catalog.TextSettingsOptions(); got != want {
		t.Errorf("TextSettingsOptions() =\n%s\nwant\n%s", got, want)
	}
}
