package arm_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azarm "github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/google/go-cmp/cmp"

	"github.com/metadatasec/gpa/arm"
)

// recordingTransport answers every request with 404 without any network I/O.
type recordingTransport struct{ urls []string }

func (r *recordingTransport) Do(req *http.Request) (*http.Response, error) {
	r.urls = append(r.urls, req.URL.String())
	return &http.Response{
		StatusCode: http.StatusNotFound, Request: req, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(`{"error":{"code":"ResourceNotFound","message":"nope"}}`)),
	}, nil
}

type scopeRecorder struct {
	fake.TokenCredential
	scopes []string
}

func (s *scopeRecorder) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	s.scopes = append(s.scopes, o.Scopes...)
	return s.TokenCredential.GetToken(ctx, o)
}

func TestSovereignClouds(t *testing.T) {
	tests := []struct {
		name      string
		cloud     cloud.Configuration
		wantHost  string
		wantScope string
	}{
		{"public", cloud.AzurePublic, "https://management.azure.com/", "https://management.core.windows.net//.default"},
		{"china", cloud.AzureChina, "https://management.chinacloudapi.cn/", "https://management.core.chinacloudapi.cn//.default"},
		{"government", cloud.AzureGovernment, "https://management.usgovcloudapi.net/", "https://management.core.usgovcloudapi.net//.default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &recordingTransport{}
			cred := &scopeRecorder{}
			c, err := arm.NewClient(sub, cred, &arm.ClientOptions{ClientOptions: azarm.ClientOptions{
				ClientOptions:         policy.ClientOptions{Cloud: tt.cloud, Transport: tr, Retry: policy.RetryOptions{MaxRetries: -1}},
				DisableRPRegistration: true,
			}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.GetVirtualMachine(ctx(t), rg, "vm1", nil)
			var re *azcore.ResponseError
			if !errors.As(err, &re) || re.StatusCode != http.StatusNotFound {
				t.Fatalf("err = %v", err)
			}
			want := []string{tt.wantHost + "subscriptions/" + sub + "/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1?api-version=" + arm.DefaultComputeAPIVersion}
			if d := cmp.Diff(want, tr.urls); d != "" {
				t.Errorf("urls (-want +got):\n%s", d)
			}
			if d := cmp.Diff([]string{tt.wantScope}, cred.scopes); d != "" {
				t.Errorf("scopes (-want +got):\n%s", d)
			}
		})
	}
}
