package fleet

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"
)

func TestGateLearnsPauses(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header map[string]string
		want   time.Duration
	}{
		{"nothing", 200, nil, 0},
		{"plenty left", 200, map[string]string{"x-ms-ratelimit-remaining-subscription-writes": "1199"}, 0},
		{"writes low", 200, map[string]string{"x-ms-ratelimit-remaining-subscription-writes": "3"}, time.Second},
		{"compute policy low", 200, map[string]string{"x-ms-ratelimit-remaining-resource": "Microsoft.Compute/PutVM3Min;2,Microsoft.Compute/PutVM30Min;1195"}, time.Second},
		{"compute policies fine", 200, map[string]string{"x-ms-ratelimit-remaining-resource": "Microsoft.Compute/PutVM3Min;239,Microsoft.Compute/PutVM30Min;1195"}, 0},
		{"429 retry-after", 429, map[string]string{"Retry-After": "7"}, 7 * time.Second},
		{"429 retry-after-ms", 429, map[string]string{"Retry-After": "1", "Retry-After-Ms": "250"}, 250 * time.Millisecond},
		{"graph quota spent", 200, map[string]string{"x-ms-user-quota-remaining": "0", "x-ms-user-quota-resets-after": "00:00:04"}, 4 * time.Second},
		{"graph quota left", 200, map[string]string{"x-ms-user-quota-remaining": "3", "x-ms-user-quota-resets-after": "00:00:04"}, 0},
		{"graph 429", 429, map[string]string{"x-ms-user-quota-remaining": "0", "x-ms-user-quota-resets-after": "00:00:00.5000000"}, 500 * time.Millisecond},
		{"429 without a time", 429, nil, time.Second},
	}
	for _, tt := range tests {
		g := &gate{low: 5, pause: time.Second, log: slog.New(slog.DiscardHandler)}
		resp := &http.Response{StatusCode: tt.status, Header: http.Header{}}
		for k, v := range tt.header {
			resp.Header.Set(k, v)
		}
		before := time.Now()
		g.observe(context.Background(), resp)
		got := g.until.Sub(before)
		if tt.want == 0 {
			if !g.until.IsZero() {
				t.Errorf("%s: paused %v", tt.name, got)
			}
			continue
		}
		if got < tt.want-50*time.Millisecond || got > tt.want+50*time.Millisecond {
			t.Errorf("%s: paused %v, want %v", tt.name, got, tt.want)
		}
	}
}
