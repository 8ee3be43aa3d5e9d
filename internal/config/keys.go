package config

import (
	"reflect"
	"sort"
	"strings"
)

// Keys lists every configuration key, derived from the struct tags so that
// it cannot drift from the types. A map level is written "*", as in
// "clusters.*.dsn".
func Keys() []string {
	var keys []string
	collectKeys(reflect.TypeOf(Config{}), "", &keys)
	sort.Strings(keys)
	return keys
}

func collectKeys(t reflect.Type, prefix string, keys *[]string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := f.Tag.Get("mapstructure")
		if name == "" {
			continue
		}
		key := prefix + name
		switch f.Type.Kind() {
		case reflect.Struct:
			collectKeys(f.Type, key+".", keys)
		case reflect.Map:
			collectKeys(f.Type.Elem(), key+".*.", keys)
		default:
			*keys = append(*keys, key)
		}
	}
}

// KnownKey reports whether a dotted key (as viper spells it, lower case) is
// a configuration key, with any name in a "*" position.
func KnownKey(key string) bool {
	_, ok := MatchKey(key)
	return ok
}

// MatchKey returns the pattern of Keys that key matches.
func MatchKey(key string) (string, bool) {
	parts := strings.Split(key, ".")
	for _, pattern := range Keys() {
		pp := strings.Split(pattern, ".")
		// "clusters.old" alone is an entry of a map written with no keys
		// ("old: {}"); Validate then names the key it lacks.
		if len(parts) < len(pp) && pp[len(parts)-1] == "*" {
			pp = pp[:len(parts)]
		}
		if len(pp) != len(parts) {
			continue
		}
		match := true
		for i := range pp {
			if pp[i] != "*" && pp[i] != parts[i] {
				match = false
				break
			}
		}
		if match {
			return pattern, true
		}
	}
	return "", false
}

// EnvName is the environment variable that sets key, e.g.
// clusters.old.dsn → PGTANDEM_CLUSTERS_OLD_DSN.
func EnvName(key string) string {
	return "PGTANDEM_" + strings.NewReplacer(".", "_", "-", "_").Replace(strings.ToUpper(key))
}

// KeyForEnv maps an environment variable to its key, the inverse of EnvName;
// for patterns with a "*" the name is whatever stands between the fixed parts.
func KeyForEnv(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "PGTANDEM_")
	if !ok {
		return "", false
	}
	for _, pattern := range Keys() {
		head, tail, wild := strings.Cut(pattern, ".*.")
		if !wild {
			if EnvName(pattern) == name {
				return pattern, true
			}
			continue
		}
		headEnv := strings.TrimPrefix(EnvName(head), "PGTANDEM_") + "_"
		tailEnv := "_" + strings.TrimPrefix(EnvName(tail), "PGTANDEM_")
		if strings.HasPrefix(rest, headEnv) && strings.HasSuffix(rest, tailEnv) && len(rest) > len(headEnv)+len(tailEnv) {
			mid := rest[len(headEnv) : len(rest)-len(tailEnv)]
			return head + "." + strings.ToLower(mid) + "." + tail, true
		}
	}
	return "", false
}

// DefaultValues returns every fixed key (no "*" level) with its value in
// Default(), so the loader's defaults cannot drift from the struct.
func DefaultValues() map[string]any {
	out := map[string]any{}
	collectValues(reflect.ValueOf(Default()), "", out)
	return out
}

func collectValues(v reflect.Value, prefix string, out map[string]any) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		name := t.Field(i).Tag.Get("mapstructure")
		if name == "" {
			continue
		}
		f := v.Field(i)
		switch f.Kind() {
		case reflect.Struct:
			collectValues(f, prefix+name+".", out)
		case reflect.Map:
			// Map entries are named by the user; they have no defaults.
		default:
			out[prefix+name] = f.Interface()
		}
	}
}
