package status

import "errors"

// Sentinel errors; functions wrap them with context. Test with errors.Is.
var (
	// ErrInvalidStatus reports a status document, value or header that does
	// not follow the format.
	ErrInvalidStatus = errors.New("status: invalid status")
	// ErrInvalidOptions reports options that cannot work, such as an empty
	// path.
	ErrInvalidOptions = errors.New("status: invalid options")
	// ErrWriteStatus reports that status.json could not be written. The
	// writer records it in monitorStatus and carries on.
	ErrWriteStatus = errors.New("status: writing status file failed")
	// ErrWriteStateFile reports that provisioned.tag or status.tag could not
	// be written.
	ErrWriteStateFile = errors.New("status: writing provisioning state file failed")
)

func isStatusErr(err error) bool { return errors.Is(err, ErrInvalidStatus) }
