package switchover

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// result builds a SHOW result as the console sends it: text values under
// named columns.
func result(columns []string, rows ...[]string) []*pgconn.Result {
	res := &pgconn.Result{}
	for _, c := range columns {
		res.FieldDescriptions = append(res.FieldDescriptions, pgconn.FieldDescription{Name: c})
	}
	for _, r := range rows {
		values := make([][]byte, len(r))
		for i, v := range r {
			values[i] = []byte(v)
		}
		res.Rows = append(res.Rows, values)
	}
	return []*pgconn.Result{res}
}

// Versions other than 1.18 add, drop and reorder SHOW POOLS columns; the
// real 1.18 layout is covered by TestPools against a running bouncer.
func TestParsePoolsByColumnName(t *testing.T) {
	columns := []string{"pool_mode", "sv_idle", "user", "database", "cl_waiting", "load_balance_hosts", "cl_active", "sv_active", "maxwait", "maxwait_us"}
	pools, err := parsePools(result(columns, []string{"transaction", "4", "app_user", "app", "3", "", "2", "1", "2", "500000"}))
	if err != nil {
		t.Fatal(err)
	}
	want := Pool{Database: "app", User: "app_user", ClientsActive: 2, ClientsWaiting: 3, ServersActive: 1, ServersIdle: 4,
		MaxWait: 2500 * time.Millisecond, Mode: "transaction"}
	if len(pools) != 1 || pools[0] != want {
		t.Fatalf("want [%+v], got %+v", want, pools)
	}

	_, err = parsePools(result([]string{"database", "cl_waiting"}, []string{"app", "many"}))
	if err == nil || !strings.Contains(err.Error(), "cl_waiting") {
		t.Fatalf("a non-integer count: want an error naming the column, got %v", err)
	}
}
