package telemetry

import (
	"strconv"
	"strings"
)

// Upstream's provider id for generic log events (its "metrics" provider).
const GenericLogsProviderID = "FFF0196F-EE4C-4EAF-9AA5-776F622DEB4F"

// Upstream's execution mode and event name for the proxy agent service.
const (
	ExecutionMode = "ProxyAgent"
	EventName     = "MicrosoftAzureGuestProxyAgent"
)

// VMData are the parameters every event of a batch carries: who the VM is
// and what it runs. Fields that are not known stay empty (zero).
type VMData struct {
	ContainerID, TenantName, RoleName, RoleInstanceName string
	SubscriptionID, ResourceGroupName, VMID             string
	ImageOrigin                                         uint64
	// KeywordName is upstream's {"CpuArchitecture":"..."} JSON.
	KeywordName string
	OSVersion   string
	RAMInMB     uint64
	Processors  uint64
}

// escape is upstream's xml_escape, and drops what XML cannot carry at all
// (control characters other than tab, newline and carriage return), which
// would make the host refuse the whole batch.
func escape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r == '&':
			b.WriteString("&amp;")
		case r == '\'':
			b.WriteString("&apos;")
		case r == '"':
			b.WriteString("&quot;")
		case r == '<':
			b.WriteString("&lt;")
		case r == '>':
			b.WriteString("&gt;")
		case r < 0x20 && r != '\t' && r != '\n' && r != '\r', r == 0xFFFE, r == 0xFFFF:
			b.WriteRune('\uFFFD')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func param(b *strings.Builder, name, value string) {
	b.WriteString(`<Param Name="` + name + `" Value="` + escape(value) + `" T="mt:wstr" />`)
}

func paramU64(b *strings.Builder, name string, v uint64) {
	b.WriteString(`<Param Name="` + name + `" Value="` + strconv.FormatUint(v, 10) + `" T="mt:uint64" />`)
}

func (v *VMData) appendParams(b *strings.Builder) {
	param(b, "KeywordName", v.KeywordName)
	param(b, "TenantName", v.TenantName)
	param(b, "RoleName", v.RoleName)
	param(b, "RoleInstanceName", v.RoleInstanceName)
	param(b, "ContainerId", v.ContainerID)
	param(b, "ResourceGroupName", v.ResourceGroupName)
	param(b, "SubscriptionId", v.SubscriptionID)
	param(b, "VMId", v.VMID)
	paramU64(b, "ImageOrigin", v.ImageOrigin)
	param(b, "OSVersion", v.OSVersion)
	paramU64(b, "RAM", v.RAMInMB)
	paramU64(b, "Processors", v.Processors)
}

// eventXML is one <Event id="7"> of upstream's generic logs provider,
// built as upstream's TelemetryGenericLogsEvent::from_event_log does.
func eventXML(e *Event, vm *VMData) string {
	var b strings.Builder
	b.WriteString(`<Event id="7"><![CDATA[`)
	vm.appendParams(&b)
	pid, _ := strconv.ParseUint(e.EventPid, 10, 64)
	tid, _ := strconv.ParseUint(e.EventTid, 10, 64)
	paramU64(&b, "EventPid", pid)
	paramU64(&b, "EventTid", tid)
	param(&b, "GAVersion", e.Version)
	param(&b, "ExecutionMode", ExecutionMode)
	param(&b, "TaskName", e.TaskName)
	param(&b, "OpcodeName", e.TimeStamp)
	param(&b, "EventName", EventName)
	param(&b, "CapabilityUsed", e.EventLevel)
	param(&b, "Context1", e.Message)
	param(&b, "Context2", e.TimeStamp)
	param(&b, "Context3", e.OperationId)
	b.WriteString(`]]></Event>`)
	return b.String()
}

const (
	xmlHead     = `<?xml version="1.0"?><TelemetryData version="1.0">`
	xmlProvider = `<Provider id="` + GenericLogsProviderID + `">`
	xmlTail     = `</Provider></TelemetryData>`
)

// MaxPayload bounds one TelemetryData document, upstream's MAX_MESSAGE_SIZE:
// a batch is sent while it is smaller.
const MaxPayload = 64 << 10

// Batch builds one TelemetryData document of generic log events.
type Batch struct {
	vm     VMData
	events []string
	size   int
}

// NewBatch starts an empty batch whose events carry vm.
func NewBatch(vm VMData) *Batch {
	return &Batch{vm: vm, size: len(xmlHead) + len(xmlProvider) + len(xmlTail)}
}

// Add adds e when the document stays under MaxPayload and reports whether
// it did.
func (b *Batch) Add(e *Event) bool {
	x := eventXML(e, &b.vm)
	if b.size+len(x) >= MaxPayload {
		return false
	}
	b.events = append(b.events, x)
	b.size += len(x)
	return true
}

// Len is the number of events in the batch.
func (b *Batch) Len() int { return len(b.events) }

// XML returns the document, upstream's TelemetryData format; an empty
// batch has no provider element.
func (b *Batch) XML() []byte {
	if len(b.events) == 0 {
		return []byte(xmlHead + `</TelemetryData>`)
	}
	out := make([]byte, 0, b.size)
	out = append(out, xmlHead...)
	out = append(out, xmlProvider...)
	for _, e := range b.events {
		out = append(out, e...)
	}
	return append(out, xmlTail...)
}
