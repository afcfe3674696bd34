package msp

import "errors"

// Policy is the compiled rule sets of all three endpoints: what the proxy
// consults for each request. It is immutable; a new status from the host
// means a new Policy.
type Policy struct {
	evals [4]*Evaluator // indexed by Endpoint
}

// NewPolicy compiles one rule set per endpoint. Endpoints missing from items
// (or mapped to nil) have no rule set. HostGA rules are whatever the caller
// maps to EndpointHostGA: upstream uses the WireServer item for it (§2.5),
// which the key latch decides, not this package. Errors from every endpoint
// are joined.
func NewPolicy(items map[Endpoint]*AuthorizationItem, opts *EvaluatorOptions) (*Policy, error) {
	p := &Policy{}
	var errs []error
	for _, ep := range Endpoints {
		ev, err := Compile(ep, items[ep], opts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.evals[ep] = ev
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// Evaluator returns the endpoint's evaluator, or nil for EndpointNone.
func (p *Policy) Evaluator(ep Endpoint) *Evaluator {
	if p == nil || int(ep) >= len(p.evals) {
		return nil
	}
	return p.evals[ep]
}

// Mode returns the endpoint's mode (Disabled without a rule set).
func (p *Policy) Mode(ep Endpoint) Mode {
	if ev := p.Evaluator(ep); ev != nil {
		return ev.Mode()
	}
	return ModeDisabled
}

// Evaluate decides req for ep. A nil Policy, or EndpointNone, evaluates as
// an endpoint without rules: WireServer and HostGA still require root.
func (p *Policy) Evaluate(ep Endpoint, req *Request) Decision {
	if ev := p.Evaluator(ep); ev != nil {
		return ev.Evaluate(req)
	}
	ev := &Evaluator{endpoint: ep}
	return ev.Evaluate(req)
}
