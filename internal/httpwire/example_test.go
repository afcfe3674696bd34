package httpwire_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/metadatasec/gpa/internal/httpwire"
)

// A request head is read with the proxy's guards; one that smuggles a
// second length is refused with the status to answer.
func ExampleReadRequestHead() {
	wire := "POST /machine?comp=health HTTP/1.1\r\nHost: 168.63.129.16\r\nContent-Length: 2\r\n\r\nok"
	r, err := httpwire.ReadRequestHead(bufio.NewReader(strings.NewReader(wire)), nil)
	if err != nil {
		panic(err)
	}
	fmt.Println(r.Method, r.URI, r.ContentLength)

	wire = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
	_, err = httpwire.ReadRequestHead(bufio.NewReader(strings.NewReader(wire)), nil)
	var re *httpwire.RequestError
	if errors.As(err, &re) {
		fmt.Println(re.Status, re.Msg)
	}
	// Output:
	// POST /machine?comp=health 2
	// 400 both Transfer-Encoding and Content-Length
}

// A response keeps its fields as sent; its body stops where its framing
// says.
func ExampleReadResponse() {
	wire := "HTTP/1.1 200 OK\r\nx-ms-azure-host-date: Wed, 23 Apr 2025 12:00:00 GMT\r\nContent-Length: 2\r\n\r\nokNEXT"
	resp, err := httpwire.ReadResponse(bufio.NewReader(strings.NewReader(wire)), "GET")
	if err != nil {
		panic(err)
	}
	date, _ := resp.Get("X-Ms-Azure-Host-Date")
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Code, date, string(body))
	// Output:
	// 200 Wed, 23 Apr 2025 12:00:00 GMT ok
}
