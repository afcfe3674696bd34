package httpwire

import (
	"bufio"
	"errors"
	"io"
)

// ErrLineTooLong is a line, or a trailer section, over its limit.
var ErrLineTooLong = errors.New("httpwire: line too long")

// readLine reads one line terminated by LF (CRLF or bare LF) without the
// terminator, refusing lines longer than max. The line may be a slice of
// br's buffer, valid until the next read.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var out []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(out)+len(frag) > max+2 {
			return nil, ErrLineTooLong
		}
		if err == bufio.ErrBufferFull {
			out = append(out, frag...)
			continue
		}
		if err != nil {
			if err == io.EOF && len(out)+len(frag) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if out == nil {
			out = frag
		} else {
			out = append(out, frag...)
		}
		out = out[:len(out)-1]
		if n := len(out); n > 0 && out[n-1] == '\r' {
			out = out[:n-1]
		}
		return out, nil
	}
}

// ReadTrailers consumes the trailer section after the last chunk of a
// chunked body, up to max bytes. Trailers are dropped: on a request they
// would arrive after the signature was computed, and nobody here needs a
// response's.
func ReadTrailers(br *bufio.Reader, max int) error {
	total := 0
	for {
		line, err := readLine(br, max)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return nil
		}
		total += len(line)
		if total > max {
			return ErrLineTooLong
		}
	}
}
