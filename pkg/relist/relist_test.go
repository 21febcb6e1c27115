package relist

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	for _, tc := range []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(5), 99, 5 * time.Millisecond},
		{ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 99, 4 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
	} {
		assert.Equal(t, tc.want, Percentile(tc.in, tc.p), "p%v of %v", tc.p, tc.in)
	}
}

func TestSummarise(t *testing.T) {
	r := Result{Samples: []Sample{
		{Duration: 10 * time.Millisecond},
		{Duration: 4 * time.Minute},
		{Duration: 20 * time.Millisecond, Err: assert.AnError},
	}}
	r.summarise()
	assert.Equal(t, 4*time.Minute, r.Max)
	assert.Equal(t, 20*time.Millisecond, r.P50)
	assert.Equal(t, 1, r.Errors)
	assert.True(t, r.Unhealthy, "a relist over kubelet's 3 minute threshold makes PLEG unhealthy")
}

func TestInFlightRelistCountsAtStop(t *testing.T) {
	p := &Probe{cancel: func() {}, done: make(chan struct{}), states: map[string][]StateChange{}}
	close(p.done)
	p.inFlight = time.Now().Add(-5 * time.Second)
	r := p.Stop()
	if assert.Len(t, r.Samples, 1) {
		assert.ErrorIs(t, r.Samples[0].Err, ErrUnfinished)
	}
	assert.GreaterOrEqual(t, r.Max, 5*time.Second, "a relist stuck when the probe stops still counts")
}
