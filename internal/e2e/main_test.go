package e2e

import (
	"os"
	"testing"

	"github.com/metadatasec/gpa/internal/agenttest"
)

func TestMain(m *testing.M) { os.Exit(agenttest.Main(m)) }
