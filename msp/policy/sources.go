package policy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/metadatasec/gpa/msp"
)

// RecordSource hands audit records to fn one at a time, in order, and stops
// at the first error, which it returns. LearnFrom and ReplayFrom read one;
// AuditLogs makes one from files.
type RecordSource func(fn func(msp.AuditRecord) error) error

// Records is the RecordSource of records already in memory.
func Records(recs []msp.AuditRecord) RecordSource {
	return func(fn func(msp.AuditRecord) error) error {
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
}

// AuditLogs expands args, each a file, a glob or a directory (its regular
// files, not its subdirectories), into the files to read, in order, and
// returns a source that streams them. A file may be:
//
//   - the agent's connection log: JSON lines, each a record or an object
//     wrapping one in "message", "summary" or, as a Log Analytics custom
//     text log stores the line, "RawData";
//   - a JSON array of such objects, as `az monitor log-analytics query`
//     prints a query's rows;
//   - a Log Analytics query API answer, {"tables": [{"columns": [...],
//     "rows": [...]}]}, whose RawData column holds the line (or whose
//     columns are the record's fields).
//
// Memory stays at one record whatever the size of the input. A record that
// cannot be read is an error naming the file and the line or element, like
// ReadAuditLog: a policy learned from a partly read log would be silently
// too narrow.
func AuditLogs(args []string) (RecordSource, []string, error) {
	var files []string
	for _, a := range args {
		switch st, err := os.Stat(a); {
		case err == nil && st.IsDir():
			entries, err := os.ReadDir(a)
			if err != nil {
				return nil, nil, err
			}
			n := 0
			for _, e := range entries {
				if e.Type().IsRegular() {
					files = append(files, filepath.Join(a, e.Name()))
					n++
				}
			}
			if n == 0 {
				return nil, nil, fmt.Errorf("%w: directory %s holds no file", ErrBadAuditLog, a)
			}
		case err == nil:
			files = append(files, a)
		case strings.ContainsAny(a, "*?["):
			m, gerr := filepath.Glob(a)
			if gerr != nil {
				return nil, nil, fmt.Errorf("%w: %s: %v", ErrBadAuditLog, a, gerr)
			}
			if len(m) == 0 {
				return nil, nil, fmt.Errorf("%w: %s matches no file", ErrBadAuditLog, a)
			}
			slices.Sort(m)
			files = append(files, m...)
		default:
			return nil, nil, err
		}
	}
	if len(files) == 0 {
		return nil, nil, fmt.Errorf("%w: no audit log given", ErrBadAuditLog)
	}
	src := func(fn func(msp.AuditRecord) error) error {
		for _, f := range files {
			if err := readAuditFile(f, fn); err != nil {
				return err
			}
		}
		return nil
	}
	return src, files, nil
}

func readAuditFile(path string, fn func(msp.AuditRecord) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	head, _ := br.Peek(4096)
	head = bytes.TrimLeft(head, " \t\r\n\ufeff")
	switch {
	case bytes.HasPrefix(head, []byte("[")):
		return readJSONArray(path, br, fn)
	case bytes.HasPrefix(bytes.TrimLeft(head[min(1, len(head)):], " \t\r\n"), []byte(`"tables"`)):
		return readTables(path, br, fn)
	}
	return readJSONLines(path, br, fn)
}

func readJSONLines(path string, r io.Reader, fn func(msp.AuditRecord) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		rec, err := parseRecord(line)
		if err != nil {
			return fmt.Errorf("%w: %s: line %d: %v", ErrBadAuditLog, path, n, err)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadAuditLog, path, err)
	}
	return nil
}

func readJSONArray(path string, r io.Reader, fn func(msp.AuditRecord) error) error {
	dec := json.NewDecoder(r)
	bad := func(n int, err error) error {
		return fmt.Errorf("%w: %s: element %d: %v", ErrBadAuditLog, path, n, err)
	}
	if _, err := dec.Token(); err != nil {
		return bad(0, err)
	}
	for n := 1; dec.More(); n++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return bad(n, err)
		}
		rec, err := parseRecord(raw)
		if err != nil {
			return bad(n, err)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	return nil
}

// readTables walks a Log Analytics query answer token by token, so that
// only one row is decoded at a time.
func readTables(path string, r io.Reader, fn func(msp.AuditRecord) error) error {
	dec := json.NewDecoder(r)
	bad := func(where string, err error) error {
		return fmt.Errorf("%w: %s: %s: %v", ErrBadAuditLog, path, where, err)
	}
	delim := func(want json.Delim) error {
		t, err := dec.Token()
		if err == nil && t != want {
			err = fmt.Errorf("want %q, found %v", want, t)
		}
		return err
	}
	if err := delim('{'); err != nil {
		return bad("document", err)
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return bad("document", err)
		}
		if key != "tables" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return bad("document", err)
			}
			continue
		}
		if err := delim('['); err != nil {
			return bad("tables", err)
		}
		for t := 1; dec.More(); t++ {
			if err := readTable(dec, fmt.Sprintf("table %d", t), delim, bad, fn); err != nil {
				return err
			}
		}
		if err := delim(']'); err != nil {
			return bad("tables", err)
		}
	}
	return nil
}

func readTable(dec *json.Decoder, where string, delim func(json.Delim) error, bad func(string, error) error, fn func(msp.AuditRecord) error) error {
	if err := delim('{'); err != nil {
		return bad(where, err)
	}
	var columns []struct {
		Name string `json:"name"`
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return bad(where, err)
		}
		switch key {
		case "columns":
			if err := dec.Decode(&columns); err != nil {
				return bad(where+" columns", err)
			}
		case "rows":
			if columns == nil {
				return bad(where, errors.New("rows before columns"))
			}
			raw := slices.IndexFunc(columns, func(c struct {
				Name string `json:"name"`
			}) bool {
				return strings.EqualFold(c.Name, "RawData")
			})
			if err := delim('['); err != nil {
				return bad(where+" rows", err)
			}
			for n := 1; dec.More(); n++ {
				var row []json.RawMessage
				if err := dec.Decode(&row); err != nil {
					return bad(fmt.Sprintf("%s row %d", where, n), err)
				}
				if len(row) != len(columns) {
					return bad(fmt.Sprintf("%s row %d", where, n), fmt.Errorf("%d cells for %d columns", len(row), len(columns)))
				}
				var b []byte
				if raw >= 0 {
					b = row[raw]
				} else {
					obj := make(map[string]json.RawMessage, len(row))
					for i, c := range columns {
						obj[c.Name] = row[i]
					}
					b, _ = json.Marshal(obj)
				}
				rec, err := parseRecord(b)
				if err != nil {
					return bad(fmt.Sprintf("%s row %d", where, n), err)
				}
				if err := fn(rec); err != nil {
					return err
				}
			}
			if err := delim(']'); err != nil {
				return bad(where+" rows", err)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return bad(where, err)
			}
		}
	}
	return delim('}')
}
