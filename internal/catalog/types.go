package catalog

// DomainBaseSQL returns an SQL scalar subquery giving the ultimate base type
// (typbasetype followed down) of the type whose pg_type oid the SQL
// expression typeOID yields, as format_type prints it without typmod; NULL
// when that type is not a domain.
//
// Keys of a domain type are compared as their base type: no '=' or '<'
// resolves for a domain over an enum, whose operators are the polymorphic
// anyenum ones, while a cast of a domain to its base type is a RelabelType
// that keeps the column's index in use. The typmod is left out because a
// cast to varchar(8) or numeric(10,2) is a length coercion function that
// hides the column from its index, and the values compared already have it;
// format_type(oid, -1) prints a form that casts (where NULL would print
// "bit" or "character", which mean bit(1) and char(1)).
func DomainBaseSQL(typeOID string) string {
	return `(WITH RECURSIVE d(typid, depth) AS (
			SELECT ` + typeOID + `, 0
			UNION ALL
			SELECT t.typbasetype, d.depth + 1 FROM d JOIN pg_type t ON t.oid = d.typid WHERE t.typtype = 'd')
		SELECT format_type(typid, -1) FROM d WHERE depth > 0 ORDER BY depth DESC LIMIT 1)`
}
