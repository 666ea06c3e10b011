package postgres

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// migration is one section of schema.sql: the statements that take a
// database from version-1 to version.
type migration struct {
	version int
	sql     string
}

// schemaMigrations are the sections of schema.sql, in order.
var schemaMigrations = mustParseMigrations(schemaSQL)

// migrationMarker starts a section of schema.sql.
var migrationMarker = regexp.MustCompile(`(?m)^-- masterjob:version (\d+)[ \t]*$`)

// parseMigrations splits a schema file into its sections. Text before the
// first marker is the file's header (comments). Versions must run 1, 2, 3,
// ... without gaps, and each section from version 3 on must record its
// version in the meta table.
func parseMigrations(file string) ([]migration, error) {
	locs := migrationMarker.FindAllStringSubmatchIndex(file, -1)
	if len(locs) == 0 {
		return nil, fmt.Errorf("no %q marker", "-- masterjob:version N")
	}
	var out []migration
	for i, loc := range locs {
		v, err := strconv.Atoi(file[loc[2]:loc[3]])
		if err != nil || v != i+1 {
			return nil, fmt.Errorf("section %d is marked version %s: versions must run 1, 2, 3, ...", i+1, file[loc[2]:loc[3]])
		}
		end := len(file)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		sql := file[loc[1]:end]
		if v >= 3 && !strings.Contains(sql, fmt.Sprintf("VALUES ('schema_version', %d)", v)) {
			return nil, fmt.Errorf("section version %d does not record its version (INSERT INTO \"{{prefix}}meta\" ... VALUES ('schema_version', %d) ...)", v, v)
		}
		out = append(out, migration{version: v, sql: sql})
	}
	return out, nil
}

func mustParseMigrations(file string) []migration {
	m, err := parseMigrations(file)
	if err != nil {
		panic("store/postgres: schema.sql: " + err.Error())
	}
	return m
}

// migrations returns the migrations this store applies.
func (s *Store) migrations() []migration {
	if s.cfg.migrations != nil {
		return s.cfg.migrations
	}
	return schemaMigrations
}
