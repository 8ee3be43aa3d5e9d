package bootstrap

import "testing"

// TestToolDSN: the DSN pg_dump and pg_restore get on their command line
// has neither the password (PGPASSWORD carries it) nor options (PGOPTIONS
// carries them with the pinned text settings after them; libpq would
// ignore PGOPTIONS next to them).
func TestToolDSN(t *testing.T) {
	for dsn, want := range map[string]string{
		"postgres://app:s3cret@db:5432/app?sslmode=disable&options=-c%20DateStyle%3DGerman": "postgres://app@db:5432/app?sslmode=disable",
		"postgresql://db/app?password=s3cret&application_name=x":                            "postgresql://db/app?application_name=x",
		"host=db user=app password='s 3\\'cret' options='-c DateStyle=German' dbname=app":   "host=db user=app   dbname=app",
		"host=db password=s3cret dbname=app":                                                "host=db  dbname=app",
	} {
		if got := toolDSN(dsn); got != want {
			t.Errorf("toolDSN(%q) = %q, want %q", dsn, got, want)
		}
	}
}
