package telemetry

import (
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"
)

// Event is one generic log event, in upstream's event file format: an
// event file holds a JSON array of them.
type Event struct {
	// EventLevel is upstream's level name: ERROR, WARN, INFO, DEBUG or TRACE.
	EventLevel  string `json:"EventLevel"`
	Message     string `json:"Message"`
	Version     string `json:"Version"`
	TaskName    string `json:"TaskName"`
	EventPid    string `json:"EventPid"`
	EventTid    string `json:"EventTid"`
	OperationId string `json:"OperationId"` //nolint:revive // upstream's name
	// TimeStamp is UTC, "2006-01-02T15:04:05.000".
	TimeStamp string `json:"TimeStamp"`
}

// MaxMessageLength bounds Event.Message, in bytes, as upstream does.
const MaxMessageLength = 4 << 10

// timeStampLayout is upstream's get_date_time_string_with_milliseconds.
const timeStampLayout = "2006-01-02T15:04:05.000"

// NewEvent returns an event stamped with t, this process and version, its
// message cut to MaxMessageLength on a character boundary.
func NewEvent(t time.Time, level slog.Level, message, taskName, operationID, version string) Event {
	return Event{
		EventLevel:  LevelName(level),
		Message:     truncate(message, MaxMessageLength),
		Version:     version,
		TaskName:    taskName,
		EventPid:    strconv.Itoa(os.Getpid()),
		EventTid:    "00000000", // goroutines have no stable thread id to report
		OperationId: operationID,
		TimeStamp:   t.UTC().Format(timeStampLayout),
	}
}

// LevelName maps a slog level to the name upstream's log crate writes.
func LevelName(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARN"
	case l >= slog.LevelInfo:
		return "INFO"
	case l >= slog.LevelDebug:
		return "DEBUG"
	}
	return "TRACE"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 {
		r, size := utf8.DecodeLastRuneInString(s)
		if r != utf8.RuneError || size != 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}

// eventFileRE matches upstream's generic event files, "<unix nanos>.json".
var eventFileRE = regexp.MustCompile(`^[0-9]+\.json$`)

// IsEventFile reports whether name is a generic event file name.
func IsEventFile(name string) bool { return eventFileRE.MatchString(name) }

// EventFileName is upstream's name for an event file written at t.
func EventFileName(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) + ".json" }
