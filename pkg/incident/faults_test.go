package incident

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestSoakSlopes(t *testing.T) {
	r := SoakResult{Samples: []SoakSample{
		{At: 0, Goroutines: 100, RSS: 1 << 20, FDs: 50},
		{At: time.Minute, Goroutines: 110, RSS: 1 << 20, FDs: 50},
		{At: 2 * time.Minute, Goroutines: 120, RSS: 1 << 20, FDs: 50},
	}}
	g, rss, fds := r.Slopes()
	assert.InDelta(t, 10, g, 1e-9, "10 goroutines more each minute")
	assert.InDelta(t, 0, rss, 1e-9)
	assert.InDelta(t, 0, fds, 1e-9)

	g, _, _ = SoakResult{Samples: r.Samples[:1]}.Slopes()
	assert.Zero(t, g, "no slope from one sample")
}

func TestCrashResultCounts(t *testing.T) {
	exited := runtimeapi.ContainerState_CONTAINER_EXITED
	r := CrashResult{Containers: []CrashContainer{
		{ID: "a", Observed: true, State: exited, ExitCode: 137},
		{ID: "b", Observed: true, State: exited, ExitCode: 255, Reason: "Unknown"},
		{ID: "c", Observed: false, State: exited, ExitCode: 255, Reason: "Unknown"},
		{ID: "d", Observed: true, State: runtimeapi.ContainerState_CONTAINER_UNKNOWN, Unknown: 7},
	}}
	observed, unobserved := r.LostExits()
	assert.Equal(t, []string{"b", "d"}, ids(observed))
	assert.Equal(t, []string{"c"}, ids(unobserved))
	reports, containers := r.UnknownReports()
	assert.Equal(t, 7, reports)
	assert.Equal(t, 1, containers)
	assert.Equal(t, "1 x 137, 2 x 255 Unknown, 1 x CONTAINER_UNKNOWN", r.Exits())
}

func ids(cs []CrashContainer) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

func TestExitLogged(t *testing.T) {
	log := `time="..." level=info msg="received exit event container_id:\"abc\" id:\"abc\" pid:12"
time="..." level=info msg="received container exit event container_id:\"def\" id:\"def\""
time="..." level=info msg="StartContainer for \"ghi\" returns successfully"`
	for id, want := range map[string]bool{"abc": true, "def": true, "ghi": false, "jkl": false} {
		assert.Equal(t, want, exitLogged(log, id), id)
	}
}

func TestErrorsNamingFullDisk(t *testing.T) {
	full, other := ErrorsNamingFullDisk([]string{
		"failed to update resources: write /x/status: no space left on device",
		"cannot update a stopped container",
	})
	assert.Len(t, full, 1)
	assert.Equal(t, []string{"cannot update a stopped container"}, other)
}
