package msp

import (
	"encoding/binary"
	"errors"
	"testing"
	"unicode/utf16"
)

// TestDecodeText covers the ten encodings upstream's JSON reader accepts
// (its test_data/encodings files hold this document in each), and the
// failures it reports.
func TestDecodeText(t *testing.T) {
	const doc = `{"name":"EncodingTest","code":7,"message":"café 测试 😀","enabled":true}`
	u16 := func(big, bom bool) []byte {
		var out []byte
		units := utf16.Encode([]rune(doc))
		if bom {
			units = append([]uint16{0xFEFF}, units...)
		}
		for _, u := range units {
			if big {
				out = binary.BigEndian.AppendUint16(out, u)
			} else {
				out = binary.LittleEndian.AppendUint16(out, u)
			}
		}
		return out
	}
	u32 := func(big, bom bool) []byte {
		var out []byte
		rs := []rune(doc)
		if bom {
			rs = append([]rune{0xFEFF}, rs...)
		}
		for _, r := range rs {
			if big {
				out = binary.BigEndian.AppendUint32(out, uint32(r))
			} else {
				out = binary.LittleEndian.AppendUint32(out, uint32(r))
			}
		}
		return out
	}
	for _, tt := range []struct {
		name string
		in   []byte
	}{
		{"utf8", []byte(doc)}, {"utf8 bom", append([]byte{0xEF, 0xBB, 0xBF}, doc...)},
		{"utf16le", u16(false, false)}, {"utf16le bom", u16(false, true)},
		{"utf16be", u16(true, false)}, {"utf16be bom", u16(true, true)},
		{"utf32le", u32(false, false)}, {"utf32le bom", u32(false, true)},
		{"utf32be", u32(true, false)}, {"utf32be bom", u32(true, true)},
	} {
		got, err := DecodeText(tt.in)
		if err != nil || string(got) != doc {
			t.Errorf("%s: %q, %v", tt.name, got, err)
		}
	}
	for _, tt := range []struct {
		name string
		in   []byte
	}{
		{"bad utf8", []byte("{\"a\":\"\xff\"}")},
		{"odd utf16", append(u16(false, true), 'x')},
		{"lone surrogate", []byte{0xFF, 0xFE, 0x00, 0xD8, '{', 0}},
		{"utf32 out of range", []byte{0, 0, 0xFE, 0xFF, 0, 0x11, 0, 0}},
	} {
		if _, err := DecodeText(tt.in); !errors.Is(err, ErrTextEncoding) {
			t.Errorf("%s: err %v, want ErrTextEncoding", tt.name, err)
		}
	}
}
