package msp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// ErrTextEncoding marks a file whose bytes are not text in any encoding
// DecodeText knows.
var ErrTextEncoding = errors.New("msp: undecodable text")

// DecodeText returns data as UTF-8 the way upstream reads its JSON files
// (configuration, local rules): UTF-8, UTF-16 or UTF-32 in either byte
// order, with a BOM, or without one when the text starts with an ASCII
// character (as JSON does), told by the NUL bytes around it. The BOM is
// dropped. UTF-8 input is returned as is, without copying.
func DecodeText(data []byte) ([]byte, error) {
	width, big, bom := detectEncoding(data)
	p := data[bom:]
	switch width {
	case 2:
		if len(p)%2 != 0 {
			return nil, fmt.Errorf("%w: UTF-16 content of %d bytes is truncated", ErrTextEncoding, len(p))
		}
		units := make([]uint16, len(p)/2)
		for i := range units {
			if big {
				units[i] = binary.BigEndian.Uint16(p[2*i:])
			} else {
				units[i] = binary.LittleEndian.Uint16(p[2*i:])
			}
		}
		out := make([]byte, 0, len(units))
		for i := 0; i < len(units); i++ {
			u := units[i]
			switch {
			case utf16.IsSurrogate(rune(u)) && i+1 < len(units) && utf16.DecodeRune(rune(u), rune(units[i+1])) != utf8.RuneError:
				out = utf8.AppendRune(out, utf16.DecodeRune(rune(u), rune(units[i+1])))
				i++
			case utf16.IsSurrogate(rune(u)):
				return nil, fmt.Errorf("%w: UTF-16 content has an unpaired surrogate %#04x", ErrTextEncoding, u)
			default:
				out = utf8.AppendRune(out, rune(u))
			}
		}
		return out, nil
	case 4:
		if len(p)%4 != 0 {
			return nil, fmt.Errorf("%w: UTF-32 content of %d bytes is truncated", ErrTextEncoding, len(p))
		}
		out := make([]byte, 0, len(p)/4)
		for i := 0; i < len(p); i += 4 {
			var v uint32
			if big {
				v = binary.BigEndian.Uint32(p[i:])
			} else {
				v = binary.LittleEndian.Uint32(p[i:])
			}
			if v > utf8.MaxRune || utf16.IsSurrogate(rune(v)) {
				return nil, fmt.Errorf("%w: UTF-32 content has an invalid scalar value %#010x", ErrTextEncoding, v)
			}
			out = utf8.AppendRune(out, rune(v))
		}
		return out, nil
	}
	if !utf8.Valid(p) {
		return nil, fmt.Errorf("%w: content is not valid UTF-8", ErrTextEncoding)
	}
	return p, nil
}

// detectEncoding returns the code unit width (1, 2 or 4), the byte order
// and the BOM's length. Wider BOMs are tested first: UTF-32LE's starts with
// UTF-16LE's.
func detectEncoding(b []byte) (width int, big bool, bom int) {
	has := func(p ...byte) bool { return len(b) >= len(p) && string(b[:len(p)]) == string(p) }
	switch {
	case has(0, 0, 0xFE, 0xFF):
		return 4, true, 4
	case has(0xFF, 0xFE, 0, 0):
		return 4, false, 4
	case has(0xEF, 0xBB, 0xBF):
		return 1, false, 3
	case has(0xFE, 0xFF):
		return 2, true, 2
	case has(0xFF, 0xFE):
		return 2, false, 2
	}
	nul := func(i int) bool { return i < len(b) && b[i] == 0 }
	text := func(i int) bool { return i < len(b) && b[i] != 0 }
	switch {
	case nul(0) && nul(1) && nul(2) && text(3):
		return 4, true, 0
	case text(0) && nul(1) && nul(2) && nul(3):
		return 4, false, 0
	case nul(0) && text(1):
		return 2, true, 0
	case text(0) && nul(1):
		return 2, false, 0
	}
	return 1, false, 0
}
